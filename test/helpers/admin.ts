// The server API from a test: its token, its calls, and upgrade attempts that may be refused.
import WebSocket from 'ws';
import { sign } from './gateway.js';
import { request, WORKER_HEADER } from './topology.js';

export const adminToken = (sub = 'ops') => sign({ sub, scope: 'gateway:admin' });

/** One server API call on its own TCP connection (any worker may take it). */
export function adminCall(httpUrl: string, method: 'GET' | 'POST', path: string, body?: unknown, token: string | null = adminToken()) {
  return request(`${httpUrl}${path}`, method, body, token ? { authorization: `Bearer ${token}` } : {});
}

/** A user token signed as if issued at `iatS` (epoch seconds): tokens issued after a revocation. */
export const tokenIssuedAt = (sub: string, iatS: number, projects: string[] | '*' = '*') => sign({ sub, projects, iat: iatS });

/** Status, Retry-After and error code of an upgrade attempt that may be refused, and the worker that answered. */
export function tryUpgrade(wsUrl: string, token: string, credential: 'token' | 'ticket' = 'token') {
  return new Promise<{ status: number; retryAfter: string | null; code: string | null; worker: string | undefined }>((resolve, reject) => {
    const ws = new WebSocket(`${wsUrl}?${credential}=${encodeURIComponent(token)}`);
    let worker: string | undefined;
    ws.once('upgrade', (res) => (worker = res.headers[WORKER_HEADER] as string | undefined));
    ws.once('open', () => {
      ws.close();
      resolve({ status: 101, retryAfter: null, code: null, worker });
    });
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => {
        let code: string | null = null;
        try {
          code = (JSON.parse(body) as { error: { code: string } }).error.code;
        } catch {
          // not JSON
        }
        resolve({ status: res.statusCode ?? 0, retryAfter: (res.headers['retry-after'] as string) ?? null, code, worker: res.headers[WORKER_HEADER] as string | undefined });
      });
    });
    ws.once('error', reject);
  });
}
