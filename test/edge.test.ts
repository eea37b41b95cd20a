import { createSigner } from 'fast-jwt';
import { describe, expect, it } from 'vitest';
import { freePort } from './helpers/ports.js';
import WebSocket from 'ws';
import { connect, postEvent, randomGuid, SECRET, sign, TestClient, until, userToken } from './helpers/gateway.js';
import { connectOnWorker, connectPlaced } from './helpers/workers.js';
import { close, rawUpgrade, sharedPlainGateway, tryUpgrade } from './helpers/edge.js';
import { request, SHAPES, type Served } from './helpers/topology.js';
import { startRedis } from './helpers/redis.js';

/**
 * The edge policy: caps, origins, proxies, credentials, in-band refresh; in every shape the gateway
 * runs in (one thread, and WORKERS=2: the limits are per process). Tickets, the producer HTTP API's
 * rules, Idempotency-Keys and the frame and memory budgets are in edge.api.test.ts (one file was the
 * suite's longest: two let both vitest workers share it).
 */

describe.each(SHAPES)('$name', (shape) => {
  const plainGateway = sharedPlainGateway(shape);

  describe('metrics', () => {
    it('serves /metrics on METRICS_PORT only, and keeps the close-code series to the documented codes however clients close', async () => {
      const metricsPort = await freePort();
      const g = await shape.start({ METRICS_PORT: String(metricsPort) });
      try {
        expect((await request(`${g.httpUrl}/metrics`, 'GET')).status).toBe(404);
        // 300 clients, each closing with a code of its own choosing in the application's range (4000-4999),
        // none of the documented ones.
        const documented = new Set([4000, 4401, 4408, 4429]);
        const codes = Array.from({ length: 320 }, (_, i) => 4001 + ((i * 37) % 998)).filter((c) => !documented.has(c)).slice(0, 300);
        await Promise.all(
          codes.map(async (code) => {
            const c = await connect(g.wsUrl, userToken('*', `closer-${code}`));
            c.ws.close(code, 'my own code');
            await c.closed;
          }),
        );
        let text = '';
        await until(async () => {
          text = (await request(`http://127.0.0.1:${metricsPort}/metrics`, 'GET')).text;
          return /ws_connections_closed_total\{[^}]*code="other"[^}]*\} 300\b/.test(text);
        }, 5000, 'the 300 closes counted');
        // The documented codes' series exist from the start at 0 (src/metrics.ts zeroKnownSeries);
        // no client-chosen code got one: the 300 are all under "other".
        const series = text.split('\n').filter((l) => l.startsWith('ws_connections_closed_total{'));
        const byCode = new Map(series.map((l) => [/code="([^"]*)"/.exec(l)?.[1], Number(l.slice(l.lastIndexOf(' ') + 1))]));
        expect([...byCode.keys()].sort()).toEqual(['1000', '1001', '1005', '1006', '1009', '1011', '4000', '4401', '4403', '4408', '4429', 'other']);
        expect([...byCode].filter(([code, n]) => code !== 'other' && n !== 0)).toEqual([]);
        expect(byCode.get('other')).toBe(300);
      } finally {
        await close(g);
      }
    });
  });

  describe('connection caps', () => {
    it('caps connections per user, per address and per instance with 429 and Retry-After', async () => {
      const g = await shape.start({ MAX_CONNECTIONS_PER_USER: '2', MAX_CONNECTIONS_PER_IP: '3', MAX_CONNECTIONS: '4' });
      try {
        const url = (sub: string) => `${g.wsUrl}?token=${userToken('*', sub)}`;
        const alice = [await tryUpgrade(url('alice')), await tryUpgrade(url('alice'))];
        expect(alice.map((r) => r.status)).toEqual([101, 101]);
        const third = await tryUpgrade(url('alice'));
        expect(third).toMatchObject({ status: 429, code: 'TOO_MANY_CONNECTIONS' });
        expect(Number(third.retryAfter)).toBeGreaterThan(0);
        expect((await tryUpgrade(url('bob'))).status).toBe(101);
        // Three from 127.0.0.1 now: the address cap refuses a fourth user too.
        expect(await tryUpgrade(url('carol'))).toMatchObject({ status: 429, code: 'TOO_MANY_CONNECTIONS' });
        // A slot frees when a connection closes.
        alice[0]!.ws!.close();
        await until(async () => (await tryUpgrade(url('carol'))).status === 101, 3000, 'a freed slot');
      } finally {
        await close(g);
      }
    });

    it('counts addresses behind a trusted proxy by X-Forwarded-For, and ignores that header from anyone else', async () => {
      const [trusting, untrusting] = await Promise.all([
        shape.start({ MAX_CONNECTIONS_PER_IP: '1', TRUSTED_PROXIES: '127.0.0.1/32' }),
        shape.start({ MAX_CONNECTIONS_PER_IP: '1', TRUSTED_PROXIES: '10.0.0.0/8' }),
      ]);
      try {
        const url = (g: Served) => `${g.wsUrl}?token=${userToken()}`;
        expect((await tryUpgrade(url(trusting), { 'x-forwarded-for': '203.0.113.1' })).status).toBe(101);
        expect((await tryUpgrade(url(trusting), { 'x-forwarded-for': '203.0.113.2' })).status).toBe(101);
        // A client-supplied hop in front of the proxy's: the right-most untrusted address counts.
        expect((await tryUpgrade(url(trusting), { 'x-forwarded-for': '198.51.100.7, 203.0.113.1' })).status).toBe(429);
        // The peer (127.0.0.1) is not a trusted proxy here: the header is ignored, so both count as 127.0.0.1.
        expect((await tryUpgrade(url(untrusting), { 'x-forwarded-for': '203.0.113.1' })).status).toBe(101);
        expect((await tryUpgrade(url(untrusting), { 'x-forwarded-for': '203.0.113.2' })).status).toBe(429);
      } finally {
        await close(trusting, untrusting);
      }
    });

    it('admits exactly MAX_CONNECTIONS_PER_USER connections of one user however many threads serve them', async () => {
      const g = await shape.start({ MAX_CONNECTIONS_PER_USER: '20' });
      const held: TestClient[] = [];
      try {
        const token = userToken('*', 'greedy');
        // Which thread takes a connection is the kernel's choice: place the cap's share on each
        // thread by hand, so the cap is filled from every thread in every run.
        for (let w = 0; w < g.workers; w++) {
          for (let i = 0; i < 20 / g.workers; i++) {
            held.push(g.workers > 1 ? await connectOnWorker(g.wsUrl, token, w) : (await connectPlaced(g.wsUrl, token)).client);
          }
        }
        // Past the cap, every thread refuses: try until each has answered at least twice.
        const refusedBy = new Map<string | undefined, number>();
        for (let i = 0; i < 200 && (refusedBy.size < g.workers || [...refusedBy.values()].some((n) => n < 2)); i++) {
          const t = await tryUpgrade(`${g.wsUrl}?token=${token}`);
          if (t.status === 101) t.ws!.close();
          expect(t).toMatchObject({ status: 429, code: 'TOO_MANY_CONNECTIONS' });
          refusedBy.set(t.worker, (refusedBy.get(t.worker) ?? 0) + 1);
        }
        expect(refusedBy.size).toBe(g.workers);
        // A slot freed on one thread is free to the other.
        await held.shift()!.close();
        await until(async () => {
          const t = await tryUpgrade(`${g.wsUrl}?token=${token}`);
          if (t.status === 101) held.push(new TestClient(t.ws!, false));
          return t.status === 101;
        }, 3000, 'the freed slot');
      } finally {
        await Promise.all(held.map((c) => c.close()));
        await close(g);
      }
    });

    it('refuses a user closed for flooding on every thread for the penalty time', async () => {
      const g = await shape.start({ RATE_LIMIT_PER_S: '1', RATE_LIMIT_BURST: '2', RATE_LIMIT_PENALTY_S: '30', TRUSTED_PROXIES: '127.0.0.1' });
      try {
        const token = userToken('*', 'noisy');
        // The flood and the later attempts come from different client addresses: it is the user who is refused.
        const flooder = await tryUpgrade(`${g.wsUrl}?token=${token}`, { 'x-forwarded-for': '203.0.113.50' });
        const closed = new Promise<number>((r) => flooder.ws!.once('close', (code) => r(code)));
        for (let i = 0; i < 20; i++) flooder.ws!.send(JSON.stringify({ type: 'ping', id: String(i) }));
        expect(await closed).toBe(4429);
        // Which thread takes an upgrade is the kernel's choice (SO_REUSEPORT): try until every
        // thread has answered (10 at least, 200 at most); every answer must be a refusal.
        const back: Awaited<ReturnType<typeof tryUpgrade>>[] = [];
        while (back.length < 200 && (back.length < 10 || new Set(back.map((b) => b.worker)).size < g.workers)) {
          back.push(await tryUpgrade(`${g.wsUrl}?token=${token}`, { 'x-forwarded-for': `198.51.100.${(back.length % 250) + 1}` }));
        }
        expect(back.map((b) => b.status)).toEqual(Array(back.length).fill(429));
        if (g.workers > 1) expect(new Set(back.map((b) => b.worker)).size).toBe(g.workers);
        // Another user is not affected.
        expect((await tryUpgrade(`${g.wsUrl}?token=${userToken('*', 'quiet')}`, { 'x-forwarded-for': '198.51.100.1' })).status).toBe(101);
      } finally {
        await close(g);
      }
    });

    it('with Redis, refuses a flooder on another instance the moment it sees its 4429, even when Redis is slow to pass the penalty on', async () => {
      const redis = await startRedis();
      const env = { REDIS_URL: redis.url, RATE_LIMIT_PER_S: '1', RATE_LIMIT_BURST: '2', RATE_LIMIT_PENALTY_S: '30', TRUSTED_PROXIES: '127.0.0.1' };
      const [a, b] = await Promise.all([shape.start(env), shape.start(env)]);
      try {
        const token = userToken('*', 'hopper');
        const from = { 'x-forwarded-for': '203.0.113.60' };
        const flooder = await tryUpgrade(`${a.wsUrl}?token=${token}`, from);
        // Behind a load balancer the flooder's next upgrade may reach B at once. Redis holding
        // PUBLISH for 60 ms (CLIENT PAUSE WRITE) makes the window wide: A must not close the
        // socket before B can know, or this upgrade gets 101 (a reconnect takes a few ms here). A
        // waits at most 250 ms for Redis (src/ws/flooders.ts); 150 ms of pause left too little of
        // that to a loaded machine (101 once in a full run).
        await redis.cli('CLIENT', 'PAUSE', '60', 'WRITE');
        const back = new Promise<Awaited<ReturnType<typeof tryUpgrade>>>((resolve, reject) =>
          flooder.ws!.once('close', (code) => (code === 4429 ? resolve(tryUpgrade(`${b.wsUrl}?token=${token}`, from)) : reject(new Error(`closed ${code}`)))),
        );
        for (let i = 0; i < 20; i++) flooder.ws!.send(JSON.stringify({ type: 'ping', id: String(i) }));
        expect(await back).toMatchObject({ status: 429, code: 'RATE_LIMITED' });
        expect((await tryUpgrade(`${a.wsUrl}?token=${token}`, from)).status).toBe(429);
        // Another user from another address is not affected.
        expect((await tryUpgrade(`${b.wsUrl}?token=${userToken('*', 'quiet')}`, { 'x-forwarded-for': '198.51.100.9' })).status).toBe(101);
        // Redis holding the PUBLISH far longer (30 s): the flooder is closed all the same (the wait is
        // bounded: 250 ms here, and the Redis client's own command timeout behind it).
        const second = await tryUpgrade(`${a.wsUrl}?token=${userToken('*', 'hopper2')}`, { 'x-forwarded-for': '203.0.113.61' });
        await redis.cli('CLIENT', 'PAUSE', '30000', 'WRITE');
        try {
          const closed = new Promise<number>((r) => second.ws!.once('close', (code) => r(code)));
          for (let i = 0; i < 20; i++) second.ws!.send(JSON.stringify({ type: 'ping', id: String(i) }));
          expect(await closed).toBe(4429);
        } finally {
          await redis.cli('CLIENT', 'UNPAUSE');
        }
      } finally {
        await close(a, b);
        await redis.stop();
      }
    });

    it('reads every X-Forwarded-For line: the client is the right-most untrusted hop over all of them', async () => {
      const g = await shape.start({ MAX_CONNECTIONS_PER_IP: '1', TRUSTED_PROXIES: '127.0.0.1' });
      const held: { release(): void }[] = [];
      try {
        const token = userToken();
        // A proxy that appends a line of its own (HAProxy's option forwardfor) after the client's.
        const a = await rawUpgrade(g.port, token, [['X-Forwarded-For', '198.51.100.1'], ['X-Forwarded-For', '203.0.113.9']]);
        held.push(a);
        expect(a.status).toBe(101);
        // The client chose another first line: still 203.0.113.9, still one connection at a cap of 1.
        const b = await rawUpgrade(g.port, token, [['X-Forwarded-For', '198.51.100.2'], ['X-Forwarded-For', '203.0.113.9']]);
        held.push(b);
        expect(b.status).toBe(429);
        const c = await rawUpgrade(g.port, token, [['X-Forwarded-For', '203.0.113.9'], ['X-Forwarded-For', '198.51.100.3']]);
        held.push(c);
        expect(c.status).toBe(101);
      } finally {
        for (const h of held) h.release();
        await close(g);
      }
    });

    it('counts the spellings of one address, and the addresses of one IPv6 /64, as one client', async () => {
      const g = await shape.start({ MAX_CONNECTIONS_PER_IP: '3', TRUSTED_PROXIES: '127.0.0.1' });
      try {
        const url = `${g.wsUrl}?token=${userToken()}`;
        const v4 = await Promise.all(['203.0.113.5', '::ffff:203.0.113.5', '0:0:0:0:0:ffff:cb00:7105', '::FFFF:CB00:7105'].map((a) => tryUpgrade(url, { 'x-forwarded-for': a })));
        expect(v4.map((r) => r.status).sort()).toEqual([101, 101, 101, 429]);
        const v6 = await Promise.all(Array.from({ length: 8 }, (_, i) => tryUpgrade(url, { 'x-forwarded-for': `2001:db8:7:1::${(i + 1).toString(16)}` })));
        expect(v6.filter((r) => r.status === 101)).toHaveLength(3);
        // Another /64 is another client.
        expect((await tryUpgrade(url, { 'x-forwarded-for': '2001:db8:7:2::1' })).status).toBe(101);
        for (const r of [...v4, ...v6]) r.ws?.close();
      } finally {
        await close(g);
      }
    });

    it('limits upgrades per address per second, and keeps a flooder closed with 4429 out for the penalty time', async () => {
      const g = await shape.start({ UPGRADES_PER_IP_PER_S: '1', UPGRADES_PER_IP_BURST: '3', RATE_LIMIT_PER_S: '1', RATE_LIMIT_BURST: '2', RATE_LIMIT_PENALTY_S: '2' });
      try {
        const url = `${g.wsUrl}?token=${userToken('*', 'flooder')}`;
        const first = await tryUpgrade(url);
        expect(first.status).toBe(101);
        expect([(await tryUpgrade(url)).status, (await tryUpgrade(url)).status]).toEqual([101, 101]);
        const limited = await tryUpgrade(url);
        expect(limited).toMatchObject({ status: 429, code: 'RATE_LIMITED' });
        expect(Number(limited.retryAfter)).toBeGreaterThanOrEqual(1);

        const closed = new Promise<number>((r) => first.ws!.once('close', (code) => r(code)));
        for (let i = 0; i < 20; i++) first.ws!.send(JSON.stringify({ type: 'ping', id: String(i) }));
        expect(await closed).toBe(4429);
        await new Promise((r) => setTimeout(r, 1100)); // the upgrade bucket has refilled by now
        const back = await tryUpgrade(url);
        expect(back).toMatchObject({ status: 429, code: 'RATE_LIMITED' });
        expect(Number(back.retryAfter)).toBeGreaterThanOrEqual(1);
      } finally {
        await close(g);
      }
    });
  });

  describe('origins and credentials', () => {
    it('accepts only allowed browser origins; clients without Origin are not browsers and pass', async () => {
      const g = await shape.start({ ALLOWED_ORIGINS: 'https://app.example.com,http://localhost:3000' });
      try {
        const url = `${g.wsUrl}?token=${userToken()}`;
        expect(await tryUpgrade(url, { origin: 'https://evil.example' })).toMatchObject({ status: 403, code: 'FORBIDDEN' });
        expect((await tryUpgrade(url, { origin: 'https://app.example.com' })).status).toBe(101);
        expect((await tryUpgrade(url, { origin: 'http://localhost:3000' })).status).toBe(101);
        expect((await tryUpgrade(url)).status).toBe(101);
      } finally {
        await close(g);
      }
    });

    it('refuses a credential given in two places', async () => {
      const g = await plainGateway();
      const token = userToken();
      const both = await tryUpgrade(`${g.wsUrl}?token=${token}`, { authorization: `Bearer ${token}` });
      expect(both).toMatchObject({ status: 401, code: 'UNAUTHORIZED' });
      expect((await tryUpgrade(`${g.wsUrl}?token=${token}&ticket=${'a'.repeat(43)}`)).status).toBe(401);
      expect((await tryUpgrade(g.wsUrl, { authorization: `Bearer ${token}` })).status).toBe(101);
    });
  });

  describe('auth_refresh', () => {
    it('renews the token in band: same connection, rooms re-checked, expiry follows the new token', async () => {
      const g = await shape.start({ JWT_CLOCK_TOLERANCE_S: '0' });
      try {
        const [a, b] = [randomGuid(), randomGuid()];
        const shortLived = createSigner({ key: SECRET, expiresIn: 2000 })({ sub: 'dana', projects: [a, b] });
        const c = await connect(g.wsUrl, shortLived);
        await c.join(a);
        await c.join(b);
        const ack = await c.request({ type: 'auth_refresh', id: 'r1', data: { token: sign({ sub: 'dana', projects: [a] }) } });
        expect(ack.type).toBe('auth_refresh');
        expect(ack.data.expiresAt).toBeGreaterThan(Date.now() + 3_000_000);
        expect(await c.next((f) => f.type === 'leave_project' && f.projectGuid === b)).toMatchObject({ data: { reason: 'access_revoked' } });
        await postEvent(g.httpUrl, a, { type: 'project_message', data: { n: 'a' } });
        await postEvent(g.httpUrl, b, { type: 'project_message', data: { n: 'b' } });
        await c.waitForEvents(a, 1);
        // Past the first token's expiry (by 500 ms at least, as a fixed 2.5 s after signing was):
        // still open, still receiving; b's events never came.
        const { exp } = JSON.parse(Buffer.from(shortLived.split('.')[1]!, 'base64url').toString()) as { exp: number };
        await new Promise((r) => setTimeout(r, Math.max(0, exp * 1000 + 500 - Date.now())));
        expect(c.ws.readyState).toBe(WebSocket.OPEN);
        await postEvent(g.httpUrl, a, { type: 'project_message', data: { n: 'a2' } });
        await c.waitForEvents(a, 2);
        expect(c.events(b)).toEqual([]);
        expect((await c.request({ type: 'join_project', id: 'j-b', projectGuid: b })).data.code).toBe('FORBIDDEN');
        await c.close();
      } finally {
        await close(g);
      }
    });

    it('closes with 4401 on a refresh with a bad token or another user\'s token', async () => {
      const g = await plainGateway();
      for (const token of [createSigner({ key: 'another-secret-entirely' })({ sub: 'dana', projects: '*' }), userToken('*', 'mallory')]) {
        const c = await connect(g.wsUrl, userToken('*', 'dana'));
        const refused = await c.request({ type: 'auth_refresh', id: 'r', data: { token } });
        expect(refused.data.code).toBe('UNAUTHORIZED');
        expect((await c.closed).code).toBe(4401);
      }
    });
  });

});
