// The k6 scripts' credentials (k6/lib/auth.ts) under Node: the same code k6 runs, with Node's crypto
// standing in for k6/crypto and k6/encoding. Minted tokens must give every VU its own user and pass a
// real gateway's verification; the token file must map VU n to line n. (k6 itself is not installed
// here: the k6 wiring in k6/lib/credentials.ts is only type-checked, by `npm run typecheck`.)
import { createHmac } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createVerifier } from 'fast-jwt';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tokenSource, type AuthDeps, type Env } from '../k6/lib/auth.js';
import { connect, postEvent, randomGuid, SECRET, startGateway, upgradeStatus, type StartedGateway, type TestClient } from './helpers/gateway.js';

const NOW_S = 1_900_000_000;
/** k6's crypto.hmac('sha256', …, 'base64rawurl') and encoding.b64encode(…, 'rawurl'), in Node. */
const deps = (files: Record<string, string> = {}, nowS = () => NOW_S): AuthDeps => ({
  hmacSha256: (secret, data) => createHmac('sha256', secret).update(data).digest('base64url'),
  base64url: (text) => Buffer.from(text, 'utf8').toString('base64url'),
  readLines: (path) => {
    if (!(path in files)) throw new Error(`no such file ${path}`);
    return files[path]!.split(/\r?\n/);
  },
  nowS,
});
const realNow = () => Date.now() / 1000;
const decode = (token: string) => JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;

async function ticketFor(httpUrl: string, token: string): Promise<{ status: number; ticket?: string }> {
  const res = await fetch(`${httpUrl}/v1/tickets`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
  return { status: res.status, ...((await res.json()) as { ticket?: string }) };
}

describe('JWT_SECRET: a user per VU, minted in k6', () => {
  const N = 25;

  it('N VUs get N distinct tokens and users, HS256-signed with the secret, exp = iat + TTL_S', () => {
    const source = tokenSource({ JWT_SECRET: SECRET, TTL_S: '600' }, deps());
    expect(source.mode).toBe('secret');
    expect(source.warning).toBeUndefined();
    const verify = createVerifier({ key: SECRET, algorithms: ['HS256'], clockTimestamp: NOW_S * 1000 });
    const tokens = Array.from({ length: N }, (_, i) => source.forVu(i + 1));
    expect(new Set(tokens).size).toBe(N);
    const claims = tokens.map((t) => verify(t) as Record<string, unknown>);
    expect(claims.map((c) => c['sub'])).toEqual(Array.from({ length: N }, (_, i) => `k6-user-${i + 1}`));
    for (const c of claims) expect(c).toEqual({ sub: expect.any(String), projects: ['*'], iat: NOW_S, exp: NOW_S + 600 });
    expect(() => source.forVu(0)).toThrow(/per VU/); // setup() has no user
  });

  it('SUB_PREFIX, JWT_ISSUER and JWT_AUDIENCE go into the claims; producer tokens carry events:publish, one per VU', () => {
    const env: Env = { JWT_SECRET: SECRET, SUB_PREFIX: 'run7-', JWT_ISSUER: 'https://issuer.test', JWT_AUDIENCE: 'autocode-ws' };
    const source = tokenSource(env, deps());
    expect(decode(source.forVu(3))).toMatchObject({ sub: 'run7-3', iss: 'https://issuer.test', aud: 'autocode-ws' });
    expect(decode(source.producerFor(9))).toMatchObject({ sub: 'run7-producer-9', scope: 'events:publish', projects: ['*'] });
    expect(source.producerFor(9)).not.toBe(source.producerFor(10)); // the HTTP rate limit is per token
    expect(tokenSource({ ...env, PRODUCER_TOKEN: 'given' }, deps()).producerFor(9)).toBe('given');
  });

  describe('against a real gateway with MAX_CONNECTIONS_PER_USER=1', () => {
    let gw: StartedGateway;
    const open: TestClient[] = [];
    beforeAll(async () => { gw = await startGateway({ MAX_CONNECTIONS_PER_USER: '1' }); });
    afterAll(async () => {
      await Promise.all(open.map((c) => c.close()));
      await gw?.close();
    });

    it('every VU holds a connection at once (through a ticket, as the scripts connect), which one shared user could not', async () => {
      const source = tokenSource({ JWT_SECRET: SECRET }, deps({}, realNow));
      for (let vu = 1; vu <= N; vu++) {
        const { status, ticket } = await ticketFor(gw.httpUrl, source.forVu(vu));
        expect(status).toBe(201);
        open.push(await connect(`${gw.wsUrl}?ticket=${ticket}`, null)); // rejects unless 101
      }
      expect(open).toHaveLength(N);
      // The cap is real: the single-user mode's second connection is refused.
      const single = tokenSource({ TOKEN: source.forVu(1) }, deps());
      expect(await upgradeStatus(gw.wsUrl, single.forVu(2))).toBe(429);
    });

    it("the producer token publishes (202)", async () => {
      const source = tokenSource({ JWT_SECRET: SECRET }, deps({}, realNow));
      const res = await postEvent(gw.httpUrl, randomGuid(), { type: 'project_message', data: { from: 'k6' } }, source.producerFor(N + 1));
      expect(res.status).toBe(202);
    });
  });

  it('a gateway that checks issuer and audience accepts tokens minted with them, and refuses (401) tokens without', async () => {
    const gw = await startGateway({ JWT_ISSUER: 'https://issuer.test', JWT_AUDIENCE: 'autocode-ws' });
    try {
      const withClaims = tokenSource({ JWT_SECRET: SECRET, JWT_ISSUER: 'https://issuer.test', JWT_AUDIENCE: 'autocode-ws' }, deps({}, realNow));
      const without = tokenSource({ JWT_SECRET: SECRET }, deps({}, realNow));
      expect(await upgradeStatus(gw.wsUrl, withClaims.forVu(1))).toBe(101);
      expect(await upgradeStatus(gw.wsUrl, without.forVu(1))).toBe(401);
    } finally {
      await gw.close();
    }
  });
});

describe('TOKENS_FILE: VU n uses line n', () => {
  let dir: string;
  beforeAll(() => { dir = mkdtempSync(join(tmpdir(), 'k6-tokens-')); });
  afterAll(() => { rmSync(dir, { recursive: true, force: true }); });

  it('maps VU n to line n (CRLF or LF, surrounding blanks trimmed), wraps past the last line, refuses an empty line', () => {
    const files = { '/t/tokens.txt': 'tok-1\ntok-2\r\n\n  tok-4 \n\n' };
    const source = tokenSource({ TOKENS_FILE: '/t/tokens.txt', PRODUCER_TOKEN: 'prod' }, deps(files));
    expect(source.mode).toBe('file');
    expect([1, 2, 4].map((vu) => source.forVu(vu))).toEqual(['tok-1', 'tok-2', 'tok-4']);
    expect(() => source.forVu(3)).toThrow(/line 3 .* is empty/);
    expect(source.forVu(5)).toBe('tok-1'); // 4 lines (the trailing blank ones are the file's end)
    expect(source.forVu(6)).toBe('tok-2');
    expect(source.producerFor(1)).toBe('prod');
    expect(() => tokenSource({ TOKENS_FILE: '/t/tokens.txt' }, deps(files)).producerFor(1)).toThrow(/PRODUCER_TOKEN/);
    expect(() => tokenSource({ TOKENS_FILE: '/t/empty.txt' }, deps({ '/t/empty.txt': '\n\n' }))).toThrow(/no token/);
  });

  it('tokens from a real file, one user per line, each accepted by a real gateway', async () => {
    const minted = tokenSource({ JWT_SECRET: SECRET }, deps({}, realNow));
    const lines = [1, 2, 3].map((vu) => minted.forVu(vu));
    const path = join(dir, 'tokens.txt');
    writeFileSync(path, `${lines.join('\n')}\n`);
    const source = tokenSource({ TOKENS_FILE: path }, { ...deps(), readLines: (p) => readFileSync(p, 'utf8').split(/\r?\n/) });
    expect([1, 2, 3].map((vu) => decode(source.forVu(vu))['sub'])).toEqual(['k6-user-1', 'k6-user-2', 'k6-user-3']);
    const gw = await startGateway();
    try {
      for (const vu of [1, 2, 3]) expect(await upgradeStatus(gw.wsUrl, source.forVu(vu))).toBe(101);
    } finally {
      await gw.close();
    }
  });
});

describe('TOKEN and the choice of mode', () => {
  it('TOKEN: every VU the same token, with a warning naming the per-user limit', () => {
    const source = tokenSource({ TOKEN: 'one' }, deps());
    expect(source.mode).toBe('single');
    expect([1, 2, 3].map((vu) => source.forVu(vu))).toEqual(['one', 'one', 'one']);
    expect(source.warning).toMatch(/MAX_CONNECTIONS_PER_USER/);
  });

  it('exactly one of JWT_SECRET, TOKENS_FILE, TOKEN', () => {
    expect(() => tokenSource({}, deps())).toThrow(/no credentials/);
    expect(() => tokenSource({ JWT_SECRET: SECRET, TOKEN: 't' }, deps())).toThrow(/more than one/);
    expect(() => tokenSource({ JWT_SECRET: SECRET, TTL_S: 'soon' }, deps())).toThrow(/TTL_S/);
  });
});
