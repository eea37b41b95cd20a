// The edge suites' (edge.test.ts, edge.api.test.ts) ways in: upgrades and HTTP requests as a
// test must send them, including what `ws` and fetch() will not send.
import net from 'node:net';
import WebSocket from 'ws';
import { afterAll } from 'vitest';
import { WORKER_HEADER, type Served, type Shape } from './topology.js';

/** Status, Retry-After and error code of an upgrade attempt that may be refused. */
export async function tryUpgrade(url: string, headers: Record<string, string> = {}) {
  return new Promise<{ status: number; retryAfter: string | null; code: string | null; worker: string | undefined; ws?: WebSocket }>((resolve, reject) => {
    const ws = new WebSocket(url, [], { headers });
    let worker: string | undefined;
    ws.once('upgrade', (res) => (worker = res.headers[WORKER_HEADER] as string | undefined));
    ws.once('open', () => resolve({ status: 101, retryAfter: null, code: null, worker, ws }));
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, retryAfter: (res.headers['retry-after'] as string) ?? null, code: JSON.parse(body).error.code, worker: res.headers[WORKER_HEADER] as string | undefined }));
    });
    ws.once('error', reject);
  });
}

/**
 * An upgrade written by hand, for header lines `ws` will not send (the same header twice). Resolves
 * the status; a 101's socket is kept open (counted by the caps) until `release`.
 */
export function rawUpgrade(port: number, token: string, lines: [string, string][]): Promise<{ status: number; release(): void }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let text = '';
    socket.on('data', (d) => {
      text += d.toString('latin1');
      const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
      if (m && text.includes('\r\n\r\n')) {
        socket.removeAllListeners('data');
        resolve({ status: Number(m[1]), release: () => socket.destroy() });
        if (m[1] !== '101') socket.destroy();
      }
    });
    socket.on('error', reject);
    const head = [
      `GET /ws?token=${token} HTTP/1.1`, 'Host: x', 'Upgrade: websocket', 'Connection: Upgrade', 'Sec-WebSocket-Version: 13', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
      ...lines.map(([k, v]) => `${k}: ${v}`),
    ];
    socket.write(head.join('\r\n') + '\r\n\r\n');
  });
}

/** One raw HTTP/1.1 exchange, for headers fetch() will not send (duplicates, both framings). */
export function rawRequest(port: number, head: string, body = '', holdOpenMs = 0): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let text = '';
    socket.on('data', (d) => {
      text += d.toString();
      const status = /^HTTP\/1\.1 (\d{3})/.exec(text);
      if (status && text.includes('\r\n\r\n') && text.trimEnd().endsWith('}')) {
        socket.destroy();
        resolve({ status: Number(status[1]), text });
      }
    });
    socket.on('error', reject);
    // No answer at all: uWS's own parser dropped the request (it does for framing it cannot read).
    socket.on('close', () => resolve({ status: 0, text }));
    socket.write(head + '\r\n' + body);
    if (holdOpenMs) setTimeout(() => socket.destroy(), holdOpenMs);
  });
}

export const close = (...gs: Served[]) => Promise.all(gs.map((g) => g.close()));

/**
 * One gateway of `shape` with the default settings, for the tests of a describe that set none: started
 * at the first call, closed after them. Each test uses users and projects of its own and leaves
 * nothing behind that another reads (a process start is most of what such a test costs).
 */
export function sharedPlainGateway(shape: Shape): () => Promise<Served> {
  let plain: Promise<Served> | undefined;
  afterAll(async () => {
    await plain?.then((g) => g.close(), () => {});
  });
  return () => (plain ??= shape.start());
}
