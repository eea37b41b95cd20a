// The front end's files as the gateway serves them (src/http/static.ts): the page, the client
// modules and everything they import, caching headers, path guarding, and DEV MODE only with a
// dev secret. Real gateways on port 0; needs `npm run build` (the browser build in dist/browser/).
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, startGateway, type StartedGateway } from './helpers/gateway.js';

/** GET with the path sent exactly as given (fetch would normalise `..` away before sending). */
function rawGet(port: number, path: string, headers: Record<string, string> = {}) {
  return new Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method: 'GET', headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

let dev: StartedGateway;
let prod: StartedGateway;

beforeAll(async () => {
  [dev, prod] = await Promise.all([startGateway({ JWT_SECRET: 'dev-static-test-secret' }), startGateway()]);
});
afterAll(async () => {
  await Promise.all([dev?.close(), prod?.close()]);
});

describe('static files', () => {
  it('serves the page at / with its CSP, and its script and style', async () => {
    const page = await rawGet(prod.port, '/');
    expect(page.status).toBe(200);
    expect(page.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(page.headers['content-security-policy']).toContain("default-src 'self'");
    expect(page.body).toContain('<script type="module" src="/app.js"></script>');
    for (const [path, type] of [['/app.js', 'text/javascript; charset=utf-8'], ['/style.css', 'text/css; charset=utf-8']]) {
      const res = await rawGet(prod.port, path!);
      expect(res.status, path).toBe(200);
      expect(res.headers['content-type']).toBe(type);
    }
  });

  it('serves /client/index.js and, transitively, every module it imports (relative paths resolve over HTTP)', async () => {
    const seen = new Map<string, string>();
    const queue = ['/client/index.js'];
    while (queue.length) {
      const path = queue.shift()!;
      if (seen.has(path)) continue;
      const res = await rawGet(prod.port, path);
      expect(res.status, `${path} (${[...seen.keys()].join(', ')})`).toBe(200);
      expect(res.headers['content-type']).toBe('text/javascript; charset=utf-8');
      seen.set(path, res.body);
      for (const m of res.body.matchAll(/\bfrom\s+'([^']+)'/g)) queue.push(new URL(m[1]!, `http://x${path}`).pathname);
    }
    // The client has no copy of its own: it loads the server's protocol modules and backoff formula.
    expect([...seen.keys()].sort()).toEqual(['/client/api.js', '/client/dial.js', '/client/heartbeat.js', '/client/inbound.js', '/client/index.js', '/client/listeners.js', '/client/policy.js', '/client/renewal.js', '/client/requests.js', '/client/rooms.js', '/client/settings.js', '/client/tickets.js', '/client/transport.js', '/client/wire.js', '/common/backoff.js', '/errors.js', '/protocol/event-id.js', '/protocol/messages.js']);
    expect(seen.get('/protocol/event-id.js')).toContain('export function compareIds');
  });

  it('sends a strong ETag with Cache-Control: no-cache, and 304 without a body when it matches', async () => {
    const first = await rawGet(prod.port, '/client/index.js');
    const etag = first.headers['etag'] as string;
    expect(etag).toMatch(/^"[\w-]{22}"$/);
    expect(first.headers['cache-control']).toBe('no-cache');
    expect(first.headers['x-content-type-options']).toBe('nosniff');
    const again = await rawGet(prod.port, '/client/index.js', { 'if-none-match': etag });
    expect(again.status).toBe(304);
    expect(again.body).toBe('');
    expect(again.headers['etag']).toBe(etag);
    const other = await rawGet(prod.port, '/client/index.js', { 'if-none-match': '"something-else"' });
    expect(other.status).toBe(200);
    expect(other.body).toBe(first.body);
  });

  it('serves msgpackr\'s ES modules for the page, and nothing outside the allowed files', async () => {
    for (const path of ['/vendor/msgpackr/pack.js', '/vendor/msgpackr/unpack.js']) expect((await rawGet(prod.port, path)).status, path).toBe(200);
    for (const path of [
      '/client/../package.json', '/client/%2e%2e/%2e%2e/package.json', '/%2e%2e/package.json', '/../src/config.ts',
      '/client/index.d.ts', '/client/index.ts', '/vendor/msgpackr/package.json', '/vendor/msgpackr/../../package.json',
      '/public/index.html', '//etc/passwd', '/client/', '/index.html/..',
    ]) {
      const res = await rawGet(prod.port, path);
      expect(res.status, path).toBe(404);
      expect(res.body, path).not.toContain('"dependencies"');
    }
  });
});

describe('DEV MODE', () => {
  it('is off unless JWT_SECRET starts with "dev-": no token endpoint', async () => {
    expect(JSON.parse((await rawGet(prod.port, '/app-config.json')).body)).toEqual({ devMode: false, wsPath: '/ws' });
    const res = await fetch(`${prod.httpUrl}/dev/token`, { method: 'POST' });
    expect(res.status).toBe(404);
  });

  it('with a dev secret, POST /dev/token mints a token the gateway accepts, with a bounded lifetime', async () => {
    expect(JSON.parse((await rawGet(dev.port, '/app-config.json')).body)).toEqual({ devMode: true, wsPath: '/ws' });
    const res = await fetch(`${dev.httpUrl}/dev/token?ttl=999999`, { method: 'POST' });
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    const body = (await res.json()) as { token: string; sub: string; expiresInS: number };
    expect(body.sub).toBe('dev-user');
    expect(body.expiresInS).toBe(86_400); // clamped
    const client = await connect(dev.wsUrl, body.token);
    const ack = await client.join(crypto.randomUUID());
    expect(ack.type).toBe('join_project');
    await client.close();
    // ...and it is no token for a gateway with another secret.
    await expect(connect(prod.wsUrl, body.token)).rejects.toMatchObject({ status: 401 });
  });
});
