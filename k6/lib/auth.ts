// Who each k6 VU connects as. The gateway caps connections per user (MAX_CONNECTIONS_PER_USER, 20 by
// default), so a load test that logs every VU in as one user measures the cap, not the gateway: each VU
// gets its own user here. Pure: no k6 imports and no k6 globals, so test/k6.test.ts runs this very code
// under Node with Node's crypto; k6/lib/credentials.ts wires it to k6/crypto, k6/encoding and open().
//
// Exactly one of:
//   JWT_SECRET   mint an HS256 token per VU, sub = SUB_PREFIX + VU number (optional JWT_ISSUER,
//                JWT_AUDIENCE, SUB_PREFIX = "k6-user-", TTL_S = 7200)
//   TOKENS_FILE  one token per line: VU n uses line n (wrapping around when there are more VUs than lines)
//   TOKEN        every VU the same user: only where the per-user cap is lifted; a warning says so

export type Env = Readonly<Record<string, string | undefined>>;

/** What k6 (or Node, in the test) provides. */
export interface AuthDeps {
  /** HMAC-SHA256 of `data` keyed with `secret`, base64url without padding (k6: crypto.hmac(…, 'base64rawurl')). */
  hmacSha256: (secret: string, data: string) => string;
  /** The UTF-8 bytes of `text` as base64url without padding (k6: encoding.b64encode(text, 'rawurl')). */
  base64url: (text: string) => string;
  /**
   * A file's lines. k6: a SharedArray of open()'s text, so a large token file is held once, not once
   * per VU; open() works only in the init context, which is where tokenSource() runs.
   */
  readLines: (path: string) => ArrayLike<string>;
  nowS: () => number;
}

export interface TokenSource {
  readonly mode: 'secret' | 'file' | 'single';
  /** For the script to print once; set when every VU is the same user. */
  readonly warning: string | undefined;
  /** The client token of VU `vu` (k6 numbers VUs from 1). */
  forVu(vu: number): string;
  /** A token with scope events:publish for producer VU `vu`: PRODUCER_TOKEN, or minted with JWT_SECRET. */
  producerFor(vu: number): string;
}

/** An HS256 JWT: base64url(header).base64url(payload).base64url(HMAC-SHA256 of the first two). */
export function signHs256(claims: Record<string, unknown>, secret: string, deps: AuthDeps): string {
  const unsigned = `${deps.base64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${deps.base64url(JSON.stringify(claims))}`;
  return `${unsigned}.${deps.hmacSha256(secret, unsigned)}`;
}

function positive(env: Env, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`env ${name} must be a positive number (got ${JSON.stringify(raw)})`);
  return n;
}

function checkVu(vu: number): void {
  // VU 0 is setup()/teardown(): they have no user of their own.
  if (!Number.isInteger(vu) || vu < 1) throw new Error(`a token is per VU (1, 2, …), not for VU ${vu}`);
}

/** Reads the env once (in k6's init context): which mode, and the token of any VU. */
export function tokenSource(env: Env, deps: AuthDeps): TokenSource {
  const secret = env['JWT_SECRET'] || undefined;
  const file = env['TOKENS_FILE'] || undefined;
  const single = env['TOKEN'] || undefined;
  const given = [secret, file, single].filter((v) => v !== undefined).length;
  if (given !== 1) {
    throw new Error(
      `${given === 0 ? 'no credentials' : 'more than one credential source'}: pass exactly one of -e JWT_SECRET=… ` +
        '(a user per VU), -e TOKENS_FILE=/abs/path (one token per line, VU n uses line n), -e TOKEN=… (every VU one user); see k6/README.md',
    );
  }
  const producerToken = env['PRODUCER_TOKEN'] || undefined;

  if (secret !== undefined) {
    const prefix = env['SUB_PREFIX'] || 'k6-user-';
    const ttlS = positive(env, 'TTL_S', 7200);
    const mint = (claims: Record<string, unknown>): string => {
      const iat = Math.floor(deps.nowS());
      return signHs256({
        ...claims,
        iat,
        exp: iat + Math.round(ttlS),
        ...(env['JWT_ISSUER'] ? { iss: env['JWT_ISSUER'] } : {}),
        ...(env['JWT_AUDIENCE'] ? { aud: env['JWT_AUDIENCE'] } : {}),
      }, secret, deps);
    };
    return {
      mode: 'secret',
      warning: undefined,
      forVu: (vu) => (checkVu(vu), mint({ sub: `${prefix}${vu}`, projects: ['*'] })),
      // Its own token per producer VU: the HTTP rate limit is per token (HTTP_RATE_LIMIT_PER_S).
      producerFor: (vu) => producerToken ?? (checkVu(vu), mint({ sub: `${prefix}producer-${vu}`, projects: ['*'], scope: 'events:publish' })),
    };
  }

  const producerFor = (): string => {
    if (producerToken === undefined) throw new Error('missing env PRODUCER_TOKEN (a JWT with scope events:publish); with JWT_SECRET it is minted');
    return producerToken;
  };

  if (file !== undefined) {
    // Read line by line, never copied: in k6 each element of the shared array is decoded on access.
    const lines = deps.readLines(file);
    const line = (n: number): string => (lines[n - 1] ?? '').trim();
    let count = lines.length;
    while (count > 0 && line(count) === '') count--; // the final newline
    if (count === 0) throw new Error(`TOKENS_FILE ${file} holds no token`);
    return {
      mode: 'file',
      warning: undefined,
      forVu: (vu) => {
        checkVu(vu);
        const n = ((vu - 1) % count) + 1;
        const token = line(n);
        if (!token) throw new Error(`line ${n} of TOKENS_FILE ${file} is empty (VU n uses line n)`);
        return token;
      },
      producerFor,
    };
  }

  const token = single!;
  return {
    mode: 'single',
    warning:
      'TOKEN: every VU connects as the same user; past MAX_CONNECTIONS_PER_USER (20 by default) the gateway refuses ' +
      'upgrades with 429. Use JWT_SECRET or TOKENS_FILE for a user per VU, or lift that limit (k6/README.md).',
    forVu: () => token,
    producerFor,
  };
}
