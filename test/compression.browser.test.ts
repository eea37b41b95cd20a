// permessage-deflate with a real headless Chromium (helpers/browser.ts) against a real in-process
// gateway with WS_COMPRESSION=shared: what Chromium offered and what the 101 answered (CDP Network
// events), which server frames crossed the wire compressed (RSV1, read by a TCP relay between the
// two), and that the page decoded exactly the events published.
import net from 'node:net';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launchChromium } from './helpers/browser.js';
import { takeFrames, type WireFrame } from './helpers/wire-frames.js';
import { randomGuid, startGateway, until, userToken, type StartedGateway } from './helpers/gateway.js';

const MIN_BYTES = 300;

/**
 * A TCP relay to the gateway that parses what the gateway sends, after its HTTP answer: the frames'
 * RSV1 bits and lengths as they crossed the wire.
 */
async function startRelay(targetPort: number) {
  const frames: WireFrame[] = [];
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    client.pipe(upstream);
    let pending: Buffer = Buffer.alloc(0);
    let inHeaders = true;
    upstream.on('data', (chunk: Buffer) => {
      client.write(chunk);
      pending = Buffer.concat([pending, chunk]);
      if (inHeaders) {
        const end = pending.indexOf('\r\n\r\n');
        if (end < 0) return;
        pending = pending.subarray(end + 4);
        inHeaders = false;
      }
      pending = takeFrames(pending, frames);
    });
    upstream.on('end', () => client.end());
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return { port, frames, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

function bigData(i: number) {
  return { text: `event ${i}: ` + 'the quick brown fox jumps over the lazy dog. '.repeat(40), items: Array.from({ length: 10 }, (_, k) => ({ name: `item-${k}`, done: k % 2 === 0 })) };
}

describe('Chromium and permessage-deflate (WS_COMPRESSION=shared)', () => {
  let gateway: StartedGateway;
  let browser: Browser;
  let relay: Awaited<ReturnType<typeof startRelay>>;

  beforeAll(async () => {
    [gateway, browser] = await Promise.all([startGateway({ WS_COMPRESSION: 'shared', WS_COMPRESSION_MIN_BYTES: String(MIN_BYTES) }), launchChromium()]);
    relay = await startRelay(gateway.port);
  });
  afterAll(async () => {
    await browser?.close();
    await relay?.close();
    await gateway?.close();
  });

  it('negotiates permessage-deflate, receives large frames compressed, and decodes every event', async () => {
    const page = await browser.newPage();
    const cdp = await page.context().newCDPSession(page);
    await cdp.send('Network.enable');
    let offered = '';
    let answered = '';
    cdp.on('Network.webSocketWillSendHandshakeRequest', (e) => (offered = String(e.request.headers['Sec-WebSocket-Extensions'] ?? '')));
    cdp.on('Network.webSocketHandshakeResponseReceived', (e) => {
      const headers = e.response.headers as Record<string, string>;
      answered = String(Object.entries(headers).find(([k]) => k.toLowerCase() === 'sec-websocket-extensions')?.[1] ?? '');
    });

    const guid = randomGuid();
    const url = `ws://127.0.0.1:${relay.port}/ws?token=${encodeURIComponent(userToken())}`;
    // In the page (about:blank): open the socket through the relay, join, and keep every frame's text.
    await page.evaluate(
      ([url, guid]) =>
        new Promise<void>((resolve, reject) => {
          const g = globalThis as unknown as { received: string[]; WebSocket: new (u: string, p: string) => { onmessage: ((e: { data: string }) => void) | null; onopen: (() => void) | null; onerror: (() => void) | null; send(d: string): void } };
          g.received = [];
          const ws = new g.WebSocket(url!, 'autocode.v1.json');
          ws.onmessage = (e) => {
            g.received.push(e.data);
            if (e.data.includes('"join_project"')) resolve();
          };
          ws.onerror = () => reject(new Error('socket error'));
          ws.onopen = () => ws.send(JSON.stringify({ type: 'join_project', id: 'j1', projectGuid: guid, data: {} }));
        }),
      [url, guid],
    );
    expect(offered).toMatch(/permessage-deflate/);
    expect(answered).toMatch(/^permessage-deflate\b/);

    const sent = [bigData(1), { text: 'small' }, bigData(2)];
    const ids: string[] = [];
    for (const data of sent) {
      ids.push(await gateway.gw.publish(guid, { type: 'project_message', data }));
      // One turn apiece, so the events go out as separate frames (big, small, big).
      await new Promise((r) => setTimeout(r, 50));
    }
    const received = async () => (await page.evaluate(() => (globalThis as unknown as { received: string[] }).received)).map((t) => JSON.parse(t) as unknown);
    await until(async () => (await received()).flat().filter((e) => (e as { type: string }).type === 'project_message').length === 3, 10_000, 'three events in the page');
    const frames = await received();
    const events = frames.flat().filter((e) => (e as { type: string }).type === 'project_message') as { id: string; projectGuid: string; data: unknown }[];
    expect(events.map((e) => e.id)).toEqual(ids);
    expect(events.map((e) => e.data)).toEqual(sent);
    expect(events.every((e) => e.projectGuid === guid)).toBe(true);

    // On the wire: one frame per message the page got; those from MIN_BYTES up compressed, to less than half.
    const texts = await page.evaluate(() => (globalThis as unknown as { received: string[] }).received);
    const dataFrames = relay.frames.filter((f) => f.opcode === 1 || f.opcode === 2);
    expect(dataFrames).toHaveLength(texts.length);
    dataFrames.forEach((f, i) => {
      const decoded = Buffer.byteLength(texts[i]!);
      expect(f.rsv1, `frame ${i} of ${decoded} bytes`).toBe(decoded >= MIN_BYTES);
      if (f.rsv1) expect(f.wireBytes).toBeLessThan(decoded / 2);
    });
    expect(dataFrames.filter((f) => f.rsv1).length).toBeGreaterThanOrEqual(2);
    expect(dataFrames.some((f) => !f.rsv1)).toBe(true);
    await page.close();
  });
});
