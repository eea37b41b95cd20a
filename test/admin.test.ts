import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import http from 'node:http';
import WebSocket from 'ws';
import { createGatewayClient } from '../src/client/index.js';
import { connect, producerToken, randomGuid, userToken, until, type TestClient } from './helpers/gateway.js';
import { adminCall, adminToken, tokenIssuedAt, tryUpgrade } from './helpers/admin.js';
import { connectOnWorker, connectPlaced } from './helpers/workers.js';
import { ADMIN_ACTIONS } from '../src/metrics.js';
import { metricSum, SHAPES, type Served } from './helpers/topology.js';

/**
 * The server API without Redis, in every shape (one thread; WORKERS=2, where an action taken by
 * one thread must reach the other's sockets and a query must count both): disconnect, revoke,
 * block, presence, info, history, and who may call it.
 */

/** One socket of `user` on each worker thread (one in all for a single thread). */
async function socketsOnEveryThread(g: Served, token: string): Promise<TestClient[]> {
  if (g.workers === 1) return [(await connectPlaced(g.wsUrl, token)).client];
  return Promise.all(Array.from({ length: g.workers }, (_, w) => connectOnWorker(g.wsUrl, token, w)));
}

/** Upgrades until every thread answered (a single thread: once); each answer is checked. */
async function everyThreadAnswers(g: Served, token: string, check: (t: Awaited<ReturnType<typeof tryUpgrade>>) => void): Promise<void> {
  const seen = new Set<string | undefined>();
  for (let i = 0; i < 100 && seen.size < g.workers; i++) {
    const t = await tryUpgrade(g.wsUrl, token);
    check(t);
    seen.add(t.worker);
  }
  expect(seen.size).toBe(g.workers);
}

describe.each(SHAPES)('server API without Redis ($name)', (shape) => {
  let g: Served;
  beforeAll(async () => {
    g = await shape.start({ REVOCATION_TTL_S: '60' });
  }, 30_000);
  afterAll(() => g?.close());

  it('answers 401 without a token and 403 FORBIDDEN for a token without gateway:admin', async () => {
    expect((await adminCall(g.httpUrl, 'GET', '/v1/admin/info', undefined, null)).status).toBe(401);
    const publisher = await adminCall(g.httpUrl, 'POST', '/v1/admin/disconnect', { userId: 'x' }, producerToken());
    expect(publisher.status).toBe(403);
    expect(publisher.body.error.code).toBe('FORBIDDEN');
    const bad = await adminCall(g.httpUrl, 'POST', '/v1/admin/block', { userId: 'x', until: 'tomorrow' });
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBe('INVALID_DATA');
  });

  it('reads a body that arrives in pieces (chunked, with pauses) before answering', async () => {
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request(`${g.httpUrl}/v1/admin/block`, { method: 'POST', agent: false, headers: { 'content-type': 'application/json', authorization: `Bearer ${adminToken()}` } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      const body = JSON.stringify({ userId: `chunked-${randomGuid()}`, until: 0, reason: 'x'.repeat(90) });
      req.write(body.slice(0, 20));
      setTimeout(() => req.write(body.slice(20, 60)), 100);
      setTimeout(() => req.end(body.slice(60)), 200);
    });
    expect(status).toBe(200);
  });

  it("disconnect closes the user's sockets on every thread with 4403 and the reason, and no one else's", async () => {
    const user = `dis-${randomGuid()}`;
    const sockets = await socketsOnEveryThread(g, userToken('*', user));
    const bystander = await connect(g.wsUrl, userToken('*', `other-${randomGuid()}`));
    const res = await adminCall(g.httpUrl, 'POST', '/v1/admin/disconnect', { userId: user, reason: 'account deleted' });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ userId: user, closeCode: 4403 });
    const closes = await Promise.all(sockets.map((s) => Promise.race([s.closed, new Promise((r) => setTimeout(() => r('still open'), 1000))])));
    for (const c of closes) expect(c).toEqual({ code: 4403, reason: 'account deleted' });
    expect((await bystander.request({ type: 'ping', id: 'p' }, 'pong')).type).toBe('pong');
    await bystander.close();
  });

  it('revoke takes the user out of the project on every thread, refuses a re-join with a token issued before, accepts one issued after', async () => {
    const user = `rev-${randomGuid()}`;
    const [p, q] = [randomGuid(), randomGuid()];
    const oldToken = userToken('*', user);
    const sockets = await socketsOnEveryThread(g, oldToken);
    for (const s of sockets) (await s.join(p), await s.join(q));
    const res = await adminCall(g.httpUrl, 'POST', '/v1/admin/revoke', { userId: user, projectGuid: p.toUpperCase() });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ userId: user, projectGuid: p });
    expect(res.body.expiresAt - res.body.revokedAt).toBe(60_000);
    for (const s of sockets) {
      const left = await s.next((f) => f.type === 'leave_project' && f.projectGuid === p, 1000);
      expect(left.data).toEqual({ reason: 'access_revoked' });
    }
    // Still in the other project: its events arrive.
    const id = await g.publish(q, { type: 'project_message', data: { still: 'here' } });
    for (const s of sockets) expect((await s.next((f) => f.id === id)).projectGuid).toBe(q);
    // A re-join with the old token, on the same sockets and on new ones on every thread, is refused.
    for (const s of sockets) expect((await s.request({ type: 'join_project', id: 'again', projectGuid: p, data: {} })).data.code).toBe('ACCESS_REVOKED');
    for (const s of await socketsOnEveryThread(g, oldToken)) {
      expect((await s.request({ type: 'join_project', id: 'fresh', projectGuid: p, data: {} })).data.code).toBe('ACCESS_REVOKED');
      await s.close();
    }
    // A token issued after the revocation (the next second) joins.
    const renewed = await connect(g.wsUrl, tokenIssuedAt(user, Math.floor(res.body.revokedAt / 1000) + 1));
    expect((await renewed.join(p)).type).toBe('join_project');
    await Promise.all([...sockets, renewed].map((s) => s.close()));
  });

  it('block closes the sockets (4403) and refuses upgrades on every thread with 403 USER_BLOCKED until it ends', async () => {
    const user = `blk-${randomGuid()}`;
    const token = userToken('*', user);
    const sockets = await socketsOnEveryThread(g, token);
    const until = Date.now() + 2500;
    const res = await adminCall(g.httpUrl, 'POST', '/v1/admin/block', { userId: user, until, reason: 'abuse' });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ userId: user, blockedUntil: until, active: true });
    for (const s of sockets) expect(await s.closed).toEqual({ code: 4403, reason: 'abuse' });
    await everyThreadAnswers(g, token, (t) => {
      expect(t).toMatchObject({ status: 403, code: 'USER_BLOCKED' });
      expect(Number(t.retryAfter)).toBeGreaterThanOrEqual(1);
    });
    await new Promise((r) => setTimeout(r, until - Date.now() + 50));
    await everyThreadAnswers(g, token, (t) => expect(t.status).toBe(101));
  });

  it('a blocked user cannot get in with a ticket either: one issued before the block is refused 403 USER_BLOCKED on every thread', async () => {
    const user = `tkt-${randomGuid()}`;
    const token = userToken('*', user);
    const tickets: string[] = [];
    for (let i = 0; i < 40; i++) {
      const res = await fetch(`${g.httpUrl}/v1/tickets`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
      expect(res.status).toBe(201);
      tickets.push(((await res.json()) as { ticket: string }).ticket);
    }
    expect((await adminCall(g.httpUrl, 'POST', '/v1/admin/block', { userId: user, until: Date.now() + 60_000 })).status).toBe(200);
    const seen = new Set<string | undefined>();
    while (seen.size < g.workers) {
      const ticket = tickets.pop();
      expect(ticket, 'a ticket left to try on the thread not seen yet').toBeDefined();
      const t = await tryUpgrade(g.wsUrl, ticket!, 'ticket');
      expect(t).toMatchObject({ status: 403, code: 'USER_BLOCKED' });
      seen.add(t.worker);
    }
    // The same tickets work once the block is lifted (those not spent above).
    expect((await adminCall(g.httpUrl, 'POST', '/v1/admin/block', { userId: user, until: 0 })).status).toBe(200);
    expect((await tryUpgrade(g.wsUrl, tickets.pop()!, 'ticket')).status).toBe(101);
  });

  it('a block with a time already past lifts it', async () => {
    const user = `lift-${randomGuid()}`;
    const token = userToken('*', user);
    expect((await adminCall(g.httpUrl, 'POST', '/v1/admin/block', { userId: user, until: Date.now() + 60_000 })).status).toBe(200);
    await everyThreadAnswers(g, token, (t) => expect(t.status).toBe(403));
    expect((await adminCall(g.httpUrl, 'POST', '/v1/admin/block', { userId: user, until: 0 })).body.active).toBe(false);
    await everyThreadAnswers(g, token, (t) => expect(t.status).toBe(101));
  });

  it('presence and info count what is connected on every thread', async () => {
    const project = randomGuid();
    const [alice, bob] = [`alice-${randomGuid()}`, `bob-${randomGuid()}`];
    const aliceSockets = await socketsOnEveryThread(g, userToken('*', alice));
    const bobSocket = await connect(g.wsUrl, userToken('*', bob));
    const idle = await connect(g.wsUrl, userToken('*', `idle-${randomGuid()}`));
    for (const s of [...aliceSockets, bobSocket]) await s.join(project);
    const presence = await adminCall(g.httpUrl, 'GET', `/v1/admin/projects/${project}/presence`);
    expect(presence.status).toBe(200);
    expect(presence.body).toEqual({
      projectGuid: project,
      users: [
        { userId: alice, connections: g.workers },
        { userId: bob, connections: 1 },
      ].sort((a, b) => (a.userId < b.userId ? -1 : 1)),
      connections: g.workers + 1,
      nodes: g.workers,
    });
    const open = [...aliceSockets, bobSocket, idle];
    // Earlier tests' sockets may still be closing: info settles on exactly the open ones.
    let info: Awaited<ReturnType<typeof adminCall>> | undefined;
    await until(async () => (info = await adminCall(g.httpUrl, 'GET', '/v1/admin/info')).body.connections === open.length, 3000, 'info counting the open sockets');
    expect(info!.body.nodes).toHaveLength(g.workers);
    expect(info!.body.nodes.reduce((n: number, x: { rooms: number }) => n + x.rooms, 0)).toBe(g.workers === 1 ? 1 : g.workers);
    await Promise.all(open.map((s) => s.close()));
  });

  it('history pages join up with a resume from the same id, oldest or newest first', async () => {
    const project = randomGuid();
    const ids = await g.publishMany(project, Array.from({ length: 25 }, (_, i) => ({ type: 'project_message' as const, data: { i } })));
    const since = ids[4]!;
    // Oldest first from `since`, 10 a page, until a page reads nothing.
    const paged: string[] = [];
    for (let cursor: string | null = since; cursor; ) {
      const page: Awaited<ReturnType<typeof adminCall>> = await adminCall(g.httpUrl, 'GET', `/v1/admin/projects/${project}/history?since=${cursor}&limit=10`);
      expect(page.status).toBe(200);
      expect(page.body.recovered).toBe(true);
      paged.push(...page.body.events.map((e: { id: string }) => e.id));
      cursor = page.body.next;
    }
    const resumed = await connect(g.wsUrl, userToken());
    const ack = await resumed.join(project, since);
    expect(ack.data).toMatchObject({ recovered: true, replayed: 20 });
    const replayed = (await resumed.waitForEvents(project, 20)).map((e) => e.id);
    expect(paged).toEqual(replayed);
    expect(paged).toEqual(ids.slice(5));
    // Each event as a WebSocket client receives it, and nothing more.
    const first = await adminCall(g.httpUrl, 'GET', `/v1/admin/projects/${project}/history?since=${since}&limit=1`);
    expect(first.body.events).toEqual([(await resumed.waitForEvents(project, 20))[0]]);
    await resumed.close();
    // Newest first, back from the end: the same ids reversed, down to the first.
    const back: string[] = [];
    for (let cursor: string | null = null, n = 0; n === 0 || cursor; n++) {
      const page: Awaited<ReturnType<typeof adminCall>> = await adminCall(g.httpUrl, 'GET', `/v1/admin/projects/${project}/history?order=newest&limit=7${cursor ? `&since=${cursor}` : ''}`);
      back.push(...page.body.events.map((e: { id: string }) => e.id));
      cursor = page.body.next;
    }
    expect(back).toEqual([...ids].reverse());
    const badLimit = await adminCall(g.httpUrl, 'GET', `/v1/admin/projects/${project}/history?limit=0`);
    expect(badLimit.body.error.code).toBe('INVALID_DATA');
  });
});

describe.each(SHAPES)('server API actions in /metrics ($name)', (shape) => {
  let g: Served;
  beforeAll(async () => {
    g = await shape.start();
  }, 30_000);
  afterAll(() => g?.close());

  it('admin_actions_total{action}: at 0 from the start, then each action answered 200, summed over every thread; refusals and reads are not counted', async () => {
    const counts = (text: string) => Object.fromEntries(ADMIN_ACTIONS.map((action) => [action, metricSum(text, 'admin_actions_total', { action })]));
    expect(counts(await g.metrics())).toEqual({ disconnect: 0, revoke: 0, block: 0, unblock: 0 });

    // Disconnects (of nobody: still an action taken) until every thread has answered at least one.
    const threads = new Set<string | undefined>();
    let disconnects = 0;
    while (disconnects < 2 || (threads.size < g.workers && disconnects < 100)) {
      const res = await adminCall(g.httpUrl, 'POST', '/v1/admin/disconnect', { userId: `nobody-${randomGuid()}` });
      expect(res.status).toBe(200);
      threads.add(res.worker);
      disconnects++;
    }
    expect(threads.size).toBe(g.workers);
    const user = `counted-${randomGuid()}`;
    expect((await adminCall(g.httpUrl, 'POST', '/v1/admin/revoke', { userId: user, projectGuid: randomGuid() })).status).toBe(200);
    expect((await adminCall(g.httpUrl, 'POST', '/v1/admin/block', { userId: user, until: Date.now() + 60_000 })).body.active).toBe(true);
    expect((await adminCall(g.httpUrl, 'POST', '/v1/admin/block', { userId: user, until: 0 })).body.active).toBe(false);
    // Refused before anything was applied, and reads.
    expect((await adminCall(g.httpUrl, 'POST', '/v1/admin/disconnect', { userId: user }, producerToken())).status).toBe(403);
    expect((await adminCall(g.httpUrl, 'POST', '/v1/admin/block', { userId: user, until: 'tomorrow' })).status).toBe(400);
    expect((await adminCall(g.httpUrl, 'POST', '/v1/admin/revoke', { userId: user, projectGuid: 'not-a-guid' })).status).toBe(400);
    expect((await adminCall(g.httpUrl, 'GET', '/v1/admin/info')).status).toBe(200);
    expect((await adminCall(g.httpUrl, 'GET', `/v1/admin/projects/${randomGuid()}/presence`)).status).toBe(200);

    expect(counts(await g.metrics())).toEqual({ disconnect: disconnects, revoke: 1, block: 1, unblock: 1 });
  });
});

describe('server API history once retention dropped events (in-process bus, one thread)', () => {
  it('says recovered: false, oldest first from a dropped id (starting at the oldest kept) and newest first', async () => {
    const g = await SHAPES[0]!.start({ STREAM_MAXLEN: '10' });
    try {
      const project = randomGuid();
      const ids = await g.publishMany(project, Array.from({ length: 40 }, (_, i) => ({ type: 'project_message' as const, data: { i } })));
      const oldest = await adminCall(g.httpUrl, 'GET', `/v1/admin/projects/${project}/history?since=${ids[1]}&limit=1000`);
      expect(oldest.body.recovered).toBe(false);
      const kept = oldest.body.events.map((e: { id: string }) => e.id);
      expect(kept.length).toBeLessThan(39);
      expect(kept).toEqual(ids.slice(ids.length - kept.length));
      const newest = await adminCall(g.httpUrl, 'GET', `/v1/admin/projects/${project}/history?order=newest&limit=3`);
      expect(newest.body).toMatchObject({ recovered: false, next: ids[37] });
      expect(newest.body.events.map((e: { id: string }) => e.id)).toEqual([ids[39], ids[38], ids[37]]);
      // Still recovered from an id that was kept.
      expect((await adminCall(g.httpUrl, 'GET', `/v1/admin/projects/${project}/history?since=${ids[38]}`)).body).toMatchObject({ recovered: true, next: ids[39] });
    } finally {
      await g.close();
    }
  });
});

describe('server API tokens', () => {
  it('gateway:admin is a scope of its own: an admin token cannot publish', async () => {
    const g = await SHAPES[0]!.start();
    try {
      const res = await fetch(`${g.httpUrl}/v1/projects/${randomGuid()}/events`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${adminToken()}` },
        body: JSON.stringify({ type: 'project_message', data: {} }),
      });
      expect(res.status).toBe(403);
    } finally {
      await g.close();
    }
  });
});

describe('the client library and the server API (Node, real gateway)', () => {
  it('a disconnect ends the client for good: DISCONNECTED, state closed, no reconnect', async () => {
    const g = await SHAPES[0]!.start();
    const user = `lib-${randomGuid()}`;
    let sockets = 0;
    class CountingWS extends WebSocket {
      constructor(url: string, protocols?: string | string[]) {
        super(url, protocols);
        sockets++;
      }
    }
    const client = createGatewayClient({ url: g.wsUrl, getToken: () => userToken('*', user), WebSocketImpl: CountingWS, connectWith: 'query-token', reconnect: { minDelayMs: 20, maxDelayMs: 50 } });
    const errors: string[] = [];
    const states: string[] = [];
    client.on('error', (e) => errors.push(e.code));
    client.on('state', (s) => states.push(s));
    try {
      await until(() => client.state === 'open', 5000, 'client open');
      expect((await adminCall(g.httpUrl, 'POST', '/v1/admin/disconnect', { userId: user, reason: 'banned' })).status).toBe(200);
      await until(() => client.state === 'closed', 2000, 'client closed');
      await new Promise((r) => setTimeout(r, 500));
      expect(sockets).toBe(1);
      expect(errors).toEqual(['DISCONNECTED']);
      expect(states.at(-1)).toBe('closed');
    } finally {
      client.close();
      await g.close();
    }
  });
});
