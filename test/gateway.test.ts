import { createSigner } from 'fast-jwt';
import { generateKeyPairSync } from 'node:crypto';
import { request } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EVENT_TYPES } from '../src/protocol/messages.js';
import { connect, postEvent, producerToken, randomGuid, SECRET, sign, startGateway, until, upgradeStatus, userToken, type StartedGateway } from './helpers/gateway.js';

let g: StartedGateway;
beforeAll(async () => {
  g = await startGateway({ RATE_LIMIT_PER_S: '1000', RATE_LIMIT_BURST: '2000' });
});
afterAll(() => g.close());

describe('upgrade authentication', () => {
  const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');

  it('accepts a valid token from the query string and from Authorization: Bearer', async () => {
    expect(await upgradeStatus(g.wsUrl, userToken())).toBe(101);
    const c = await connect(g.wsUrl, null, { headers: { authorization: `Bearer ${userToken()}` } });
    const pong = await c.request({ type: 'ping', id: 'p1' }, 'pong');
    expect(pong.type).toBe('pong');
    await c.close();
  });

  it.each([
    ['missing', null],
    ['malformed', 'not-a-jwt'],
    ['garbage segments', 'aaa.bbb.ccc'],
    ['expired', createSigner({ key: SECRET })({ sub: 'u', projects: '*', exp: Math.floor(Date.now() / 1000) - 3600 })],
    ['wrongly signed', createSigner({ key: 'another-secret-entirely' })({ sub: 'u', projects: '*' })],
    ['alg none', `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ sub: 'u', projects: '*' })}.`],
    ['without sub', sign({ projects: '*' })],
  ])('answers a %s token with HTTP 401 and no WebSocket', async (_name, token) => {
    expect(await upgradeStatus(g.wsUrl, token)).toBe(401);
  });

  it('verifies RS256 tokens with JWT_PUBLIC_KEY and refuses the HS256 key-confusion trick', async () => {
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const pem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
    const rs = await startGateway({ JWT_SECRET: '', JWT_PUBLIC_KEY: pem, JWT_ISSUER: 'autocode-auth' });
    try {
      const good = createSigner({ key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), algorithm: 'RS256', iss: 'autocode-auth' });
      expect(await upgradeStatus(rs.wsUrl, good({ sub: 'u', projects: '*' }))).toBe(101);
      const wrongIssuer = createSigner({ key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), algorithm: 'RS256', iss: 'evil' });
      expect(await upgradeStatus(rs.wsUrl, wrongIssuer({ sub: 'u', projects: '*' }))).toBe(401);
      // fast-jwt alone skips the issuer check when the claim is absent.
      const noIssuer = createSigner({ key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), algorithm: 'RS256' });
      expect(await upgradeStatus(rs.wsUrl, noIssuer({ sub: 'u', projects: '*' }))).toBe(401);
      const confused = createSigner({ key: pem, algorithm: 'HS256', iss: 'autocode-auth' });
      expect(await upgradeStatus(rs.wsUrl, confused({ sub: 'u', projects: '*' }))).toBe(401);
    } finally {
      await rs.close();
    }
  });

  it('rejects an unsupported subprotocol with 400', async () => {
    await expect(connect(g.wsUrl, userToken(), { protocol: 'chat.v9' })).rejects.toMatchObject({ status: 400 });
  });
});

describe('client frames', () => {
  it('answers every client message type', async () => {
    const guid = randomGuid();
    const c = await connect(g.wsUrl, userToken());
    const pong = await c.request({ type: 'ping', id: 'ping-1' }, 'pong');
    expect(pong).toMatchObject({ type: 'pong', id: 'ping-1', projectGuid: null });
    expect(Math.abs(pong.data.serverTime - Date.now())).toBeLessThan(5000);
    expect(Number.isNaN(Date.parse(pong.timestamp))).toBe(false);

    const join = await c.request({ type: 'join_project', id: 'j1', projectGuid: guid });
    expect(join).toMatchObject({ type: 'join_project', id: 'j1', projectGuid: guid, data: { latestId: '0-0' } });

    const fb = await c.request({ type: 'user_feedback', id: 'f1', projectGuid: guid, data: { content: 'looks good' } }, 'user_feedback_response');
    expect(fb).toMatchObject({ type: 'user_feedback_response', id: 'f1', projectGuid: guid, data: { accepted: false, forwarded: false, reason: 'no agents-server configured' } });

    const leave = await c.request({ type: 'leave_project', id: 'l1', projectGuid: guid });
    expect(leave).toMatchObject({ type: 'leave_project', id: 'l1', projectGuid: guid });
    const again = await c.request({ type: 'leave_project', id: 'l2', projectGuid: guid });
    expect(again).toMatchObject({ type: 'error', id: 'l2', data: { code: 'NOT_JOINED' } });
    await c.close();
  });

  it('delivers every server event type as a full envelope', async () => {
    const guid = randomGuid();
    const c = await connect(g.wsUrl, userToken());
    await c.join(guid);
    const ids: string[] = [];
    for (const type of EVENT_TYPES) ids.push(await g.gw.publish(guid, { type, data: { kind: type } }));
    const events = await c.waitForEvents(guid, EVENT_TYPES.length);
    expect(events.map((e) => e.type)).toEqual([...EVENT_TYPES]);
    expect(events.map((e) => e.id)).toEqual(ids);
    for (const e of events) {
      expect(Object.keys(e).sort()).toEqual(['data', 'id', 'projectGuid', 'timestamp', 'type']);
      expect(e.projectGuid).toBe(guid);
      expect(e.data).toEqual({ kind: e.type });
    }
    await c.close();
  });

  it('names the project in lower case in error frames, whatever case the client used', async () => {
    const guid = randomGuid();
    const c = await connect(g.wsUrl, userToken());
    const err = await c.request({ type: 'user_feedback', id: 'case', projectGuid: guid.toUpperCase(), data: { content: '' } }, 'user_feedback_response');
    expect(err).toMatchObject({ type: 'error', projectGuid: guid, data: { code: 'INVALID_FRAME' } });
    await c.close();
  });

  it('answers FORBIDDEN for a project the token does not grant, for join and feedback', async () => {
    const mine = randomGuid();
    const theirs = randomGuid();
    const c = await connect(g.wsUrl, userToken([mine]));
    expect((await c.join(mine)).type).toBe('join_project');
    const denied = await c.request({ type: 'join_project', id: 'j2', projectGuid: theirs });
    expect(denied).toMatchObject({ type: 'error', id: 'j2', projectGuid: theirs, data: { code: 'FORBIDDEN' } });
    const fb = await c.request({ type: 'user_feedback', id: 'f2', projectGuid: theirs, data: { content: 'x' } });
    expect(fb.data.code).toBe('FORBIDDEN');
    // Upper-case GUIDs in the claim and the frame name the same project.
    const upper = await connect(g.wsUrl, userToken([mine.toUpperCase()]));
    expect((await upper.request({ type: 'join_project', id: 'j3', projectGuid: mine.toUpperCase() })).type).toBe('join_project');
    await Promise.all([c.close(), upper.close()]);
  });

  it.each([
    ['not JSON', '{"type": "ping"', 'BAD_JSON', null],
    ['not UTF-8', Buffer.from([0xff, 0xfe, 0xfd]), 'BAD_JSON', null],
    ['a JSON array', '[1,2]', 'INVALID_FRAME', null],
    ['a JSON string', '"ping"', 'INVALID_FRAME', null],
    ['no type', JSON.stringify({ id: 'r1', projectGuid: null }), 'INVALID_FRAME', 'r1'],
    ['unknown type', JSON.stringify({ type: 'drop_tables', id: 'r2' }), 'UNKNOWN_TYPE', 'r2'],
    ['a server type', JSON.stringify({ type: 'project_message', id: 'r3', projectGuid: randomGuid(), data: {} }), 'UNKNOWN_TYPE', 'r3'],
    ['join without projectGuid', JSON.stringify({ type: 'join_project', id: 'r4' }), 'INVALID_FRAME', 'r4'],
    ['join with a bad GUID', JSON.stringify({ type: 'join_project', id: 'r5', projectGuid: 'not-a-guid' }), 'INVALID_GUID', 'r5'],
    ['join with a GUID-like injection', JSON.stringify({ type: 'join_project', id: 'r6', projectGuid: '../../etc/passwd' }), 'INVALID_GUID', 'r6'],
    ['join with a bad since', JSON.stringify({ type: 'join_project', id: 'r7', projectGuid: randomGuid(), data: { since: 'yesterday' } }), 'INVALID_EVENT_ID', 'r7'],
    ['feedback without data', JSON.stringify({ type: 'user_feedback', id: 'r8', projectGuid: randomGuid() }), 'INVALID_FRAME', 'r8'],
    ['feedback with a number as content', JSON.stringify({ type: 'user_feedback', id: 'r9', projectGuid: randomGuid(), data: { content: 42 } }), 'INVALID_FRAME', 'r9'],
    ['feedback with control characters', JSON.stringify({ type: 'user_feedback', id: 'r10', projectGuid: randomGuid(), data: { content: 'a\u0000b' } }), 'INVALID_FRAME', 'r10'],
    ['feedback with oversized content', JSON.stringify({ type: 'user_feedback', id: 'r11', projectGuid: randomGuid(), data: { content: 'x'.repeat(9000) } }), 'INVALID_FRAME', 'r11'],
    ['extra top-level fields', JSON.stringify({ type: 'ping', id: 'r12', __proto__x: 1, admin: true }), 'INVALID_FRAME', 'r12'],
    ['a numeric id', JSON.stringify({ type: 'ping', id: 7 }), 'INVALID_FRAME', null],
  ])('answers %s with an error frame and keeps the connection', async (_name, payload, code, id) => {
    const c = await connect(g.wsUrl, userToken());
    c.ws.send(payload);
    const err = await c.next((f) => f.type === 'error');
    expect(err.data.code).toBe(code);
    expect(err.id).toBe(id);
    expect(typeof err.data.message).toBe('string');
    const pong = await c.request({ type: 'ping', id: 'still-alive' }, 'pong');
    expect(pong.type).toBe('pong');
    await c.close();
  });
});

describe('rooms', () => {
  it('isolates rooms: a client receives only the events of projects it joined', async () => {
    const a = randomGuid();
    const b = randomGuid();
    const inA = await connect(g.wsUrl, userToken());
    const inB = await connect(g.wsUrl, userToken());
    const inBoth = await connect(g.wsUrl, userToken());
    await Promise.all([inA.join(a), inB.join(b), inBoth.join(a), inBoth.join(b)]);
    await g.gw.publish(a, { type: 'project_message', data: { room: 'a' } });
    await g.gw.publish(b, { type: 'project_message', data: { room: 'b' } });
    await inBoth.waitForEvents(a, 1);
    await inBoth.waitForEvents(b, 1);
    // A sentinel on each client's own room proves everything published before it was delivered.
    await g.gw.publish(a, { type: 'project_message', data: { room: 'a', sentinel: true } });
    await g.gw.publish(b, { type: 'project_message', data: { room: 'b', sentinel: true } });
    await inA.waitForEvents(a, 2);
    await inB.waitForEvents(b, 2);
    expect(inA.events().map((e) => e.data.room)).toEqual(['a', 'a']);
    expect(inB.events().map((e) => e.data.room)).toEqual(['b', 'b']);
    // After leaving, nothing more arrives.
    await inBoth.request({ type: 'leave_project', id: 'leave-a', projectGuid: a });
    await g.gw.publish(a, { type: 'project_message', data: { room: 'a', late: true } });
    await g.gw.publish(b, { type: 'project_message', data: { room: 'b', marker: true } });
    await inBoth.waitForEvents(b, 3);
    expect(inBoth.events(a)).toHaveLength(2);
    await Promise.all([inA.close(), inB.close(), inBoth.close()]);
  });

  it('keeps room references balanced across re-joins, leaves and closes (a room nobody watches is dropped)', async () => {
    const rg = await startGateway();
    try {
      const rooms = async () => (await rg.gw.metrics.rooms.get()).values[0]!.value;
      const guid = randomGuid();
      const other = randomGuid();
      const c = await connect(rg.wsUrl, userToken());
      await c.join(guid);
      await c.join(guid);
      await c.join(other);
      expect(await rooms()).toBe(2);
      await rg.gw.publish(guid, { type: 'project_message', data: { n: 1 } });
      await c.waitForEvents(guid, 1);
      await new Promise((r) => setTimeout(r, 50));
      expect(c.events(guid)).toHaveLength(1); // joined twice, subscribed once
      expect((await c.request({ type: 'leave_project', id: 'l1', projectGuid: guid })).type).toBe('leave_project');
      expect((await c.request({ type: 'leave_project', id: 'l2', projectGuid: guid })).data.code).toBe('NOT_JOINED');
      expect(await rooms()).toBe(1);
      // A join and a leave sent back to back: the join is superseded and gives its reference back.
      c.send({ type: 'join_project', id: 'j-fast', projectGuid: guid });
      c.send({ type: 'leave_project', id: 'l-fast', projectGuid: guid });
      await c.reply('leave_project', 'l-fast');
      await c.close();
      await until(async () => (await rooms()) === 0, 2000, 'rooms released');
    } finally {
      await rg.close();
    }
  });

  it('batches 1,000 events published in one tick: every client gets all, in order, in fewer frames', async () => {
    const guid = randomGuid();
    const clients = await Promise.all(Array.from({ length: 5 }, () => connect(g.wsUrl, userToken())));
    await Promise.all(clients.map((c) => c.join(guid)));
    const framesBefore = clients.map((c) => c.raw.length);
    const ids = await g.gw.publishMany(guid, Array.from({ length: 1000 }, (_, i) => ({ type: 'project_message' as const, data: { seq: i } })));
    expect(ids).toHaveLength(1000);
    for (const [i, c] of clients.entries()) {
      const events = await c.waitForEvents(guid, 1000);
      expect(events.map((e) => e.data.seq)).toEqual(Array.from({ length: 1000 }, (_, k) => k));
      expect(events.map((e) => e.id)).toEqual(ids);
      const frames = c.raw.length - framesBefore[i]!;
      expect(frames).toBeLessThan(1000);
      expect(frames).toBeLessThanOrEqual(10);
    }
    await Promise.all(clients.map((c) => c.close()));
  });

  it('batches separate publish calls made in the same tick', async () => {
    const guid = randomGuid();
    const c = await connect(g.wsUrl, userToken());
    await c.join(guid);
    const before = c.raw.length;
    await Promise.all(Array.from({ length: 200 }, (_, i) => g.gw.publish(guid, { type: 'project_message', data: { seq: i } })));
    const events = await c.waitForEvents(guid, 200);
    expect(events.map((e) => e.data.seq)).toEqual(Array.from({ length: 200 }, (_, k) => k));
    expect(c.raw.length - before).toBeLessThan(200);
    expect(Array.isArray(c.raw[c.raw.length - 1])).toBe(true);
    await c.close();
  });

  it('resumes from since on the in-process bus: exactly the missed events, then live', async () => {
    const guid = randomGuid();
    const first = await connect(g.wsUrl, userToken());
    await first.join(guid);
    await g.gw.publishMany(guid, Array.from({ length: 10 }, (_, i) => ({ type: 'project_message' as const, data: { seq: i } })));
    const seen = await first.waitForEvents(guid, 10);
    const lastSeen = seen[4]!.id!;
    await first.close();
    const second = await connect(g.wsUrl, userToken());
    const ack = await second.join(guid, lastSeen);
    expect(ack.data).toMatchObject({ recovered: true, replayed: 5, latestId: seen[9]!.id });
    await g.gw.publish(guid, { type: 'project_message', data: { seq: 10 } });
    const events = await second.waitForEvents(guid, 6);
    expect(events.map((e) => e.data.seq)).toEqual([5, 6, 7, 8, 9, 10]);
    // An id this bus never issued means the client must reload.
    const third = await connect(g.wsUrl, userToken());
    const reload = await third.join(guid, '99999999999999-0');
    expect(reload.data).toMatchObject({ recovered: false });
    await Promise.all([second.close(), third.close()]);
  });
});

describe('graceful shutdown', () => {
  it('lets an in-flight publish finish, then closes every socket with 1001 and stops listening', async () => {
    const sg = await startGateway();
    const guid = randomGuid();
    const clients = await Promise.all([0, 1, 2].map(() => connect(sg.wsUrl, userToken())));
    await Promise.all(clients.map((c) => c.join(guid)));
    // A publish whose headers arrived before shutdown and whose body arrives during it.
    const req = request(`${sg.httpUrl}/v1/projects/${guid}/events`, { method: 'POST', headers: { authorization: `Bearer ${producerToken()}`, 'content-type': 'application/json' } });
    const response = new Promise<number>((resolve, reject) => req.on('response', (res) => (res.resume(), resolve(res.statusCode!))).on('error', reject));
    req.flushHeaders();
    await new Promise((r) => setTimeout(r, 100));
    const closing = sg.close();
    req.end(JSON.stringify({ type: 'project_message', data: { last: true } }));
    await closing;
    expect(await response).toBe(202);
    for (const c of clients) {
      expect(await c.closed).toMatchObject({ code: 1001 });
      expect(c.events(guid).map((e) => e.data.last)).toEqual([true]);
    }
    await expect(fetch(`${sg.httpUrl}/healthz`)).rejects.toThrow();
  });
});

describe('slow consumers', () => {
  it('drops a subscriber that stops reading instead of silently skipping it, and it resumes without loss', async () => {
    // Uncompressed: the padding below deflates ~50 times (permessage-deflate is on by default and `ws` offers it), and the kernel would absorb it all.
    const sg = await startGateway({ MAX_BACKPRESSURE_BYTES: '65536', WS_COMPRESSION: 'off' });
    try {
      const guid = randomGuid();
      const slow = await connect(sg.wsUrl, userToken());
      await slow.join(guid);
      (slow.ws as unknown as { _socket: { pause(): void } })._socket.pause();
      const ids: string[] = [];
      // Far more than the kernel's loopback buffers absorb, so uWS's own buffer passes the limit.
      for (let i = 0; i < 200 && slow.ws.readyState === slow.ws.OPEN; i++) {
        ids.push(...(await sg.gw.publishMany(guid, Array.from({ length: 100 }, (_, k) => ({ type: 'project_message' as const, data: { n: i * 100 + k, pad: 'x'.repeat(200) } })))));
        await new Promise((r) => setImmediate(r));
      }
      (slow.ws as unknown as { _socket: { resume(): void } })._socket.resume();
      expect((await slow.closed).code).toBe(1006);
      const got = slow.events(guid).map((e) => e.id!);
      expect(got.length).toBeLessThan(ids.length);
      expect(got).toEqual(ids.slice(0, got.length));
      const again = await connect(sg.wsUrl, userToken());
      const ack = await again.join(guid, got.at(-1) ?? '0-0');
      expect(ack.data.recovered).toBe(true);
      const rest = await again.waitForEvents(guid, ids.length - got.length);
      expect([...got, ...rest.map((e) => e.id!)]).toEqual(ids);
      await again.close();
    } finally {
      await sg.close();
    }
  });
});

describe('heartbeat', () => {
  it('closes a silent client that answers no pings, and keeps a live one', async () => {
    const hb = await startGateway({ HEARTBEAT_INTERVAL_S: '1', IDLE_TIMEOUT_S: '2' });
    try {
      const silent = await connect(hb.wsUrl, userToken(), { autoPong: false });
      const live = await connect(hb.wsUrl, userToken());
      const started = Date.now();
      const { code } = await silent.closed;
      expect(code).toBe(4408);
      expect(Date.now() - started).toBeLessThan(4500);
      expect(live.ws.readyState).toBe(live.ws.OPEN);
      await live.close();
    } finally {
      await hb.close();
    }
  });
});

describe('token expiry', () => {
  it('closes a live connection with 4401 when its token expires', async () => {
    const tg = await startGateway({ JWT_CLOCK_TOLERANCE_S: '0' });
    try {
      const c = await connect(tg.wsUrl, createSigner({ key: SECRET, expiresIn: 2000 })({ sub: 'short-lived', projects: '*' }));
      const started = Date.now();
      const { code } = await c.closed;
      expect(code).toBe(4401);
      expect(Date.now() - started).toBeLessThan(4000);
    } finally {
      await tg.close();
    }
  });
});

describe('producer HTTP API', () => {
  it('publishes an event end to end and answers 202 with its id', async () => {
    const guid = randomGuid();
    const c = await connect(g.wsUrl, userToken());
    await c.join(guid);
    const res = await postEvent(g.httpUrl, guid, { type: 'project_stage_update', data: { stage: 'build' } });
    expect(res.status).toBe(202);
    expect(res.body.id).toMatch(/^\d+-\d+$/);
    const [event] = await c.waitForEvents(guid, 1);
    expect(event).toMatchObject({ type: 'project_stage_update', id: res.body.id, data: { stage: 'build' } });
    const batch = await postEvent(g.httpUrl, guid, { events: [{ type: 'project_message', data: { n: 1 } }, { type: 'project_message', data: { n: 2 } }] });
    expect(batch.status).toBe(202);
    expect(batch.body.ids).toHaveLength(2);
    await c.waitForEvents(guid, 3);
    await c.close();
  });

  it.each([
    ['bad JSON', undefined, '{"type":', 400, 'BAD_JSON'],
    ['an unknown type', { type: 'drop_tables', data: {} }, undefined, 400, 'UNKNOWN_TYPE'],
    ['a client type', { type: 'join_project', data: {} }, undefined, 400, 'UNKNOWN_TYPE'],
    ['missing data', { type: 'project_message' }, undefined, 400, 'INVALID_FRAME'],
    ['data not an object', { type: 'project_message', data: 'hi' }, undefined, 400, 'INVALID_FRAME'],
    ['an empty batch', { events: [] }, undefined, 400, 'INVALID_FRAME'],
    ['a batch over 1,000 events', { events: Array.from({ length: 1001 }, () => ({ type: 'project_message', data: {} })) }, undefined, 400, 'INVALID_FRAME'],
  ])('answers %s with 400 and a code', async (_name, body, raw, status, code) => {
    const res = await postEvent(g.httpUrl, randomGuid(), body, producerToken(), raw);
    expect(res.status).toBe(status);
    expect(res.body.error.code).toBe(code);
    if (_name === 'a batch over 1,000 events') expect(res.body.error.message).toMatch(/\/events must NOT have more than 1000 items/);
  });

  it('answers a bad GUID with 400 INVALID_GUID', async () => {
    const res = await postEvent(g.httpUrl, 'nope', { type: 'project_message', data: {} });
    expect(res).toMatchObject({ status: 400, body: { error: { code: 'INVALID_GUID' } } });
  });

  it('answers missing and bad tokens with 401, a token without the scope with 403', async () => {
    const body = { type: 'project_message', data: {} };
    expect((await postEvent(g.httpUrl, randomGuid(), body, null)).status).toBe(401);
    expect((await postEvent(g.httpUrl, randomGuid(), body, 'bad.token.here')).status).toBe(401);
    const wrongKey = createSigner({ key: 'another-secret-entirely' })({ sub: 'x', scope: 'events:publish' });
    expect((await postEvent(g.httpUrl, randomGuid(), body, wrongKey)).status).toBe(401);
    const noScope = await postEvent(g.httpUrl, randomGuid(), body, userToken());
    expect(noScope).toMatchObject({ status: 403, body: { error: { code: 'FORBIDDEN' } } });
  });

  it('serves healthz, readyz, metrics and 404', async () => {
    expect((await fetch(`${g.httpUrl}/healthz`)).status).toBe(200);
    const ready = await fetch(`${g.httpUrl}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ ready: true, bus: 'memory' });
    const metrics = await (await fetch(`${g.httpUrl}/metrics`)).text();
    expect(metrics).toMatch(/^ws_connections\{node="[^"]+"\} \d+$/m);
    expect(metrics).toMatch(/^events_published_total\{node="[^"]+"\} [1-9]\d*$/m);
    const missing = await fetch(`${g.httpUrl}/nope`);
    expect(missing.status).toBe(404);
  });
});

describe('in-process publish with an idempotency key', () => {
  it('keys by the producer the caller names (default "gateway"), a namespace no HTTP principal shares', async () => {
    const guid = randomGuid();
    const event = { type: 'project_message' as const, data: { text: 'once' } };
    const byDefault = await g.gw.publish(guid, event, { idempotencyKey: 'job-1' });
    expect(await g.gw.publish(guid, event, { idempotencyKey: 'job-1' })).toBe(byDefault);
    expect(await g.gw.publish(guid, event, { idempotencyKey: 'job-1', producer: 'gateway' })).toBe(byDefault);
    const byScheduler = await g.gw.publish(guid, event, { idempotencyKey: 'job-1', producer: 'scheduler' });
    expect(byScheduler).not.toBe(byDefault);
    expect(await g.gw.publishMany(guid, [event], { idempotencyKey: 'job-1', producer: 'scheduler' })).toEqual([byScheduler]);
    // A name with ':' (the form of an HTTP principal's identity) is refused before anything is appended.
    await expect(g.gw.publish(guid, event, { idempotencyKey: 'job-1', producer: 'http:service-a' })).rejects.toMatchObject({ code: 'INVALID_FRAME' });
    // A token whose sub is "gateway" is not the in-process default producer: its key is its own.
    const res = await fetch(`${g.httpUrl}/v1/projects/${guid}/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${producerToken('*', 'gateway')}`, 'idempotency-key': 'job-1' },
      body: JSON.stringify(event),
    });
    expect(res.status).toBe(202);
    expect(res.headers.get('idempotent-replayed')).toBeNull();
    const { id } = (await res.json()) as { id: string };
    expect([byDefault, byScheduler]).not.toContain(id);
    expect((await g.gw.bus.range(guid, '0-0', 10)).events.map((e) => e.id)).toEqual([byDefault, byScheduler, id]);
  });
});

describe('MessagePack subprotocol', () => {
  it('speaks MessagePack end to end when negotiated, batches included', async () => {
    const guid = randomGuid();
    const c = await connect(g.wsUrl, userToken(), { protocol: 'autocode.v1.msgpack' });
    expect(c.ws.protocol).toBe('autocode.v1.msgpack');
    const pong = await c.request({ type: 'ping', id: 'mp-ping' }, 'pong');
    expect(pong.type).toBe('pong');
    await c.join(guid);
    const json = await connect(g.wsUrl, userToken(), { protocol: ['autocode.v1.json'] });
    expect(json.ws.protocol).toBe('autocode.v1.json');
    await json.join(guid);
    await g.gw.publishMany(guid, Array.from({ length: 20 }, (_, i) => ({ type: 'project_message' as const, data: { seq: i, text: 'héllo' } })));
    const events = await c.waitForEvents(guid, 20);
    expect(events.map((e) => e.data.seq)).toEqual(Array.from({ length: 20 }, (_, k) => k));
    expect(events[0]!.data.text).toBe('héllo');
    expect((await json.waitForEvents(guid, 20)).map((e) => e.id)).toEqual(events.map((e) => e.id));
    // Garbage bytes on the MessagePack protocol get BAD_MSGPACK and the socket stays.
    c.ws.send(Buffer.from([0x92, 0x01])); // an array of two holding one element: truncated
    expect((await c.next((f) => f.type === 'error')).data.code).toBe('BAD_MSGPACK');
    expect((await c.request({ type: 'ping', id: 'mp-ping-2' }, 'pong')).type).toBe('pong');
    await Promise.all([c.close(), json.close()]);
  });
});

describe('rate limiting', () => {
  it('answers a flood with RATE_LIMITED, then closes a client that keeps flooding', async () => {
    const rl = await startGateway({ RATE_LIMIT_PER_S: '5', RATE_LIMIT_BURST: '10' });
    try {
      const c = await connect(rl.wsUrl, userToken());
      for (let i = 0; i < 12; i++) c.send({ type: 'ping', id: `p${i}` });
      const limited = await c.next((f) => f.type === 'error');
      expect(limited.data.code).toBe('RATE_LIMITED');
      expect(c.envelopes.filter((f) => f.type === 'pong')).toHaveLength(10);
      for (let i = 0; i < 40; i++) c.send({ type: 'ping', id: `q${i}` });
      expect((await c.closed).code).toBe(4429);
    } finally {
      await rl.close();
    }
  });
});

describe('in-process bus memory bound', () => {
  it('drops the history of the least recently active projects first, and says so on resume', async () => {
    const mg = await startGateway({ MEMORY_BUS_MAX_EVENTS: '1000', STREAM_MAXLEN: '800' });
    try {
      const old = randomGuid();
      const busy = randomGuid();
      const oldIds = await mg.gw.publishMany(old, Array.from({ length: 500 }, (_, i) => ({ type: 'project_message' as const, data: { i } })));
      const busyIds = await mg.gw.publishMany(busy, Array.from({ length: 800 }, (_, i) => ({ type: 'project_message' as const, data: { i } })));
      // 1,300 events against a bound of 1,000: 300 of the older project's go.
      const c = await connect(mg.wsUrl, userToken());
      expect((await c.join(old, oldIds[10])).data.recovered).toBe(false);
      expect((await c.join(old, oldIds[300])).data).toMatchObject({ recovered: true, replayed: 199 });
      busyIds.push(...(await mg.gw.publishMany(busy, [{ type: 'project_message', data: { last: true } }])));
      const d = await connect(mg.wsUrl, userToken());
      const ack = await d.join(busy, busyIds[400]);
      expect(ack.data).toMatchObject({ recovered: true, replayed: 400 });
      expect((await d.waitForEvents(busy, 400)).map((e) => e.id)).toEqual(busyIds.slice(401));
      await Promise.all([c.close(), d.close()]);
    } finally {
      await mg.close();
    }
  });
});
