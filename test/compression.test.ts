// permessage-deflate (WS_COMPRESSION, src/connections/compression.ts) with real `ws` clients, in every
// shape (one thread, WORKERS=2): what the 101 answers in Sec-WebSocket-Extensions, and, read from
// the raw TCP bytes under the client, which server frames have RSV1 (compressed) set and how long
// they are on the wire, next to what the client decoded.
import type { Socket } from 'node:net';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomGuid, TestClient, userToken } from './helpers/gateway.js';
import { SHAPES, type Served } from './helpers/topology.js';
import { takeFrames, type WireFrame } from './helpers/wire-frames.js';

const MIN_BYTES = 300;

/** Parses the server's frames out of the socket's bytes (server frames are unmasked). */
function tapFrames(socket: Socket): WireFrame[] {
  const frames: WireFrame[] = [];
  let pending: Buffer = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    pending = Buffer.concat([pending, chunk]);
    pending = takeFrames(pending, frames);
  });
  return frames;
}

interface Tapped {
  readonly client: TestClient;
  /** Sec-WebSocket-Extensions of the 101 ('' when none). */
  readonly extensions: string;
  readonly frames: WireFrame[];
  /** Decoded payload sizes of the data frames, in arrival order (what `ws` handed up). */
  readonly decodedBytes: number[];
}

/** A `ws` client that offers permessage-deflate or not (`ws` offers it by default). */
function open(served: Served, offerDeflate: boolean, protocol = 'autocode.v1.json'): Promise<Tapped> {
  const ws = new WebSocket(`${served.wsUrl}?token=${encodeURIComponent(userToken())}`, protocol, { perMessageDeflate: offerDeflate });
  let extensions = '';
  ws.once('upgrade', (res) => (extensions = String(res.headers['sec-websocket-extensions'] ?? '')));
  const decodedBytes: number[] = [];
  ws.on('message', (data: Buffer) => decodedBytes.push(data.length));
  return new Promise((resolve, reject) => {
    const client = new TestClient(ws, protocol === 'autocode.v1.msgpack');
    ws.once('open', () => {
      // Nothing is sent before the client's first frame, so no server byte is missed.
      const frames = tapFrames((ws as unknown as { _socket: Socket })._socket);
      resolve({ client, extensions, frames, decodedBytes });
    });
    ws.once('error', reject);
  });
}

/** Event data whose JSON frame is well over MIN_BYTES and compresses (repeated keys and words). */
function bigData(i: number) {
  return { text: `event ${i}: ` + 'the quick brown fox jumps over the lazy dog. '.repeat(40), items: Array.from({ length: 10 }, (_, k) => ({ name: `item-${k}`, done: k % 2 === 0 })) };
}

const dataFrames = (t: Tapped) => t.frames.filter((f) => f.opcode === 1 || f.opcode === 2);

describe.each(SHAPES)('$name', (shape) => {
  describe('WS_COMPRESSION=shared', () => {
    let served: Served;
    beforeAll(async () => {
      served = await shape.start({ WS_COMPRESSION: 'shared', WS_COMPRESSION_MIN_BYTES: String(MIN_BYTES) });
    });
    afterAll(() => served?.close());

    it('one publish reaches a client that offered deflate compressed and one that did not plain, both decoding the same events', async () => {
      const guid = randomGuid();
      const plain = await open(served, false);
      const deflating = await open(served, true);
      expect(plain.extensions).toBe('');
      expect(deflating.extensions).toMatch(/^permessage-deflate\b/);
      // The shared compressor resets per message: uWS tells the client so.
      expect(deflating.extensions).toContain('server_no_context_takeover');
      expect((deflating.client.ws as WebSocket).extensions).toMatch(/permessage-deflate/);

      const plainAck = await plain.client.join(guid);
      const deflatingAck = await deflating.client.join(guid);
      const sent = [bigData(1), bigData(2), { text: 'small' }];
      const ids: string[] = [];
      for (const data of sent) ids.push(await served.publish(guid, { type: 'project_message', data }));
      const gotPlain = await plain.client.waitForEvents(guid, 3);
      const gotDeflating = await deflating.client.waitForEvents(guid, 3);
      for (const got of [gotPlain, gotDeflating]) {
        expect(got.map((e) => e.id)).toEqual(ids);
        expect(got.map((e) => e.data)).toEqual(sent);
      }
      expect(plainAck.data).toEqual(deflatingAck.data);

      // Not offered: nothing compressed, on the wire as decoded.
      expect(dataFrames(plain).some((f) => f.rsv1)).toBe(false);
      expect(dataFrames(plain).map((f) => f.wireBytes)).toEqual(plain.decodedBytes);

      // Offered: frames from MIN_BYTES up are compressed and smaller on the wire; smaller ones plain.
      const frames = dataFrames(deflating);
      expect(frames).toHaveLength(deflating.decodedBytes.length);
      frames.forEach((f, i) => {
        const decoded = deflating.decodedBytes[i]!;
        expect(f.rsv1, `frame ${i} of ${decoded} bytes`).toBe(decoded >= MIN_BYTES);
        if (f.rsv1) expect(f.wireBytes).toBeLessThan(decoded / 2);
        else expect(f.wireBytes).toBe(decoded);
      });
      // (the three events may share one frame: fan-out batches what reaches a room in one turn)
      expect(frames.filter((f) => f.rsv1).length).toBeGreaterThanOrEqual(1);
      expect(frames.some((f) => !f.rsv1)).toBe(true); // the join ack, under MIN_BYTES
      await plain.client.close();
      await deflating.client.close();
    });

    it('a replay (join with since) is compressed for a client that offered deflate, and msgpack frames too', async () => {
      const guid = randomGuid();
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) ids.push(await served.publish(guid, { type: 'project_message', data: bigData(i) }));
      for (const protocol of ['autocode.v1.json', 'autocode.v1.msgpack']) {
        const t = await open(served, true, protocol);
        await t.client.join(guid, ids[0]);
        const got = await t.client.waitForEvents(guid, 4);
        expect(got.map((e) => e.id)).toEqual(ids.slice(1));
        expect(got.map((e) => e.data)).toEqual([1, 2, 3, 4].map(bigData));
        const big = dataFrames(t).filter((_, i) => t.decodedBytes[i]! >= MIN_BYTES);
        expect(big.length).toBeGreaterThanOrEqual(1);
        expect(big.every((f) => f.rsv1)).toBe(true);
        await t.client.close();
      }
    });

    it('a compressed client frame that inflates past the frame limit closes that socket only (a deflate bomb)', async () => {
      const guid = randomGuid();
      const bystander = await open(served, true);
      await bystander.client.join(guid);
      const bomber = await open(served, true);
      // 4 MiB of one letter deflates to ~4 KB: under any frame limit on the wire, 32 times MAX_PAYLOAD_BYTES×2 inflated.
      (bomber.client.ws as WebSocket).send(JSON.stringify({ type: 'ping', id: 'p', data: { pad: 'a'.repeat(4 * 1024 * 1024) } }));
      const closed = await bomber.client.closed;
      expect([1006, 1009]).toContain(closed.code);
      const id = await served.publish(guid, { type: 'project_message', data: bigData(7) });
      const [event] = await bystander.client.waitForEvents(guid, 1);
      expect(event!.id).toBe(id);
      await bystander.client.close();
    });
  });

  describe('WS_COMPRESSION=dedicated-8kb', () => {
    let served: Served;
    beforeAll(async () => {
      served = await shape.start({ WS_COMPRESSION: 'dedicated-8kb', WS_COMPRESSION_MIN_BYTES: String(MIN_BYTES) });
    });
    afterAll(() => served?.close());

    it('negotiates a sliding window (no server_no_context_takeover) and delivers compressed frames that decode to the events', async () => {
      const guid = randomGuid();
      const t = await open(served, true);
      expect(t.extensions).toMatch(/^permessage-deflate\b/);
      expect(t.extensions).not.toContain('server_no_context_takeover');
      await t.client.join(guid);
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) ids.push(await served.publish(guid, { type: 'project_message', data: bigData(i) }));
      const got = await t.client.waitForEvents(guid, 3);
      expect(got.map((e) => e.id)).toEqual(ids);
      expect(got.map((e) => e.data)).toEqual([0, 1, 2].map(bigData));
      expect(dataFrames(t).filter((f) => f.rsv1).length).toBeGreaterThanOrEqual(1);
      await t.client.close();
    });
  });

  describe('the defaults (shared, from 1024 bytes)', () => {
    let served: Served;
    beforeAll(async () => {
      served = await shape.start();
    });
    afterAll(() => served?.close());

    it('sends a small event plain and a large one compressed to a client that offered deflate', async () => {
      const guid = randomGuid();
      const t = await open(served, true);
      expect(t.extensions).toContain('server_no_context_takeover');
      await t.client.join(guid);
      const small = await served.publish(guid, { type: 'project_message', data: { text: 'x'.repeat(600) } });
      await t.client.waitForEvents(guid, 1);
      const large = await served.publish(guid, { type: 'project_message', data: bigData(3) });
      expect((await t.client.waitForEvents(guid, 2)).map((e) => e.id)).toEqual([small, large]);
      const frames = dataFrames(t);
      const sizes = t.decodedBytes;
      expect(sizes.at(-2)).toBeLessThan(1024);
      expect(sizes.at(-1)).toBeGreaterThan(1024);
      expect(frames.at(-2)!.rsv1).toBe(false);
      expect(frames.at(-1)!.rsv1).toBe(true);
      await t.client.close();
    });
  });

  describe('WS_COMPRESSION=off', () => {
    let served: Served;
    beforeAll(async () => {
      served = await shape.start({ WS_COMPRESSION: 'off' });
    });
    afterAll(() => served?.close());

    it('negotiates nothing with a client that offers deflate, and sends every frame plain', async () => {
      const guid = randomGuid();
      const t = await open(served, true);
      expect(t.extensions).toBe('');
      expect((t.client.ws as WebSocket).extensions).toBe('');
      await t.client.join(guid);
      const id = await served.publish(guid, { type: 'project_message', data: bigData(0) });
      const [event] = await t.client.waitForEvents(guid, 1);
      expect(event!.id).toBe(id);
      expect(dataFrames(t).some((f) => f.rsv1)).toBe(false);
      expect(dataFrames(t).map((f) => f.wireBytes)).toEqual(t.decodedBytes);
      await t.client.close();
    });
  });
});
