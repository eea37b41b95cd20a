// The shapes a gateway is run in, behind one interface, so a suite runs unchanged in each: one
// thread in this process (createGateway on port 0), and a real `node dist/main.js` with WORKERS=2
// (the default on a 2-core machine: two uWS apps on one port, the kernel choosing per connection).
import http from 'node:http';
import type { NewEvent } from '../../src/bus/bus.js';
import { producerToken, SECRET, startGateway, until } from './gateway.js';
import { freePort } from './ports.js';
import { spawnGateway, type GatewayProcess } from './processes.js';
import { WORKER_HEADER } from './workers.js';

export { WORKER_HEADER };

export interface Served {
  readonly port: number;
  readonly wsUrl: string;
  readonly httpUrl: string;
  /** Worker threads serving (1: no worker thread). */
  readonly workers: number;
  /** Appends through the gateway: in-process for one thread, the HTTP API for a process. */
  publish(projectGuid: string, event: NewEvent): Promise<string>;
  publishMany(projectGuid: string, events: readonly NewEvent[]): Promise<string[]>;
  /** The /metrics text (a process sums its workers). */
  metrics(): Promise<string>;
  /** Graceful stop (SIGTERM for a process). */
  close(): Promise<void>;
  /** The process, when the shape is one. */
  readonly process?: GatewayProcess;
}

export interface Shape {
  readonly name: string;
  readonly workers: number;
  start(env?: Record<string, string>): Promise<Served>;
}

export const ONE_THREAD: Shape = {
  name: 'one thread',
  workers: 1,
  async start(env = {}) {
    const g = await startGateway(env);
    return {
      port: g.port,
      wsUrl: g.wsUrl,
      httpUrl: g.httpUrl,
      workers: 1,
      publish: (guid, event) => g.gw.publish(guid, event),
      publishMany: (guid, events) => g.gw.publishMany(guid, events),
      metrics: () => g.gw.metrics.registry.metrics(),
      close: () => g.close(),
    };
  },
};

export const TWO_WORKERS: Shape = {
  name: 'WORKERS=2',
  workers: 2,
  async start(env = {}) {
    const gateway = await spawnGateway({ PORT: String(await freePort()), HOST: '127.0.0.1', JWT_SECRET: SECRET, LOG_LEVEL: 'warn', WORKERS: '2', ...env });
    // /healthz answers once the first worker listens; a test on both needs both. Asked in rounds of
    // 8 fresh connections (each lands on a listening worker with even odds: a listening second worker
    // is missed by a round 1 time in 128) with a pause between: a tighter loop only takes CPU from the
    // second worker while it starts.
    await until(async () => {
      const seen = new Set<string | undefined>();
      for (let i = 0; i < 8 && seen.size < 2; i++) seen.add((await request(`${gateway.url}/healthz`, 'GET')).worker);
      if (seen.size < 2) await new Promise((r) => setTimeout(r, 30));
      return seen.size === 2;
    }, 30_000, 'both workers answering');
    const publishMany = async (guid: string, events: readonly NewEvent[]) => {
      const res = await request(`${gateway.url}/v1/projects/${guid}/events`, 'POST', { events: events.map((e) => ({ type: e.type, data: e.data })) }, { authorization: `Bearer ${producerToken()}` });
      if (res.status !== 202) throw new Error(`publish answered ${res.status}: ${res.text}`);
      return (res.body as { ids: string[] }).ids;
    };
    return {
      port: gateway.port,
      wsUrl: gateway.wsUrl,
      httpUrl: gateway.url,
      workers: 2,
      publish: async (guid, event) => (await publishMany(guid, [event]))[0]!,
      publishMany,
      metrics: async () => (await request(`${gateway.url}/metrics`, 'GET')).text,
      close: async () => void (await gateway.stop()),
      process: gateway,
    };
  },
};

/** Every shape a suite must hold in. */
export const SHAPES: readonly Shape[] = [ONE_THREAD, TWO_WORKERS];

/** One request on its own TCP connection (so SO_REUSEPORT may hand it to any worker). */
export function request(
  url: string,
  method: string,
  body?: unknown,
  headers: Record<string, string> = {},
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- a test's JSON answer, read as the test expects it
): Promise<{ status: number; worker: string | undefined; body: any; text: string; headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, agent: false, headers: body === undefined ? headers : { 'content-type': 'application/json', ...headers } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => {
        let parsed: unknown = null;
        try {
          parsed = JSON.parse(text);
        } catch {
          // not JSON (/metrics)
        }
        resolve({ status: res.statusCode ?? 0, worker: res.headers[WORKER_HEADER] as string | undefined, body: parsed, text, headers: res.headers });
      });
    });
    req.on('error', reject);
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

/** One sample of a Prometheus series: its labels and value. */
export interface MetricSample {
  readonly labels: Record<string, string>;
  readonly value: number;
}

/** Every sample of `name` in Prometheus text, with its labels. */
export function metricSeries(text: string, name: string): MetricSample[] {
  const found: MetricSample[] = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const labels: Record<string, string> = {};
    for (const m of line.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[m[1]!] = m[2]!;
    found.push({ labels, value: Number(line.slice(line.lastIndexOf(' ') + 1)) });
  }
  return found;
}

/**
 * The sum of every series of `name` in Prometheus text whose labels include `labels` (NaN when none
 * does): a process's /metrics may hold a series per worker thread, and a test wants their total.
 */
export function metricSum(text: string, name: string, labels: Record<string, string> = {}): number {
  const mine = metricSeries(text, name).filter((s) => Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  return mine.length ? mine.reduce((sum, s) => sum + s.value, 0) : NaN;
}

/** A metric's value in Prometheus text (the first series of that name). */
export function metricValue(text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `));
  if (!line) throw new Error(`no ${name} in /metrics`);
  return Number(line.slice(line.lastIndexOf(' ') + 1));
}
