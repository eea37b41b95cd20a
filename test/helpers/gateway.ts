import { createSigner } from 'fast-jwt';
import { Packr } from 'msgpackr';
import WebSocket from 'ws';
import { parseConfig, type Config } from '../../src/config.js';
import { createGateway, type Gateway, type GatewayDeps } from '../../src/gateway.js';

export const SECRET = 'test-secret-0123456789';
export const sign = createSigner({ key: SECRET, expiresIn: 3600_000 });
export const signNoExp = createSigner({ key: SECRET });

export function userToken(projects: string[] | '*' = '*', sub = 'user-1'): string {
  return sign({ sub, projects });
}
export function producerToken(projects: string[] | '*' = '*', sub = 'stage-service'): string {
  return sign({ sub, scope: 'events:publish', projects });
}

/**
 * Tests open many sockets for one user from one address in a burst; the edge caps (per user, per
 * address, upgrades per second) would refuse them. Tests of the caps set their own values.
 */
export const GENEROUS_EDGE_LIMITS: Record<string, string> = {
  MAX_CONNECTIONS_PER_USER: '1000000',
  MAX_CONNECTIONS_PER_IP: '1000000',
  UPGRADES_PER_IP_PER_S: '1000000',
  UPGRADES_PER_IP_BURST: '1000000',
  HTTP_RATE_LIMIT_PER_S: '1000000',
  HTTP_RATE_LIMIT_BURST: '1000000',
};

export function randomGuid(): string {
  return crypto.randomUUID();
}

export interface StartedGateway {
  gw: Gateway;
  config: Config;
  port: number;
  wsUrl: string;
  httpUrl: string;
  close(): Promise<void>;
}

/** A real gateway on 127.0.0.1, port 0, built from env-style overrides like main.ts would. */
export async function startGateway(env: Record<string, string> = {}, deps: GatewayDeps = {}): Promise<StartedGateway> {
  const config = parseConfig({ JWT_SECRET: SECRET, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'silent', ...GENEROUS_EDGE_LIMITS, ...env });
  const gw = await createGateway(config, deps);
  const port = await gw.listen();
  return {
    gw,
    config,
    port,
    wsUrl: `ws://127.0.0.1:${port}/ws`,
    httpUrl: `http://127.0.0.1:${port}`,
    close: () => gw.close(),
  };
}

const unpackr = new Packr({ useRecords: false, mapsAsObjects: true });

export interface Frame {
  type: string;
  projectGuid: string | null;
  data: any;
  timestamp: string;
  id: string | null;
}

/** A real `ws` client that records every frame and lets a test await the ones it expects. */
export class TestClient {
  /** Decoded frames as received: an envelope or an array of envelopes. */
  readonly raw: (Frame | Frame[])[] = [];
  /** Every envelope, batches flattened, in arrival order. */
  readonly envelopes: Frame[] = [];
  readonly closed: Promise<{ code: number; reason: string }>;
  private waiters: (() => void)[] = [];

  constructor(readonly ws: WebSocket, readonly binary: boolean) {
    ws.on('message', (data: Buffer, isBinary) => {
      const frame = (isBinary ? unpackr.unpack(data) : JSON.parse(data.toString('utf8'))) as Frame | Frame[];
      this.raw.push(frame);
      this.envelopes.push(...(Array.isArray(frame) ? frame : [frame]));
      for (const w of this.waiters.splice(0)) w();
    });
    this.closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    void this.closed.then(() => {
      for (const w of this.waiters.splice(0)) w();
    });
  }

  send(frame: unknown): void {
    this.ws.send(this.binary ? unpackr.pack(frame) : JSON.stringify(frame));
  }

  /** Waits for the first envelope (from index `from`) matching `pred`. */
  async next(pred: (f: Frame) => boolean, timeoutMs = 5000, from = 0): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.envelopes.slice(from).find(pred);
      if (found) return found;
      if (this.ws.readyState === WebSocket.CLOSED) throw new Error(`socket closed while waiting; got ${JSON.stringify(this.envelopes.slice(-5))}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for a frame; last frames: ${JSON.stringify(this.envelopes.slice(-5))}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => (clearTimeout(t), resolve()));
      });
    }
  }

  reply(type: string, id: string, timeoutMs = 5000): Promise<Frame> {
    return this.next((f) => f.id === id && (f.type === type || f.type === 'error'), timeoutMs);
  }

  /** Sends a request and resolves its reply (or the error frame answering it). */
  async request(frame: { type: string; id: string; [k: string]: unknown }, replyType = frame.type, timeoutMs = 5000): Promise<Frame> {
    this.send(frame);
    return this.reply(replyType, frame.id, timeoutMs);
  }

  async join(projectGuid: string, since?: string): Promise<Frame> {
    const id = `join-${projectGuid}-${Math.random().toString(36).slice(2)}`;
    const ack = await this.request({ type: 'join_project', id, projectGuid, data: since === undefined ? {} : { since } });
    if (ack.type !== 'join_project') throw new Error(`join failed: ${JSON.stringify(ack)}`);
    return ack;
  }

  events(projectGuid?: string): Frame[] {
    return this.envelopes.filter((f) => f.type !== 'error' && f.type !== 'pong' && f.type !== 'join_project' && f.type !== 'leave_project' && f.type !== 'user_feedback_response' && (!projectGuid || f.projectGuid === projectGuid));
  }

  async waitForEvents(projectGuid: string, count: number, timeoutMs = 10000): Promise<Frame[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.events(projectGuid).length < count) {
      if (Date.now() > deadline) throw new Error(`expected ${count} events of ${projectGuid}, got ${this.events(projectGuid).length}`);
      if (this.ws.readyState === WebSocket.CLOSED) throw new Error(`socket closed with ${this.events(projectGuid).length}/${count} events`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 50);
        this.waiters.push(() => (clearTimeout(t), resolve()));
      });
    }
    return this.events(projectGuid);
  }

  close(): Promise<{ code: number; reason: string }> {
    if (this.ws.readyState !== WebSocket.CLOSED) this.ws.close();
    return this.closed;
  }
}

export interface ConnectOptions {
  protocol?: string | string[];
  headers?: Record<string, string>;
  /** false makes a client that never answers pings (a dead peer). */
  autoPong?: boolean;
  query?: boolean;
}

export function connect(wsUrl: string, token: string | null, options: ConnectOptions = {}): Promise<TestClient> {
  const url = token && options.query !== false ? `${wsUrl}?token=${encodeURIComponent(token)}` : wsUrl;
  const ws = new WebSocket(url, options.protocol ?? [], { headers: options.headers ?? {}, autoPong: options.autoPong ?? true });
  const binary = ws.protocol === 'autocode.v1.msgpack' || (Array.isArray(options.protocol) ? options.protocol[0] : options.protocol) === 'autocode.v1.msgpack';
  return new Promise((resolve, reject) => {
    const client = new TestClient(ws, binary);
    ws.once('open', () => resolve(client));
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => reject(Object.assign(new Error(`HTTP ${res.statusCode}: ${body}`), { status: res.statusCode, body })));
    });
    ws.once('error', reject);
  });
}

/** Resolves the HTTP status an upgrade attempt gets, for tests where no WebSocket must open. */
export async function upgradeStatus(wsUrl: string, token: string | null, headers: Record<string, string> = {}): Promise<number> {
  try {
    const c = await connect(wsUrl, token, { headers });
    await c.close();
    return 101;
  } catch (err) {
    const status = (err as { status?: number }).status;
    if (typeof status !== 'number') throw err;
    return status;
  }
}

export async function postEvent(httpUrl: string, projectGuid: string, body: unknown, token: string | null = producerToken(), raw?: string) {
  const res = await fetch(`${httpUrl}/v1/projects/${projectGuid}/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: raw ?? JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as any };
}

/** Polls `check` until it holds; fails naming `what` after `timeoutMs`. */
export async function until(check: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
