// What a default `npm start` (WORKERS = the CPUs) must keep that one thread keeps: pipelined HTTP
// requests are answered, or at least never appended without an answer; a failed start exits at
// once; a gauge every worker reads from one shared store is reported once.
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { producerToken, randomGuid, SECRET, userToken, until, connect } from './helpers/gateway.js';
import { freePort } from './helpers/ports.js';
import { spawn } from 'node:child_process';
import { GATEWAY_MAIN, spawnGateway, trackChild } from './helpers/processes.js';
import { startRedis, type RedisServer } from './helpers/redis.js';
import { metricValue, SHAPES, TWO_WORKERS } from './helpers/topology.js';

let redis: RedisServer;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
});

/**
 * `count` publishes written on one connection without waiting for answers: `gapMs` 0 writes them all
 * at once (one read for the server), more lets the server answer some before the next arrive.
 * Resolves the answers received before the connection ended (or 3 s passed).
 */
function pipelined(port: number, guid: string, count: number, gapMs: number): Promise<number> {
  const body = JSON.stringify({ type: 'project_message', data: { text: 'x' } });
  const one = `POST /v1/projects/${guid}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${producerToken()}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', async () => {
      if (gapMs === 0) socket.write(one.repeat(count));
      else {
        for (let i = 0; i < count && !socket.destroyed; i++) {
          socket.write(one);
          await new Promise((r) => setTimeout(r, gapMs));
        }
      }
    });
    let text = '';
    const answers = () => (text.match(/HTTP\/1\.1 202/g) ?? []).length;
    socket.on('data', (d) => {
      text += d.toString();
      if (answers() === count) socket.end();
    });
    // uWS closing a connection with requests still unread makes the kernel send a reset: expected here.
    socket.on('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNRESET' || err.code === 'EPIPE' ? undefined : reject(err)));
    socket.on('close', () => (clearTimeout(timer), resolve(answers())));
    const timer = setTimeout(() => socket.destroy(), 3000);
  });
}

describe.each(SHAPES)('pipelined publishes ($name)', (shape) => {
  it('in-process bus: 50 pipelined POSTs on one connection get 50 answers and append exactly 50 events', async () => {
    const g = await shape.start();
    try {
      const guid = randomGuid();
      expect(await pipelined(g.port, guid, 50, 0)).toBe(50);
      expect(await pipelined(g.port, guid, 50, 1)).toBe(50);
      const watcher = await connect(g.wsUrl, userToken());
      expect((await watcher.join(guid, '0-0')).data).toMatchObject({ recovered: true, replayed: 100 });
      await watcher.close();
    } finally {
      await g.close();
    }
  });

  it('Redis bus: what uWS cannot answer (a request behind an unanswered one) is never appended: appended = answered', async () => {
    const g = await shape.start({ REDIS_URL: redis.url });
    try {
      const guid = randomGuid();
      let answered = 0;
      for (const gap of [0, 1, 2, 0, 5, 20]) answered += await pipelined(g.port, guid, 50, gap);
      // Redis answers after the read: uWS closes the connection at the second request in one read
      // (uWebSockets denies async pipelining), and then nothing of that read may have been appended.
      const appended = Number(await redis.cli('XLEN', `autocode:{${guid}}:events`));
      expect(appended).toBe(answered);
      // Not vacuous: some were answered (at least the first of the 20 ms spaced run, alone in its read;
      // requests arriving while one is answered wait in the kernel, so usually many more).
      expect(answered).toBeGreaterThan(0);
    } finally {
      await g.close();
    }
  });
});

describe('start-up failure with worker threads', () => {
  it.each([
    { bus: 'in-process bus', env: (): Record<string, string> => ({}) },
    { bus: 'Redis bus', env: (): Record<string, string> => ({ REDIS_URL: redis.url }) },
  ])('a second gateway on a port in use exits with status 1 within 2 s ($bus)', async ({ env }) => {
    const port = await freePort();
    const common = { PORT: String(port), HOST: '127.0.0.1', JWT_SECRET: SECRET, LOG_LEVEL: 'warn', WORKERS: '2', ...env() };
    const first = await spawnGateway(common);
    try {
      // Timed from the error, not from the spawn: starting node and two worker threads alone can take
      // over a second on a loaded 2-core machine. The bug was a process that hung 30 s after the error.
      const second = spawn(process.execPath, [GATEWAY_MAIN], { env: { ...process.env, ...common }, stdio: ['ignore', 'pipe', 'pipe'] });
      trackChild(second);
      let stderr = '';
      let failedAt = 0;
      second.stderr.on('data', (c: Buffer) => {
        stderr += c.toString();
        if (!failedAt && stderr.includes('failed to start')) failedAt = Date.now();
      });
      const code = await new Promise<number | null>((resolve) => second.once('exit', (c) => resolve(c)));
      expect(code).toBe(1);
      expect(failedAt).toBeGreaterThan(0);
      expect(Date.now() - failedAt).toBeLessThan(2000);
      expect(stderr).toMatch(new RegExp(`port ${port} on 127.0.0.1 is already in use by another process`));
    } finally {
      await first.stop();
    }
  });
});

describe('gauges over worker threads', () => {
  // Two processes of their own (one per bus), each mostly waiting for its workers' 2 s samples: run at once.
  it.concurrent.each([
    { bus: 'in-process bus (each worker its own queue)', env: (): Record<string, string> => ({}) },
    { bus: 'Redis bus (one store every worker samples)', env: (): Record<string, string> => ({ REDIS_URL: redis.url }) },
  ])('feedback_pending equals the feedback waiting for an agents-server that is away ($bus)', async ({ env }) => {
    const deadPort = await freePort();
    const g = await TWO_WORKERS.start({ AGENTS_URL: `ws://127.0.0.1:${deadPort}/gateway`, AGENTS_RECONNECT_MAX_MS: '200', ...env() });
    try {
      const guid = randomGuid();
      // Clients on both workers (one connection each: the kernel spreads them).
      const clients = await Promise.all(Array.from({ length: 6 }, (_, i) => connect(g.wsUrl, userToken('*', `fb${i}`))));
      let accepted = 0;
      for (const [i, c] of clients.entries()) {
        for (let k = 0; k < 5; k++) {
          const reply = await c.request({ type: 'user_feedback', id: `f${i}-${k}`, projectGuid: guid, data: { content: 'hello' } }, 'user_feedback_response');
          if (reply.type === 'user_feedback_response') accepted++;
        }
      }
      expect(accepted).toBe(30);
      // Sampled every 2 s by each worker: read it until it shows 30, then again after every worker
      // has sampled once more (summing each worker's reading of one shared store would show 60).
      await until(async () => metricValue(await g.metrics(), 'feedback_pending') === 30, 8000, 'feedback_pending to read 30');
      await new Promise((r) => setTimeout(r, 2500));
      expect(metricValue(await g.metrics(), 'feedback_pending')).toBe(30);
      await Promise.all(clients.map((c) => c.close()));
    } finally {
      await g.close();
    }
  });
});
