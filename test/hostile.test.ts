import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocketServer, type WebSocket } from 'ws';
import { ErrorCodes } from '../src/errors.js';
import { CLIENT_TYPES, EVENT_TYPES } from '../src/protocol/messages.js';
import { connect, postEvent, producerToken, randomGuid, startGateway, until, userToken, type StartedGateway, type TestClient } from './helpers/gateway.js';

/**
 * Hostile input at every entry point of one gateway: producer HTTP bodies, client frames (JSON and
 * MessagePack), agents-server frames, and events that slip past every check into the fan-out.
 * Each must be refused with a documented code or skipped, with every other room and client flowing.
 */

/** `{"a":{"a":…{}…}}` nested `depth` levels, built as text: JSON.stringify itself overflows there. */
const deepJson = (depth: number) => '{"a":'.repeat(depth) + '{}' + '}'.repeat(depth);
/** A MessagePack array nested `depth` levels, built by hand for the same reason. */
const deepMsgpack = (depth: number) => new Uint8Array([...new Array(depth).fill(0x91), 0xc0]);
const packr = new Packr({ useRecords: false, mapsAsObjects: true });

async function publishRaw(g: StartedGateway, guid: string, raw: string, headers: Record<string, string> = {}) {
  const res = await fetch(`${g.httpUrl}/v1/projects/${guid}/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${producerToken()}`, ...headers },
    body: raw,
  });
  return { status: res.status, body: (await res.json()) as any, headers: res.headers };
}

/** Every error a gateway answers with must be a documented code, at its documented HTTP status. */
function expectDocumentedError(status: number, body: any) {
  const code = body?.error?.code as keyof typeof ErrorCodes;
  expect(Object.keys(ErrorCodes)).toContain(code);
  expect(ErrorCodes[code].http).toBe(status);
}

async function counter(g: StartedGateway, name: string): Promise<number> {
  const text = await (await fetch(`${g.httpUrl}/metrics`)).text();
  return [...text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\d+)$`, 'gm'))].reduce((sum, m) => sum + Number(m[1]), 0);
}

describe('hostile input, one gateway (in-process bus)', () => {
  let g: StartedGateway;
  beforeAll(async () => {
    g = await startGateway({ RATE_LIMIT_PER_S: '100000', RATE_LIMIT_BURST: '100000' });
  });
  afterAll(() => g.close());

  it('refuses deep, huge and non-finite event data at the HTTP API with documented codes, and keeps every room flowing', async () => {
    const room = randomGuid();
    const other = randomGuid();
    const jsonClient = await connect(g.wsUrl, userToken());
    const msgpackClient = await connect(g.wsUrl, userToken(), { protocol: 'autocode.v1.msgpack' });
    const otherClient = await connect(g.wsUrl, userToken());
    await Promise.all([jsonClient.join(room), msgpackClient.join(room), otherClient.join(other)]);

    const deep = await publishRaw(g, room, `{"type":"project_message","data":${deepJson(5000)}}`);
    expect(deep.status).toBe(400);
    expect(deep.body.error.code).toBe('INVALID_DATA');
    expect(deep.body.error.message).toMatch(/deeper than 32/);

    const infinite = await publishRaw(g, room, '{"type":"project_message","data":{"x":1e400}}');
    expect(infinite.status).toBe(400);
    expect(infinite.body.error.code).toBe('INVALID_DATA');

    const huge = await postEvent(g.httpUrl, room, { type: 'project_message', data: { text: 'x'.repeat(70_000) } });
    expect(huge.status).toBe(413);
    expect(huge.body.error.code).toBe('PAYLOAD_TOO_LARGE');

    // One bad event refuses the whole batch: nothing of it is appended.
    const batch = await publishRaw(g, room, `{"events":[{"type":"project_message","data":{"n":"good"}},{"type":"project_message","data":${deepJson(100)}}]}`);
    expect(batch.status).toBe(400);
    expect(batch.body.error.message).toMatch(/events\[1\]\.data/);

    expect((await postEvent(g.httpUrl, room, { type: 'project_message', data: { n: 'after' } })).status).toBe(202);
    expect((await postEvent(g.httpUrl, other, { type: 'project_message', data: { n: 'other' } })).status).toBe(202);
    for (const c of [jsonClient, msgpackClient]) {
      const events = await c.waitForEvents(room, 1);
      await new Promise((r) => setTimeout(r, 50));
      expect(c.events(room).map((e) => e.data)).toEqual([{ n: 'after' }]);
      expect(events).toHaveLength(1);
    }
    expect((await otherClient.waitForEvents(other, 1))[0]!.data).toEqual({ n: 'other' });
    expect((await fetch(`${g.httpUrl}/healthz`)).status).toBe(200);
    await Promise.all([jsonClient.close(), msgpackClient.close(), otherClient.close()]);
  });

  it('skips, logs and counts an event an encoder cannot carry, for that encoding only; later events and resumes flow', async () => {
    const room = randomGuid();
    const jsonClient = await connect(g.wsUrl, userToken());
    const msgpackClient = await connect(g.wsUrl, userToken(), { protocol: 'autocode.v1.msgpack' });
    await Promise.all([jsonClient.join(room), msgpackClient.join(room)]);
    const before = await g.gw.publish(room, { type: 'project_message', data: { n: 0 } });
    const unencodableBefore = await counter(g, 'events_unencodable_total');

    // Straight onto the bus, past every entry-point check: what the fan-out backstop is for.
    // 3,000 levels: JSON.stringify copes, msgpackr's recursive encoder overflows. A BigInt: the reverse.
    const deep = JSON.parse(deepJson(3000)) as object;
    const { ids: badIds } = await g.gw.bus.publish(room, [
      { type: 'project_message', data: deep },
      { type: 'project_message', data: { big: 2n ** 62n } },
    ]);
    await g.gw.publish(room, { type: 'project_message', data: { n: 1 } });

    const jsonEvents = await jsonClient.waitForEvents(room, 3);
    expect(jsonEvents.map((e) => e.id)).toEqual([before, badIds[0], expect.any(String)]);
    expect(jsonEvents[2]!.data).toEqual({ n: 1 });
    const msgpackEvents = await msgpackClient.waitForEvents(room, 3);
    expect(msgpackEvents.map((e) => e.id)).toEqual([before, badIds[1], jsonEvents[2]!.id]);
    expect(await counter(g, 'events_unencodable_total')).toBe(unencodableBefore + 2);

    // A resume across the bad events is not poisoned: each encoding replays what it can carry.
    for (const protocol of ['autocode.v1.json', 'autocode.v1.msgpack']) {
      const resumer = await connect(g.wsUrl, userToken(), { protocol });
      const ack = await resumer.join(room, before);
      expect(ack.data).toMatchObject({ recovered: true });
      expect(resumer.events(room).map((e) => e.data)).toContainEqual({ n: 1 });
      await resumer.close();
    }
    expect((await fetch(`${g.httpUrl}/healthz`)).status).toBe(200);
    await Promise.all([jsonClient.close(), msgpackClient.close()]);
  });

  it('answers hostile client frames with documented error codes and keeps the socket', async () => {
    const room = randomGuid();
    const json = await connect(g.wsUrl, userToken());
    const msgpack = await connect(g.wsUrl, userToken(), { protocol: 'autocode.v1.msgpack' });
    const alive = async (c: TestClient) => expect((await c.request({ type: 'ping', id: `p-${Math.random()}` }, 'pong')).type).toBe('pong');

    msgpack.ws.send(deepMsgpack(20_000));
    expect((await msgpack.next((f) => f.type === 'error')).data.code).toBe('BAD_MSGPACK');
    await alive(msgpack);

    const bigintMeta = await msgpack.request({ type: 'user_feedback', id: 'fb-big', projectGuid: room, data: { content: 'hi', meta: { n: 2n ** 63n } } }, 'user_feedback_response');
    expect(bigintMeta.data.code).toBe('INVALID_DATA');
    const dateMeta = await msgpack.request({ type: 'user_feedback', id: 'fb-date', projectGuid: room, data: { content: 'hi', meta: { at: new Date() } } }, 'user_feedback_response');
    expect(dateMeta.data.code).toBe('INVALID_DATA');
    await alive(msgpack);

    json.ws.send(`{"type":"user_feedback","id":"fb-deep","projectGuid":"${room}","data":{"content":"hi","meta":${deepJson(5000)}}}`);
    expect((await json.reply('user_feedback_response', 'fb-deep')).data.code).toBe('INVALID_DATA');
    json.ws.send(`{"type":"ping","id":"deep-ping","data":${'['.repeat(30_000)}${']'.repeat(30_000)}}`);
    expect((await json.reply('pong', 'deep-ping')).type).toBe('pong');
    await alive(json);
    await Promise.all([json.close(), msgpack.close()]);
  });

  it('property: generated HTTP bodies get 202 or a documented error, and the gateway stays up', async () => {
    const guid = randomGuid();
    const event = fc.record({ type: fc.oneof(fc.constantFrom(...EVENT_TYPES), fc.string()), data: fc.jsonValue() });
    const body = fc.oneof(fc.jsonValue(), event, fc.record({ events: fc.array(event, { maxLength: 5 }) }), fc.string());
    await fc.assert(
      fc.asyncProperty(body, async (value) => {
        const raw = typeof value === 'string' ? value : JSON.stringify(value);
        const res = await publishRaw(g, guid, raw);
        if (res.status !== 202) expectDocumentedError(res.status, res.body);
      }),
      { numRuns: 300, seed: 7 },
    );
    expect((await fetch(`${g.httpUrl}/healthz`)).status).toBe(200);
  });

  it('property: generated MessagePack and JSON frames are each answered with a documented code or a reply, and the socket stays open', async () => {
    const anything = fc.anything({ withBigInt: true, withDate: true, withNullPrototype: true, withTypedArray: true, maxDepth: 6 });
    const frame = fc.oneof(
      anything,
      fc.record({
        type: fc.oneof(fc.constantFrom(...CLIENT_TYPES), fc.string()),
        projectGuid: fc.oneof(fc.uuid(), fc.string(), fc.bigInt()),
        id: fc.oneof(fc.string({ maxLength: 200 }), fc.bigInt(), fc.constant(null)),
        data: anything,
      }),
    );
    for (const protocol of ['autocode.v1.msgpack', 'autocode.v1.json']) {
      const c = await connect(g.wsUrl, userToken(), { protocol });
      let n = 0;
      await fc.assert(
        fc.asyncProperty(frame, async (value) => {
          let bytes: Uint8Array | string;
          try {
            bytes = protocol.endsWith('msgpack') ? packr.pack(value) : JSON.stringify(value) ?? 'null';
          } catch {
            return; // not encodable on the sending side: nothing to send
          }
          c.ws.send(bytes);
          const pingId = `after-${++n}`;
          c.send({ type: 'ping', id: pingId });
          expect((await c.reply('pong', pingId)).type).toBe('pong');
        }),
        { numRuns: 200, seed: 11 },
      );
      for (const e of c.envelopes.filter((f) => f.type === 'error')) expect(Object.keys(ErrorCodes)).toContain(e.data.code);
      expect(c.ws.readyState).toBe(1);
      await c.close();
    }
  });
});

describe('hostile agents-server frames', () => {
  it('refuses agent_message data over the limits, survives oversized frames, and relays what follows', async () => {
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
    await new Promise((r) => wss.once('listening', r));
    const sockets = new Set<WebSocket>();
    let connections = 0;
    wss.on('connection', (ws) => {
      connections++;
      sockets.add(ws);
      ws.on('close', () => sockets.delete(ws));
    });
    const send = (frame: string) => sockets.forEach((ws) => ws.send(frame));
    const port = (wss.address() as { port: number }).port;
    const g = await startGateway({ AGENTS_URL: `ws://127.0.0.1:${port}`, MAX_EVENT_DATA_BYTES: '4096' });
    try {
      await until(() => sockets.size > 0, 5000, 'agents link');
      const room = randomGuid();
      const json = await connect(g.wsUrl, userToken());
      const msgpack = await connect(g.wsUrl, userToken(), { protocol: 'autocode.v1.msgpack' });
      await Promise.all([json.join(room), msgpack.join(room)]);

      send(`{"type":"agent_message","projectGuid":"${room}","data":${deepJson(5000)}}`);
      send(`{"type":"agent_message","projectGuid":"${room}","data":{"x":1e400}}`);
      send(JSON.stringify({ type: 'agent_message', projectGuid: room, data: { text: 'y'.repeat(5000) } }));
      send(JSON.stringify({ type: 'agent_message', projectGuid: room, data: { text: 'first good' } }));
      // Over the link's frame limit (data limit + 64 KiB): ws closes the link with 1009; it reconnects.
      send(JSON.stringify({ type: 'agent_message', projectGuid: room, data: { text: 'z'.repeat(80_000) } }));
      await until(() => connections >= 2 && sockets.size > 0, 10_000, 'agents link to reconnect after the oversized frame');
      send(JSON.stringify({ type: 'agent_message', projectGuid: room, data: { text: 'second good' } }));

      for (const c of [json, msgpack]) {
        await c.waitForEvents(room, 2);
        expect(c.events(room).map((e) => e.data.text)).toEqual(['first good', 'second good']);
      }
      expect((await fetch(`${g.httpUrl}/healthz`)).status).toBe(200);
      await Promise.all([json.close(), msgpack.close()]);
    } finally {
      await g.close();
      sockets.forEach((ws) => ws.terminate());
      await new Promise((r) => wss.close(r));
    }
  });
});

describe('idempotent publishing (in-process bus)', () => {
  it('appends once per Idempotency-Key, replays the first ids, and refuses the key with another body', async () => {
    const g = await startGateway();
    try {
      const room = randomGuid();
      const c = await connect(g.wsUrl, userToken());
      await c.join(room);
      const body = JSON.stringify({ events: [{ type: 'project_message', data: { n: 1 } }, { type: 'project_message', data: { n: 2 } }] });
      const first = await publishRaw(g, room, body, { 'idempotency-key': 'req-1' });
      const again = await publishRaw(g, room, body, { 'idempotency-key': 'req-1' });
      expect(first.status).toBe(202);
      expect(again.status).toBe(202);
      expect(again.body.ids).toEqual(first.body.ids);
      expect(first.headers.get('idempotent-replayed')).toBeNull();
      expect(again.headers.get('idempotent-replayed')).toBe('true');
      const reused = await publishRaw(g, room, JSON.stringify({ type: 'project_message', data: { n: 3 } }), { 'idempotency-key': 'req-1' });
      expect(reused.status).toBe(422);
      expect(reused.body.error.code).toBe('IDEMPOTENCY_KEY_REUSED');
      const badKey = await publishRaw(g, room, body, { 'idempotency-key': 'has spaces' });
      expect(badKey.status).toBe(400);
      // The same key on another project is another request.
      expect((await publishRaw(g, randomGuid(), body, { 'idempotency-key': 'req-1' })).status).toBe(202);
      await postEvent(g.httpUrl, room, { type: 'project_message', data: { n: 'sentinel' } });
      await c.waitForEvents(room, 3);
      expect(c.events(room).map((e) => e.data.n)).toEqual([1, 2, 'sentinel']);
      await c.close();
    } finally {
      await g.close();
    }
  });
});
