// WORKERS > 1: gateways in worker threads of one process, on one port, sharing one bus. Real
// processes (`node dist/main.js`), real clients; which worker took a client or answered a request
// is read from the x-gateway-worker header.
import { spawn } from 'node:child_process';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { producerToken, randomGuid, SECRET, TestClient, until, userToken, type Frame } from './helpers/gateway.js';
import { freePort } from './helpers/ports.js';
import { GATEWAY_MAIN, spawnGateway, trackChild, type GatewayProcess } from './helpers/processes.js';
import { startRedis, type RedisServer } from './helpers/redis.js';
import { metricValue, request, TWO_WORKERS } from './helpers/topology.js';
import { connectPlaced, type Placed } from './helpers/workers.js';

/** Every client a test opened, closed after it even when it fails (the next test counts connections). */
const opened: TestClient[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((c) => c.close()));
});

/** Connects until at least `perWorker` clients sit on each of `workers` workers (the kernel picks). */
async function clientsOnEveryWorker(wsUrl: string, workers: number, perWorker: number): Promise<Placed[]> {
  const placed: Placed[] = [];
  const count = (w: string) => placed.filter((p) => p.worker === w).length;
  const ids = Array.from({ length: workers }, (_, i) => String(i));
  for (let attempt = 0; ids.some((w) => count(w) < perWorker); attempt++) {
    if (attempt >= 200) throw new Error(`after 200 connections, per worker: ${ids.map((w) => `${w}: ${count(w)}`).join(', ')}`);
    placed.push(await connectAndTrack(wsUrl, userToken('*', `u${attempt}`)));
  }
  return placed;
}

/** A WORKERS=2 process with both workers answering. */
const startTwoWorkers = async (env: Record<string, string> = {}): Promise<GatewayProcess> => (await TWO_WORKERS.start(env)).process!;

/** A placed client that the test's afterEach closes. */
async function connectAndTrack(wsUrl: string, token: string): Promise<Placed> {
  const p = await connectPlaced(wsUrl, token);
  opened.push(p.client);
  return p;
}

const eventIds = (frames: Frame[]) => frames.map((f) => f.id!);

describe('WORKERS=2 on the in-process bus', () => {
  let gateway: GatewayProcess;
  let agents: WebSocketServer;
  const agentLinks = new Set<WebSocket>();
  beforeAll(async () => {
    // A real WebSocket server as the agents-server: each worker keeps its own link to it.
    agents = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await new Promise((r) => agents.once('listening', r));
    agents.on('connection', (ws) => {
      agentLinks.add(ws);
      ws.on('close', () => agentLinks.delete(ws));
    });
    const agentsPort = (agents.address() as { port: number }).port;
    gateway = await startTwoWorkers({ AGENTS_URL: `ws://127.0.0.1:${agentsPort}`, RATE_LIMIT_PER_S: '1000', RATE_LIMIT_BURST: '2000' });
  });
  afterAll(async () => {
    await gateway?.stop();
    for (const ws of agentLinks) ws.terminate();
    await new Promise((r) => agents?.close(r));
  });

  it('delivers a room\'s events to clients on both workers in order, none twice, whichever worker published them', async () => {
    const guid = randomGuid();
    const placed = await clientsOnEveryWorker(gateway.wsUrl, 2, 2);
    await Promise.all(placed.map((p) => p.client.join(guid)));

    // HTTP API: concurrent publishes on fresh connections, so both workers publish, interleaved.
    const published: { worker: string | undefined; ids: string[] }[] = [];
    for (let round = 0; round < 40 && new Set(published.map((p) => p.worker)).size < 2; round++) {
      const answers = await Promise.all(
        Array.from({ length: 4 }, (_, i) =>
          request(`${gateway.url}/v1/projects/${guid}/events`, 'POST', { events: [0, 1, 2].map((k) => ({ type: 'project_message', data: { round, i, k } })) }, { authorization: `Bearer ${producerToken()}` }),
        ),
      );
      for (const a of answers) {
        expect(a.status).toBe(202);
        published.push({ worker: a.worker, ids: a.body.ids });
      }
    }
    expect(new Set(published.map((p) => p.worker))).toEqual(new Set(['0', '1']));

    // In-process publish inside each worker: an agent_message relayed by that worker's agents link.
    await until(() => agentLinks.size === 2, 5000, 'both workers linked to the agents-server');
    for (const link of agentLinks) link.send(JSON.stringify({ type: 'agent_message', projectGuid: guid, data: { from: 'agent' } }));

    const httpIds = published.flatMap((p) => p.ids);
    const total = httpIds.length + 2;
    const sequences = await Promise.all(placed.map(async (p) => eventIds(await p.client.waitForEvents(guid, total))));
    await new Promise((r) => setTimeout(r, 100)); // anything extra (a duplicate) would have arrived by now
    for (const p of placed) {
      const seen = eventIds(p.client.events(guid));
      expect(seen).toHaveLength(total);
      expect(new Set(seen).size).toBe(total); // none twice
      expect(seen).toEqual(sequences[0]); // the same order on every worker
      expect([...seen].sort(compareIds)).toEqual(seen); // in id order
      expect(seen).toEqual(expect.arrayContaining(httpIds));
      expect(p.client.events(guid).filter((e) => e.type === 'agent_message')).toHaveLength(2);
    }
    await Promise.all(placed.map((p) => p.client.close()));
  });

  it('resumes with since on the other worker: the missed events are replayed from the shared bus, no gap, no duplicate', async () => {
    const guid = randomGuid();
    const first = (await clientsOnEveryWorker(gateway.wsUrl, 2, 1)).find((p) => p.worker === '0')!;
    await first.client.join(guid);
    const publish = async (n: number) => {
      const res = await request(`${gateway.url}/v1/projects/${guid}/events`, 'POST', { events: Array.from({ length: n }, (_, k) => ({ type: 'project_status_change', data: { k } })) }, { authorization: `Bearer ${producerToken()}` });
      expect(res.status).toBe(202);
      return res.body.ids as string[];
    };
    const before = await publish(3);
    expect(eventIds(await first.client.waitForEvents(guid, 3))).toEqual(before);
    await first.client.close();
    const missed = await publish(5);
    // Worker 0 watches the project no more; worker 1 never did: its history comes from the main thread.
    let second = await connectAndTrack(gateway.wsUrl, userToken('*', 'resumer'));
    for (let attempt = 1; second.worker !== '1'; attempt++) {
      if (attempt > 200) throw new Error('the kernel never handed a connection to worker 1');
      await second.client.close();
      second = await connectAndTrack(gateway.wsUrl, userToken('*', 'resumer'));
    }
    const ack = await second.client.join(guid, before[2]);
    expect(ack.data).toMatchObject({ recovered: true, replayed: 5, latestId: missed[4] });
    const live = await publish(1);
    expect(eventIds(await second.client.waitForEvents(guid, 6))).toEqual([...missed, ...live]);
  });

  it('answers /metrics for the whole process, whichever worker answers: sums over workers', async () => {
    await until(async () => metricValue((await request(`${gateway.url}/metrics`, 'GET')).text, 'ws_connections') === 0, 5000, 'earlier clients gone');
    const placed = await clientsOnEveryWorker(gateway.wsUrl, 2, 1);
    const answeredBy = new Set<string | undefined>();
    for (let i = 0; i < 40 && answeredBy.size < 2; i++) {
      const res = await request(`${gateway.url}/metrics`, 'GET');
      expect(res.status).toBe(200);
      answeredBy.add(res.worker);
      // Every worker holds only some of the clients; the answer counts all of them.
      expect(metricValue(res.text, 'ws_connections')).toBe(placed.length);
      expect(metricValue(res.text, 'gateway_workers')).toBe(2);
      expect(metricValue(res.text, 'bus_ready')).toBe(1);
      // Process-wide values are the same process read by every thread: kept once, not doubled.
      expect(Math.abs(metricValue(res.text, 'process_start_time_seconds') - Date.now() / 1000)).toBeLessThan(3600);
    }
    expect(answeredBy).toEqual(new Set(['0', '1']));
    await Promise.all(placed.map((p) => p.client.close()));
  });
});

describe('WORKERS=2 shutdown', () => {
  it('closes every client of every worker with 1001 on SIGTERM and exits 0 within the drain timeout', async () => {
    const graceMs = 2000;
    const gateway = await startTwoWorkers({ SHUTDOWN_GRACE_MS: String(graceMs) });
    try {
      const placed = await clientsOnEveryWorker(gateway.wsUrl, 2, 2);
      const guid = randomGuid();
      await Promise.all(placed.map((p) => p.client.join(guid)));
      const started = Date.now();
      const exitCode = gateway.stop('SIGTERM');
      const closes = await Promise.all(placed.map((p) => p.client.closed));
      expect(closes.map((c) => c.code)).toEqual(placed.map(() => 1001));
      expect(await exitCode).toBe(0);
      // main.ts force-exits with code 1 at SHUTDOWN_GRACE_MS + 5 s: 0 means every worker drained before.
      expect(Date.now() - started).toBeLessThan(graceMs + 5000);
      expect(gateway.output()).not.toMatch(/open handles|Assertion failed/);
    } finally {
      await gateway.stop('SIGKILL');
    }
  });
});

describe('WORKERS=2 with PORT=0', () => {
  it('every worker listens on the one port picked for them (uSockets reuses a port only when it is not 0)', async () => {
    const child = spawn(process.execPath, [GATEWAY_MAIN], { env: { ...process.env, PORT: '0', HOST: '127.0.0.1', JWT_SECRET: SECRET, LOG_LEVEL: 'info', WORKERS: '2' }, stdio: ['ignore', 'pipe', 'pipe'] });
    trackChild(child);
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      await until(() => /all workers listening/.test(output) || child.exitCode !== null, 10_000, `start-up:\n${output}`);
      const line = output.split('\n').find((l) => l.includes('all workers listening'));
      expect(line, output).toBeDefined();
      const port = JSON.parse(line!).port as number;
      expect(port).toBeGreaterThan(0);
      const workers = new Set<string | undefined>();
      for (let i = 0; i < 40 && workers.size < 2; i++) workers.add((await request(`http://127.0.0.1:${port}/healthz`, 'GET')).worker);
      expect(workers).toEqual(new Set(['0', '1']));
    } finally {
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    }
  });
});

describe('WORKERS=2 on Redis Streams (one reader per worker), next to a WORKERS=1 process', () => {
  let redis: RedisServer;
  let multi: GatewayProcess;
  let single: GatewayProcess;
  beforeAll(async () => {
    redis = await startRedis();
    [multi, single] = await Promise.all([
      startTwoWorkers({ REDIS_URL: redis.url, NODE_ID: 'multi' }),
      spawnGateway({ PORT: String(await freePort()), HOST: '127.0.0.1', JWT_SECRET: SECRET, LOG_LEVEL: 'warn', WORKERS: '1', REDIS_URL: redis.url, NODE_ID: 'single' }),
    ]);
  });
  afterAll(async () => {
    await Promise.all([multi?.stop(), single?.stop()]);
    await redis?.stop();
  });

  it('delivers XADD and HTTP events to clients on both workers and on the single-thread process, in order, once', async () => {
    const guid = randomGuid();
    const placed = await clientsOnEveryWorker(multi.wsUrl, 2, 1);
    const plain = await connectAndTrack(single.wsUrl, userToken());
    // WORKERS=1 runs no worker thread: nothing names one.
    expect(plain.worker).toBeUndefined();
    const everyone = [...placed, plain];
    await Promise.all(everyone.map((p) => p.client.join(guid)));
    const ids: string[] = [];
    ids.push(await redis.cli('XADD', `autocode:{${guid}}:events`, '*', 'type', 'project_message', 'data', '{"via":"redis-cli"}'));
    for (let i = 0; i < 4; i++) {
      const res = await request(`${(i % 2 ? single : multi).url}/v1/projects/${guid}/events`, 'POST', { type: 'project_message', data: { i } }, { authorization: `Bearer ${producerToken()}` });
      expect(res.status).toBe(202);
      ids.push(res.body.id);
    }
    for (const p of everyone) expect(eventIds(await p.client.waitForEvents(guid, ids.length))).toEqual(ids);
    await new Promise((r) => setTimeout(r, 100));
    for (const p of everyone) expect(p.client.events(guid)).toHaveLength(ids.length);
    await Promise.all(everyone.map((p) => p.client.close()));
  });
});

function compareIds(a: string, b: string): number {
  const [am, as] = a.split('-').map(BigInt) as [bigint, bigint];
  const [bm, bs] = b.split('-').map(BigInt) as [bigint, bigint];
  return am === bm ? (as < bs ? -1 : as > bs ? 1 : 0) : am < bm ? -1 : 1;
}
