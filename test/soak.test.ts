import { Redis } from 'ioredis';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createProducer } from '../src/bus/producer.js';
import { compareIds } from '../src/protocol/event-id.js';
import { postEvent, randomGuid, SECRET, userToken } from './helpers/gateway.js';
import { spawnGatewaysOnRedis, type GatewayProcess } from './helpers/processes.js';
import { startRedis, type RedisServer } from './helpers/redis.js';

const PROJECTS = 200;
const EVENTS = 20_000;
const CLIENTS = 40;

/**
 * A client that reconnects at random to any instance and resumes every project from the last id
 * it saw. It records everything it receives; the test compares that with what was appended.
 */
class SoakClient {
  readonly received = new Map<string, string[]>();
  readonly lastId = new Map<string, string>();
  readonly problems: string[] = [];
  private ws: WebSocket | null = null;
  private churn = true;
  reconnects = 0;

  constructor(readonly projects: string[], private readonly urls: string[]) {
    for (const p of projects) this.received.set(p, []);
  }

  async connect(): Promise<void> {
    const url = this.urls[Math.floor(Math.random() * this.urls.length)]!;
    const ws = new WebSocket(`${url}?token=${userToken()}`);
    this.ws = ws;
    const pendingJoins = new Map<string, string>();
    ws.on('message', (raw: Buffer) => {
      const frame = JSON.parse(raw.toString()) as { type: string; projectGuid: string; id: string; data: any } | { type: string; projectGuid: string; id: string; data: any }[];
      for (const e of Array.isArray(frame) ? frame : [frame]) {
        if (e.type === 'join_project') {
          pendingJoins.delete(e.projectGuid);
          if (e.data.recovered === false) this.problems.push(`recovered:false for ${e.projectGuid}`);
          if (!this.lastId.has(e.projectGuid)) this.lastId.set(e.projectGuid, e.data.latestId);
        } else if (e.type === 'error') {
          this.problems.push(`error ${JSON.stringify(e)}`);
        } else if (e.type === 'project_message') {
          const last = this.lastId.get(e.projectGuid) ?? '0-0';
          if (compareIds(e.id, last) <= 0) this.problems.push(`duplicate or out of order ${e.id} after ${last} in ${e.projectGuid}`);
          this.lastId.set(e.projectGuid, e.id);
          this.received.get(e.projectGuid)!.push(e.id);
        }
      }
    });
    ws.once('close', () => {
      if (this.churn) void this.connect().catch((err: Error) => this.problems.push(`reconnect failed: ${err.message}`));
    });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    for (const p of this.projects) {
      const since = this.lastId.get(p);
      pendingJoins.set(p, 'pending');
      ws.send(JSON.stringify({ type: 'join_project', id: `j-${p}`, projectGuid: p, data: since ? { since } : {} }));
    }
    while (pendingJoins.size > 0 && ws.readyState === WebSocket.OPEN) await new Promise((r) => setTimeout(r, 5));
  }

  /** Drops the connection (politely or abruptly) at random intervals; the close handler reconnects. */
  async churnLoop(until: () => boolean): Promise<void> {
    while (!until()) {
      await new Promise((r) => setTimeout(r, 200 + Math.random() * 800));
      if (until()) break;
      // Only drop an open socket: one still connecting is mid-reconnect already.
      if (this.ws?.readyState !== WebSocket.OPEN) continue;
      this.reconnects++;
      if (Math.random() < 0.5) this.ws?.terminate();
      else this.ws?.close();
      await new Promise((r) => setTimeout(r, 30));
    }
  }

  async stop(): Promise<void> {
    this.churn = false;
    this.ws?.close();
  }
}

describe('soak: 20,000 events over 200 projects, 3 instances, clients reconnecting at random', () => {
  let redis: RedisServer;
  let gateways: GatewayProcess[];
  beforeAll(async () => {
    redis = await startRedis();
    gateways = await spawnGatewaysOnRedis(redis.url, 3, SECRET, { RATE_LIMIT_BURST: '500' });
  });
  afterAll(async () => {
    await Promise.all((gateways ?? []).map((g) => g.stop()));
    await redis?.stop();
  });

  it('every client receives every event of its rooms exactly once, in order', async () => {
    const projects = Array.from({ length: PROJECTS }, () => randomGuid());
    const urls = gateways.map((g) => g.wsUrl);
    // Every project has at least one client; each client also watches a few random others.
    const clients = Array.from({ length: CLIENTS }, (_, i) => {
      const own = projects.slice(i * (PROJECTS / CLIENTS), (i + 1) * (PROJECTS / CLIENTS));
      const extra = Array.from({ length: 5 }, () => projects[Math.floor(Math.random() * PROJECTS)]!).filter((p) => !own.includes(p));
      return new SoakClient([...new Set([...own, ...extra])], urls);
    });
    await Promise.all(clients.map((c) => c.connect()));

    const connection = new Redis(redis.url);
    const producer = createProducer(connection, { maxLen: 100000 });
    const appended = new Map<string, string[]>(projects.map((p) => [p, []]));
    let producing = true;
    const churn = Promise.all(clients.map((c) => c.churnLoop(() => !producing)));

    const perRound = 100;
    for (let round = 0; round < EVENTS / perRound; round++) {
      const batch = Array.from({ length: perRound }, () => projects[Math.floor(Math.random() * PROJECTS)]!);
      // Every tenth round, ten of its events go through the HTTP producer API of one instance.
      const viaHttp = round % 10 === 5 ? batch.splice(0, 10) : [];
      for (const guid of viaHttp) {
        const res = await postEvent(gateways[round % 3]!.url, guid, { type: 'project_message', data: { round } });
        expect(res.status).toBe(202);
        appended.get(guid)!.push(res.body.id);
      }
      await Promise.all(
        batch.map(async (guid) => {
          const [id] = await producer.publish(guid, [{ type: 'project_message', data: { round } }]);
          appended.get(guid)!.push(id!);
        }),
      );
      await new Promise((r) => setTimeout(r, 15));
    }
    producing = false;
    await churn;
    const total = [...appended.values()].reduce((n, ids) => n + ids.length, 0);
    expect(total).toBe(EVENTS);
    for (const ids of appended.values()) ids.sort(compareIds);

    const deadline = Date.now() + 60_000;
    const caughtUp = () => clients.every((c) => c.projects.every((p) => (appended.get(p)!.length === 0 ? true : c.lastId.get(p) === appended.get(p)!.at(-1))));
    while (!caughtUp() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));

    const problems = clients.flatMap((c) => c.problems);
    expect(problems).toEqual([]);
    let checked = 0;
    for (const c of clients) {
      for (const p of c.projects) {
        expect(c.received.get(p), `client watching ${p}`).toEqual(appended.get(p));
        checked += appended.get(p)!.length;
      }
    }
    expect(checked).toBeGreaterThan(EVENTS);
    expect(clients.reduce((n, c) => n + c.reconnects, 0)).toBeGreaterThan(CLIENTS * 2);
    await Promise.all(clients.map((c) => c.stop()));
    await connection.quit();
  }, 180_000);
});
