import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { connect, postEvent, producerToken, randomGuid, until, userToken } from './helpers/gateway.js';
import { close, rawRequest, sharedPlainGateway, tryUpgrade } from './helpers/edge.js';
import { request, SHAPES, type Served } from './helpers/topology.js';
import { startRedis, type RedisServer } from './helpers/redis.js';

/**
 * For the tests that publish megabytes (60 KB events, 40 at a time) to see what the byte limits do: the
 * fan-out can fall behind the default FANOUT_MAX_DELAY_MS on a loaded machine and refuse the next
 * publish OVERLOADED (seen in full runs). That bound has tests of its own (overload.test.ts).
 */
const NO_OVERLOAD_BOUND = { FANOUT_MAX_DELAY_MS: '60000' };

/**
 * The edge policy, continued from edge.test.ts: tickets, the producer HTTP API's rules,
 * Idempotency-Keys per principal, frame size and memory budget; in every shape the gateway runs in
 * (one thread, and WORKERS=2: the limits are per process).
 */

let ticketRedis: RedisServer;
beforeAll(async () => {
  ticketRedis = await startRedis();
});
afterAll(async () => {
  await ticketRedis?.stop();
});

describe.each(SHAPES)('$name', (shape) => {
  const plainGateway = sharedPlainGateway(shape);

  describe('connection tickets', () => {
    const ticketFor = async (g: Served, token: string) => {
      const res = await fetch(`${g.httpUrl}/v1/tickets`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
      return { status: res.status, body: (await res.json()) as any };
    };

    it('trades a token for a one-time ticket that expires', async () => {
      const g = await shape.start({ TICKET_TTL_S: '1' });
      try {
        const issued = await ticketFor(g, userToken('*', 'erin'));
        expect(issued).toMatchObject({ status: 201, body: { expiresInS: 1 } });
        const c = await connect(`${g.wsUrl}?ticket=${issued.body.ticket}`, null);
        expect((await c.request({ type: 'ping', id: 'p' }, 'pong')).type).toBe('pong');
        expect((await tryUpgrade(`${g.wsUrl}?ticket=${issued.body.ticket}`)).status).toBe(401);
        const late = (await ticketFor(g, userToken())).body.ticket;
        await new Promise((r) => setTimeout(r, 1200));
        expect((await tryUpgrade(`${g.wsUrl}?ticket=${late}`)).status).toBe(401);
        expect((await tryUpgrade(`${g.wsUrl}?ticket=not-a-ticket`)).status).toBe(401);
        expect((await ticketFor(g, 'garbage')).status).toBe(401);
        await c.close();
      } finally {
        await close(g);
      }
    });

    it('redeems each of 200 fresh tickets exactly once, whichever thread issued or redeems it', async () => {
      const g = await plainGateway();
      // One TCP connection per request: with worker threads the kernel spreads them over both.
      const issued = await Promise.all(Array.from({ length: 200 }, (_, i) => request(`${g.httpUrl}/v1/tickets`, 'POST', undefined, { authorization: `Bearer ${userToken('*', `t${i}`)}` })));
      expect(issued.map((r) => r.status)).toEqual(Array(200).fill(201));
      if (g.workers > 1) expect(new Set(issued.map((r) => r.worker)).size).toBe(g.workers);
      const tickets = issued.map((r) => (r.body as { ticket: string }).ticket);
      const first = await Promise.all(tickets.map((t) => tryUpgrade(`${g.wsUrl}?ticket=${t}`)));
      expect(first.map((r) => r.status)).toEqual(Array(200).fill(101));
      const again = await Promise.all(tickets.map((t) => tryUpgrade(`${g.wsUrl}?ticket=${t}`)));
      expect(again.map((r) => r.status)).toEqual(Array(200).fill(401));
      for (const r of first) r.ws!.close();
    });

    it.each([
      { store: 'this process', env: (): Record<string, string> => ({}) },
      { store: 'Redis', env: (): Record<string, string> => ({ REDIS_URL: ticketRedis.url }) },
    ])('bounds the tickets one user may be issued, and a user at the bound takes nothing from another ($store)', async ({ env }) => {
      const g = await shape.start({ TICKETS_PER_USER: '5', TICKET_TTL_S: '30', ...env() });
      try {
        // Users of their own: the Redis store's count outlives one gateway (it is the users', not the instance's).
        const run = randomGuid();
        const ask = (user: string) => request(`${g.httpUrl}/v1/tickets`, 'POST', undefined, { authorization: `Bearer ${userToken('*', `${user}-${run}`)}` });
        const mine = await Promise.all(Array.from({ length: 8 }, () => ask('hoarder')));
        expect(mine.filter((r) => r.status === 201)).toHaveLength(5);
        const refused = mine.filter((r) => r.status !== 201);
        expect(refused.map((r) => [r.status, r.body.error.code])).toEqual(Array(3).fill([429, 'RATE_LIMITED']));
        for (const r of refused) expect(Number(r.headers['retry-after'])).toBeGreaterThanOrEqual(1);
        const theirs = await ask('bystander');
        expect(theirs.status).toBe(201);
        // Nothing was evicted: every ticket issued still redeems, once.
        const tickets = [...mine.filter((r) => r.status === 201), theirs].map((r) => r.body.ticket as string);
        const opened = await Promise.all(tickets.map((t) => tryUpgrade(`${g.wsUrl}?ticket=${t}`)));
        expect(opened.map((o) => o.status)).toEqual(Array(6).fill(101));
        for (const o of opened) o.ws!.close();
      } finally {
        await close(g);
      }
    });

    it('lets the browser origins ALLOWED_ORIGINS admits fetch tickets across origins (CORS), and no others', async () => {
      const g = await shape.start({ ALLOWED_ORIGINS: 'https://app.example.com' });
      try {
        const preflight = (origin: string) => request(`${g.httpUrl}/v1/tickets`, 'OPTIONS', undefined, { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization' });
        const ok = await preflight('https://app.example.com');
        expect(ok.status).toBe(204);
        expect(ok.headers).toMatchObject({ 'access-control-allow-origin': 'https://app.example.com', 'access-control-allow-methods': 'POST', 'access-control-allow-headers': 'authorization' });
        const evil = await preflight('https://evil.example');
        expect(evil.status).toBe(403);
        expect(evil.headers['access-control-allow-origin']).toBeUndefined();
        const issued = await request(`${g.httpUrl}/v1/tickets`, 'POST', undefined, { origin: 'https://app.example.com', authorization: `Bearer ${userToken()}` });
        expect(issued.status).toBe(201);
        expect(issued.headers).toMatchObject({ 'access-control-allow-origin': 'https://app.example.com', 'access-control-expose-headers': 'retry-after' });
        const refused = await request(`${g.httpUrl}/v1/tickets`, 'POST', undefined, { origin: 'https://app.example.com', authorization: 'Bearer nope' });
        expect(refused.status).toBe(401);
        expect(refused.headers['access-control-allow-origin']).toBe('https://app.example.com');
      } finally {
        await close(g);
      }
    });

    it('with Redis, a ticket issued by one instance is redeemed once on another', async () => {
      const redis = await startRedis();
      const [a, b] = await Promise.all([shape.start({ REDIS_URL: redis.url }), shape.start({ REDIS_URL: redis.url })]);
      try {
        const { ticket } = (await ticketFor(a, userToken('*', 'frank'))).body;
        const c = await connect(`${b.wsUrl}?ticket=${ticket}`, null);
        expect((await c.request({ type: 'ping', id: 'p' }, 'pong')).type).toBe('pong');
        expect((await tryUpgrade(`${a.wsUrl}?ticket=${ticket}`)).status).toBe(401);
        await c.close();
      } finally {
        await close(a, b);
        await redis.stop();
      }
    });
  });

  describe('producer HTTP API rules', () => {
    it('honours the projects claim of publish tokens', async () => {
      const g = await plainGateway();
      const [mine, other] = [randomGuid(), randomGuid()];
      const token = producerToken([mine]);
      expect((await postEvent(g.httpUrl, mine, { type: 'project_message', data: {} }, token)).status).toBe(202);
      expect(await postEvent(g.httpUrl, other, { type: 'project_message', data: {} }, token)).toMatchObject({ status: 403, body: { error: { code: 'FORBIDDEN' } } });
      expect((await postEvent(g.httpUrl, other, { type: 'project_message', data: {} }, producerToken('*'))).status).toBe(202);
    });

    it('checks the token before reading the body, requires JSON, and refuses ambiguous framing', async () => {
      const g = await plainGateway();
      const path = `/v1/projects/${randomGuid()}/events`;
      // 50 MB announced, a few bytes sent: the 401 comes without waiting for (or reading) the rest.
      const anonymous = await rawRequest(g.port, `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\n`, '{"type":', 5000);
      expect(anonymous.status).toBe(401);
      const auth = `Authorization: Bearer ${producerToken()}\r\n`;
      const body = '{"type":"project_message","data":{}}';
      const text = await rawRequest(g.port, `POST ${path} HTTP/1.1\r\nHost: x\r\n${auth}Content-Type: text/plain\r\nContent-Length: ${body.length}\r\n`, body);
      expect(text.status).toBe(415);
      expect(text.text).toContain('UNSUPPORTED_MEDIA_TYPE');
      const twice = await rawRequest(g.port, `POST ${path} HTTP/1.1\r\nHost: x\r\n${auth}Content-Type: application/json\r\nContent-Length: ${body.length}\r\nContent-Length: ${body.length}\r\n`, body);
      expect(twice.status).toBe(400);
      expect(twice.text).toContain('MALFORMED_REQUEST');
      // These two never reach a handler: uWS's parser closes the connection (status 0: no answer).
      const both = await rawRequest(g.port, `POST ${path} HTTP/1.1\r\nHost: x\r\n${auth}Content-Type: application/json\r\nContent-Length: ${body.length}\r\nTransfer-Encoding: chunked\r\n`, body);
      expect([0, 400]).toContain(both.status);
      const gzip = await rawRequest(g.port, `POST ${path} HTTP/1.1\r\nHost: x\r\n${auth}Content-Type: application/json\r\nTransfer-Encoding: gzip\r\n`, body);
      expect([0, 400]).toContain(gzip.status);
      const chunked = await rawRequest(g.port, `POST ${path} HTTP/1.1\r\nHost: x\r\n${auth}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n`, `${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`);
      expect(chunked.status).toBe(202);
      const ok = await rawRequest(g.port, `POST ${path} HTTP/1.1\r\nHost: x\r\n${auth}Content-Type: application/json; charset=utf-8\r\nContent-Length: ${body.length}\r\n`, body);
      expect(ok.status).toBe(202);
    });

    it('limits requests per principal with 429 and Retry-After, whatever token or spelling of it the principal uses', async () => {
      const g = await shape.start({ HTTP_RATE_LIMIT_PER_S: '1', HTTP_RATE_LIMIT_BURST: '2' });
      try {
        const guid = randomGuid();
        const token = producerToken();
        const statuses = [];
        for (let i = 0; i < 3; i++) statuses.push((await postEvent(g.httpUrl, guid, { type: 'project_message', data: { i } }, token)).status);
        expect(statuses).toEqual([202, 202, 429]);
        const res = await fetch(`${g.httpUrl}/v1/projects/${guid}/events`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: '{}' });
        expect(res.status).toBe(429);
        expect(Number(res.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
        // Another token of the same principal shares the budget; another principal has its own.
        expect((await postEvent(g.httpUrl, guid, { type: 'project_message', data: {} }, producerToken([guid]))).status).toBe(429);
        expect((await postEvent(g.httpUrl, guid, { type: 'project_message', data: {} }, producerToken([guid], 'other-service'))).status).toBe(202);
        // A signature's other base64url spellings (the spare bits of its last character) are refused, not a fresh key.
        const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
        const fresh = producerToken('*', 'spelled');
        const last = alphabet.indexOf(fresh.at(-1)!);
        const spellings = [0, 1, 2, 3].map((k) => fresh.slice(0, -1) + alphabet[(last & ~3) | k]);
        const answers = await Promise.all(spellings.map((t) => postEvent(g.httpUrl, guid, { type: 'project_message', data: {} }, t)));
        expect(answers.map((a) => a.status).sort()).toEqual([202, 401, 401, 401]);
      } finally {
        await close(g);
      }
    });
  });

  describe('Idempotency-Keys per principal', () => {
    for (const bus of ['in-process', 'Redis'] as const) {
      it(`a key is its principal's own: another principal can neither replay, read nor block it; each is bounded (${bus} bus)`, async () => {
        const g = await shape.start({ IDEMPOTENCY_KEYS_PER_PRODUCER: '3', ...(bus === 'Redis' ? { REDIS_URL: ticketRedis.url } : {}) });
        try {
          const room = randomGuid();
          const c = await connect(g.wsUrl, userToken());
          await c.join(room);
          // Two backends, two tokens of different `sub`; both may publish to every project.
          const [a, b] = [producerToken('*', 'service-a'), producerToken('*', 'service-b')];
          const post = async (token: string, key: string | null, n: unknown) => {
            const res = await request(`${g.httpUrl}/v1/projects/${room}/events`, 'POST', { type: 'project_message', data: { n } }, { authorization: `Bearer ${token}`, ...(key ? { 'idempotency-key': key } : {}) });
            return { status: res.status, id: res.body?.id as string | undefined, code: res.body?.error?.code as string | undefined, replayed: res.headers['idempotent-replayed'] === 'true', retryAfter: res.headers['retry-after'] };
          };
          const a1 = await post(a, 'order-1', 'a1');
          // B sends A's key with A's very body: appended as B's own (not A's id, not "replayed").
          const b1 = await post(b, 'order-1', 'a1');
          expect([a1, b1].map((r) => [r.status, r.replayed])).toEqual([[202, false], [202, false]]);
          expect(b1.id).not.toBe(a1.id);
          // B sends A's key with another body: no 422 (which would tell B that A used the key).
          const a2 = await post(a, 'order-2', 'a2');
          const b2 = await post(b, 'order-2', 'b2');
          expect([a2.status, b2.status, b2.replayed]).toEqual([202, 202, false]);
          // Each retry gets its own principal's answer.
          expect(await post(a, 'order-1', 'a1')).toMatchObject({ status: 202, id: a1.id, replayed: true });
          expect(await post(b, 'order-1', 'a1')).toMatchObject({ status: 202, id: b1.id, replayed: true });
          expect(await post(b, 'order-2', 'b2')).toMatchObject({ status: 202, id: b2.id, replayed: true });
          expect(await post(a, 'order-2', 'b2')).toMatchObject({ status: 422, code: 'IDEMPOTENCY_KEY_REUSED' });
          // A's third key fills its bound (3): a fourth is refused, nothing appended, until its oldest expires.
          const a3 = await post(a, 'order-3', 'a3');
          expect(a3.status).toBe(202);
          const full = await post(a, 'order-4', 'a4');
          expect(full).toMatchObject({ status: 429, code: 'IDEMPOTENCY_KEYS_EXHAUSTED', replayed: false });
          expect(Number(full.retryAfter)).toBeGreaterThanOrEqual(3599);
          expect(Number(full.retryAfter)).toBeLessThanOrEqual(3600);
          // A's held keys still replay, A publishes without a key, and B is not held back by A.
          expect(await post(a, 'order-1', 'a1')).toMatchObject({ status: 202, id: a1.id, replayed: true });
          const unkeyed = await post(a, null, 'a-unkeyed');
          const b3 = await post(b, 'order-4', 'b3');
          expect([unkeyed.status, b3.status, b3.replayed]).toEqual([202, 202, false]);
          expect((await post(b, 'order-5', 'b4')).code).toBe('IDEMPOTENCY_KEYS_EXHAUSTED');
          // The room got each appended event once, and nothing else.
          const sentinel = await post(b, null, 'sentinel');
          await c.waitForEvents(room, 8);
          await new Promise((r) => setTimeout(r, 100));
          expect(c.events(room).map((e) => [e.id, e.data.n])).toEqual([
            [a1.id, 'a1'], [b1.id, 'a1'], [a2.id, 'a2'], [b2.id, 'b2'], [a3.id, 'a3'], [unkeyed.id, 'a-unkeyed'], [b3.id, 'b3'], [sentinel.id, 'sentinel'],
          ]);
          await c.close();
        } finally {
          await close(g);
        }
      });
    }
  });

  describe('frame size and memory budget', () => {
    it('closes a client frame over MAX_PAYLOAD_BYTES with 1009', async () => {
      const g = await shape.start({ MAX_PAYLOAD_BYTES: '1024' });
      try {
        const c = await connect(g.wsUrl, userToken());
        c.ws.send(JSON.stringify({ type: 'ping', id: 'x'.repeat(1100) }));
        expect((await c.closed).code).toBe(1009);
      } finally {
        await close(g);
      }
    });

    it('drops the clients holding the most unsent bytes when all buffers together pass MAX_BUFFERED_BYTES; they resume losslessly, others keep flowing', async () => {
      // WS_COMPRESSION off: the repeated-letter chunks below deflate ~300 times, and the buffers would never fill.
      const g = await shape.start({ MAX_BUFFERED_BYTES: '1048576', MAX_BACKPRESSURE_BYTES: '8388608', MAX_EVENT_DATA_BYTES: '65536', WS_COMPRESSION: 'off', ...NO_OVERLOAD_BOUND });
      try {
        const [flooded, calm] = [randomGuid(), randomGuid()];
        const deaf = await Promise.all(Array.from({ length: 4 }, () => connect(g.wsUrl, userToken())));
        await Promise.all(deaf.map((c) => c.join(flooded)));
        const first = await g.publish(flooded, { type: 'project_message', data: { n: -1 } });
        await Promise.all(deaf.map((c) => c.waitForEvents(flooded, 1)));
        for (const c of deaf) (c.ws as unknown as { _socket: net.Socket })._socket.pause();
        const reader = await connect(g.wsUrl, userToken());
        await reader.join(calm);

        const ids: string[] = [];
        const chunk = 'x'.repeat(60_000);
        for (let i = 0; i < 40; i++) {
          ids.push(...(await g.publishMany(flooded, Array.from({ length: 5 }, (_, k) => ({ type: 'project_message' as const, data: { n: i * 5 + k, chunk } })))));
          await g.publish(calm, { type: 'project_message', data: { i } });
          await new Promise((r) => setTimeout(r, 20));
        }
        await until(async () => /ws_slow_consumers_dropped_total\{[^}]*reason="process_budget"[^}]*\} [1-9]/.test(await (await fetch(`${g.httpUrl}/metrics`)).text()), 5000, 'the budget to drop a slow consumer');
        expect(await reader.waitForEvents(calm, 40)).toHaveLength(40);

        // A paused socket sees its end only once it reads again.
        for (const c of deaf) (c.ws as unknown as { _socket: net.Socket })._socket.resume();
        await until(() => deaf.some((c) => c.ws.readyState === WebSocket.CLOSED), 10_000, 'a dropped client to see its connection end');
        // Whoever was dropped resumes from the last id it saw (the first event) and gets every one after.
        const resumed = await connect(g.wsUrl, userToken());
        const ack = await resumed.join(flooded, first);
        expect(ack.data).toMatchObject({ recovered: true });
        await resumed.waitForEvents(flooded, ids.length);
        expect(resumed.events(flooded).map((e) => e.id)).toEqual(ids);
        for (const c of deaf) c.ws.terminate();
        await Promise.all([resumed.close(), reader.close()]);
      } finally {
        await close(g);
      }
    });

    it('cuts a socket whose unsent bytes make no progress for WRITE_TIMEOUT_S, well under every byte limit; a reader of the same room stays; the cut one resumes losslessly', async () => {
      // WS_COMPRESSION off: the repeated-letter chunks below deflate ~300 times, and the kernel would take them all.
      const g = await shape.start({ WRITE_TIMEOUT_S: '1', MAX_BUFFERED_BYTES: '1073741824', MAX_BACKPRESSURE_BYTES: '268435456', MAX_EVENT_DATA_BYTES: '65536', WS_COMPRESSION: 'off', ...NO_OVERLOAD_BOUND });
      try {
        const room = randomGuid();
        const deaf = await connect(g.wsUrl, userToken());
        const reader = await connect(g.wsUrl, userToken());
        await Promise.all([deaf.join(room), reader.join(room)]);
        const first = await g.publish(room, { type: 'project_message', data: { n: -1 } });
        await deaf.waitForEvents(room, 1);
        (deaf.ws as unknown as { _socket: net.Socket })._socket.pause();
        const chunk = 'x'.repeat(60_000);
        const ids = [first];
        // ~12 MB: more than the loopback kernel buffers take, so uWS holds the rest (far under the byte limits).
        for (let i = 0; i < 40; i++) {
          ids.push(...(await g.publishMany(room, Array.from({ length: 5 }, (_, k) => ({ type: 'project_message' as const, data: { n: i * 5 + k, chunk } })))));
          await new Promise((r) => setTimeout(r, 5));
        }
        const metricsText = async () => (await fetch(`${g.httpUrl}/metrics`)).text();
        await until(async () => /ws_slow_consumers_dropped_total\{[^}]*reason="write_timeout"[^}]*\} 1\b/.test(await metricsText()), 6000, 'the write timeout to cut the deaf socket');
        expect(await metricsText()).not.toMatch(/reason="process_budget"[^}]*\} [1-9]/);
        expect((await reader.waitForEvents(room, ids.length)).map((e) => e.id)).toEqual(ids);
        expect(reader.ws.readyState).toBe(WebSocket.OPEN);

        (deaf.ws as unknown as { _socket: net.Socket })._socket.resume();
        expect((await deaf.closed).code).toBe(1006);
        const got = deaf.events(room).map((e) => e.id!);
        expect(got).toEqual(ids.slice(0, got.length));
        const again = await connect(g.wsUrl, userToken());
        expect((await again.join(room, got.at(-1)!)).data).toMatchObject({ recovered: true });
        const rest = await again.waitForEvents(room, ids.length - got.length);
        expect([...got, ...rest.map((e) => e.id!)]).toEqual(ids);
        await Promise.all([again.close(), reader.close()]);
      } finally {
        await close(g);
      }
    });

    it('bounds retained history in bytes as well as in events', async () => {
      const g = await shape.start({ MEMORY_BUS_MAX_BYTES: '1048576', RECENT_BYTES_PER_ROOM: '65536', ...NO_OVERLOAD_BOUND });
      try {
        const room = randomGuid();
        const watcher = await connect(g.wsUrl, userToken());
        await watcher.join(room);
        const chunk = 'x'.repeat(60_000);
        const ids: string[] = [];
        for (let i = 0; i < 40; i++) ids.push(await g.publish(room, { type: 'project_message', data: { i, chunk } }));
        await watcher.waitForEvents(room, 40);
        // 40 × 60 KB is 2.4 MB: the 1 MiB bus kept only the newest ~16; older resumes must reload.
        const old = await connect(g.wsUrl, userToken());
        expect((await old.join(room, ids[0])).data).toMatchObject({ recovered: false });
        // A recent position is still served, from the bus's history (the room window holds about one event).
        const recent = await connect(g.wsUrl, userToken());
        expect((await recent.join(room, ids[33])).data).toMatchObject({ recovered: true, replayed: 6 });
        expect(recent.events(room).map((e) => e.id)).toEqual(ids.slice(34));
        await Promise.all([watcher.close(), old.close(), recent.close()]);
      } finally {
        await close(g);
      }
    });
  });
});
