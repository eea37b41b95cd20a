// The live project page (public/, served by the gateway at /) in a real headless Chromium, against
// a real gateway PROCESS (node dist/main.js) on a real Redis, with a stand-in agents-server.
// It checks what a person would see: events appended with redis-cli XADD, a feedback round trip,
// and every event exactly once, in order, across a gateway restart and across a network drop.
import { mkdirSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { WebSocketServer, type WebSocket } from 'ws';
import { launchChromium } from './helpers/browser.js';
import { randomGuid, until } from './helpers/gateway.js';
import { freePorts } from './helpers/ports.js';
import { REPO_ROOT, spawnGateway, type GatewayProcess } from './helpers/processes.js';
import { startRedis, type RedisServer } from './helpers/redis.js';

// Starts with "dev-": the gateway runs in DEV MODE, so the page can mint its own token.
const DEV_SECRET = 'dev-page-test-secret';
const ARTIFACTS = join(REPO_ROOT, 'test-results');
const streamKey = (guid: string) => `autocode:{${guid}}:events`;
// In-page functions reach `document` through globalThis: this file is type-checked without the DOM
// library, and the page's CSP (no eval) rules out string expressions in waitForFunction.

/**
 * A stand-in for the agents-server speaking docs/agents.md, kept to what this page needs: it records
 * `user_feedback` frames, acks each (`feedback_ack`) and answers the user who sent it with a targeted
 * `user_feedback_response` (top-level `userId`, `id` = the feedback's request id).
 */
async function startStandInAgents() {
  const wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await new Promise((r) => wss.once('listening', r));
  const feedback: Array<{ projectGuid: string; data: { userId: string; requestId: string; content: string; feedbackId: string } }> = [];
  const sockets = new Set<WebSocket>();
  wss.on('connection', (ws) => {
    sockets.add(ws);
    ws.on('close', () => sockets.delete(ws));
    ws.on('message', (raw) => {
      const frame = JSON.parse(String(raw)) as { type: string; projectGuid: string; data: { userId: string; requestId: string; content: string; feedbackId: string } };
      if (frame.type !== 'user_feedback') return;
      feedback.push(frame);
      ws.send(JSON.stringify({ type: 'feedback_ack', data: { feedbackIds: [frame.data.feedbackId] } }));
      ws.send(
        JSON.stringify({
          type: 'user_feedback_response',
          userId: frame.data.userId,
          projectGuid: frame.projectGuid,
          id: frame.data.requestId,
          data: { feedbackId: frame.data.feedbackId, status: 'processed', text: `on it: ${frame.data.content}` },
        }),
      );
    });
  });
  const { port } = wss.address() as { port: number };
  return {
    url: `ws://127.0.0.1:${port}/gateway`,
    feedback,
    connected: () => sockets.size > 0,
    async stop() {
      for (const ws of sockets) ws.terminate();
      await new Promise((r) => wss.close(r));
    },
  };
}

/**
 * A TCP forwarder between the browser and the gateway, so the test can cut the network under the
 * page: cut() destroys every open connection (the page's WebSocket dies as on a network loss) and
 * refuses new ones until restore().
 */
async function startCuttableProxy(targetPort: number) {
  const open = new Set<net.Socket>();
  let up = true;
  const server = net.createServer((client) => {
    if (!up) return void client.destroy();
    const upstream = net.connect(targetPort, '127.0.0.1');
    for (const s of [client, upstream]) {
      open.add(s);
      s.on('error', () => {});
      s.on('close', () => { open.delete(s); client.destroy(); upstream.destroy(); });
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    cut() {
      up = false;
      for (const s of open) s.destroy();
    },
    restore() { up = true; },
    close: () => new Promise((r) => { for (const s of open) s.destroy(); server.close(r); }),
  };
}

let redis: RedisServer;
let producer: Redis;
let agents: Awaited<ReturnType<typeof startStandInAgents>>;
let gatewayPort: number;
let gw: GatewayProcess;
let browser: Browser;
const pageErrors: string[] = [];
/** Every URL the pages requested or opened a WebSocket to, and every ticket request they made. */
const pageUrls: string[] = [];
const ticketPosts: Array<{ method: string; authorization: string | undefined }> = [];

const startGatewayProcess = () =>
  spawnGateway({
    PORT: String(gatewayPort), HOST: '127.0.0.1', JWT_SECRET: DEV_SECRET, REDIS_URL: redis.url,
    AGENTS_URL: agents.url, LOG_LEVEL: 'warn', NODE_ID: 'page-test',
  });

/** XADD as any producer would (README, producer contract); resolves with the entry id. */
const xadd = (guid: string, type: string, data: Record<string, unknown>) =>
  producer.xadd(streamKey(guid), 'MAXLEN', '~', '10000', '*', 'type', type, 'data', JSON.stringify(data)) as Promise<string>;

/** Opens the page at `baseUrl`, mints a dev token, connects and opens project `guid`. */
async function openPage(baseUrl: string, guid: string, encoding: 'json' | 'msgpack' = 'json'): Promise<Page> {
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  page.on('pageerror', (err) => pageErrors.push(String(err)));
  page.on('websocket', (ws) => pageUrls.push(ws.url()));
  page.on('request', (req) => {
    pageUrls.push(req.url());
    if (new URL(req.url()).pathname === '/v1/tickets') ticketPosts.push({ method: req.method(), authorization: req.headers()['authorization'] });
  });
  await page.goto(baseUrl + '/');
  await page.waitForSelector('body[data-ready="true"]');
  await page.click('#mint');
  await page.waitForFunction(() => (globalThis as any).document.getElementById('token').value.split('.').length === 3);
  await page.fill('#guid', guid);
  await page.selectOption('#encoding', encoding);
  await page.click('#connect');
  await page.waitForSelector(`#project[data-joined="${guid}"]`);
  return page;
}

/** Event ids in the page's table, oldest first (the table shows newest first). */
const shownIds = (page: Page) => page.evaluate(() => Array.from((globalThis as any).document.querySelectorAll('#event-rows tr'), (r: any) => r.dataset.id as string).reverse());
const text = (page: Page, selector: string) => page.textContent(selector).then((t) => t ?? '');

beforeAll(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  [redis, agents, [gatewayPort = 0], browser] = await Promise.all([startRedis(), startStandInAgents(), freePorts(1), launchChromium()]);
  producer = new Redis(redis.url, { lazyConnect: false });
  gw = await startGatewayProcess();
}, 60_000);

afterAll(async () => {
  await browser?.close();
  producer?.disconnect();
  await gw?.stop();
  await agents?.stop();
  await redis?.stop();
  expect(pageErrors).toEqual([]); // an exception in app.js or the client library
  // Across every test (restarts, drops, resync): no token in any URL, tickets only on sockets.
  expect(pageUrls.filter((u) => new URL(u).searchParams.has('token'))).toEqual([]);
  expect(pageUrls.filter((u) => u.startsWith('ws') && !new URL(u).searchParams.has('ticket'))).toEqual([]);
});

describe('live project page (Chromium, gateway process, Redis)', () => {
  it('shows the DEV MODE sign-in and, once connected, events appended with redis-cli XADD, with their ids', async () => {
    const guid = randomGuid();
    const page = await openPage(gw.url, guid);
    expect(await page.isVisible('#dev-badge')).toBe(true);
    expect(await page.getAttribute('#state', 'data-state')).toBe('open');
    expect(await text(page, '#protocol')).toBe('autocode.v1.json');
    // The page connected through a ticket: the token went only into the ticket request's header.
    const token = await page.inputValue('#token');
    expect(ticketPosts).toContainEqual({ method: 'POST', authorization: `Bearer ${token}` });
    const sockets = pageUrls.filter((u) => u.startsWith('ws'));
    expect(sockets.length).toBeGreaterThan(0);
    for (const u of sockets) expect(new URL(u).searchParams.get('ticket')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    for (const u of pageUrls) expect(u).not.toContain(token);

    // The producer contract, literally: redis-cli XADD on the project's stream.
    const stageId = await redis.cli('XADD', streamKey(guid), 'MAXLEN', '~', '10000', '*', 'type', 'project_stage_update', 'data', '{"stage":"build"}');
    const statusId = await redis.cli('XADD', streamKey(guid), '*', 'type', 'project_status_change', 'data', '{"status":"running"}');
    await page.waitForFunction((id) => (globalThis as any).document.getElementById('last-id').textContent === id, statusId);
    expect(await shownIds(page)).toEqual([stageId, statusId]);
    expect(await text(page, '#stage')).toBe('build');
    expect(await text(page, '#status')).toBe('running');
    expect(await text(page, '#event-count')).toBe('2');
    expect(await page.$$eval('#event-rows tr td:nth-child(3)', (cells) => cells.map((c) => c.textContent))).toEqual(['project_status_change', 'project_stage_update']);
    await page.close();
  });

  it('feedback round trip: the durable ack (status, feedbackId) and the agents-server reply to this user appear on the page', async () => {
    await until(agents.connected, 5000, 'the gateway to connect to the stand-in agents-server');
    const guid = randomGuid();
    const page = await openPage(gw.url, guid);
    await xadd(guid, 'project_stage_update', { stage: 'review' });
    await xadd(guid, 'project_status_change', { status: 'waiting for feedback' });
    await page.fill('#feedback-text', 'Please add a test for the login page');
    await page.click('#send-feedback');

    await page.waitForSelector('#feedback-log .log-reply');
    const ack = await text(page, '#feedback-log .log-ack');
    expect(ack).toContain('status=accepted durable=true');
    expect(await text(page, '#feedback-log .log-reply')).toContain('agent: on it: Please add a test for the login page [processed]');
    expect(agents.feedback).toHaveLength(1);
    expect(agents.feedback[0]).toMatchObject({ projectGuid: guid, data: { userId: 'dev-user', content: 'Please add a test for the login page' } });
    expect(ack).toContain(`feedbackId=${agents.feedback[0]!.data.feedbackId}`);
    // The reply went to this user, not to the room: the room's events are still the two above.
    expect(await shownIds(page)).toHaveLength(2);
    expect(await text(page, '#stage')).toBe('review');

    await page.screenshot({ path: join(ARTIFACTS, 'live-project-page.png'), fullPage: true });
    await page.close();
  });

  it('the gateway process is killed and restarted while events keep coming: every event exactly once, in order', async () => {
    const guid = randomGuid();
    const page = await openPage(gw.url, guid);
    const appended: string[] = [];
    let appending = true;
    const producerLoop = (async () => {
      for (let n = 0; appending; n++) {
        appended.push(await xadd(guid, 'project_message', { n }));
        await new Promise((r) => setTimeout(r, 25));
      }
    })();

    await until(async () => (await shownIds(page)).length >= 5, 5000, 'the first live events');
    await gw.stop('SIGKILL'); // a crash: no close frame, the page sees its socket drop
    await until(async () => (await page.getAttribute('#state', 'data-state')) === 'reconnecting', 5000, 'the page to notice');
    const whileDown = appended.length;
    await new Promise((r) => setTimeout(r, 300));
    gw = await startGatewayProcess(); // same port, as a restarted service would have
    await until(async () => (await page.getAttribute('#state', 'data-state')) === 'open', 10_000, 'the page to reconnect');
    const afterReconnect = appended.length;
    await until(() => appended.length >= afterReconnect + 5, 5000, 'more live events');
    appending = false;
    await producerLoop;

    await until(async () => (await shownIds(page)).length >= appended.length, 10_000, 'every appended event on the page');
    expect(appended.length).toBeGreaterThan(whileDown); // events were appended while it was down
    expect(await shownIds(page)).toEqual(appended);
    expect(await text(page, '#last-close')).toMatch(/^1006/);
    await page.close();
  });

  it('a network drop (TCP connections cut under the page, MessagePack): every event exactly once, in order', async () => {
    const proxy = await startCuttableProxy(gw.port);
    try {
      const guid = randomGuid();
      const page = await openPage(proxy.url, guid, 'msgpack');
      expect(await text(page, '#protocol')).toBe('autocode.v1.msgpack');
      const appended = [await xadd(guid, 'project_message', { n: 0 }), await xadd(guid, 'project_message', { n: 1 })];
      await until(async () => (await shownIds(page)).length === 2, 5000, 'the first two events');

      proxy.cut();
      await until(async () => (await page.getAttribute('#state', 'data-state')) === 'reconnecting', 5000, 'the page to notice the drop');
      for (let n = 2; n < 12; n++) appended.push(await xadd(guid, 'project_message', { n }));
      await new Promise((r) => setTimeout(r, 500)); // reconnect attempts meanwhile are refused
      expect(await shownIds(page)).toHaveLength(2);
      proxy.restore();

      await until(async () => (await page.getAttribute('#state', 'data-state')) === 'open', 10_000, 'the page to reconnect');
      for (let n = 12; n < 15; n++) appended.push(await xadd(guid, 'project_message', { n }));
      await until(async () => (await shownIds(page)).length >= appended.length, 10_000, 'every event on the page');
      await new Promise((r) => setTimeout(r, 100)); // a duplicate would show up now
      expect(await shownIds(page)).toEqual(appended);
      expect(await text(page, '#event-count')).toBe(String(appended.length));
      expect(await page.isVisible('#resync-notice')).toBe(false);
      await page.close();
    } finally {
      await proxy.close();
    }
  });

  it('shows the resync notice when the history no longer reaches back (stream deleted while away)', async () => {
    const proxy = await startCuttableProxy(gw.port);
    try {
      const guid = randomGuid();
      const page = await openPage(proxy.url, guid);
      const first = await xadd(guid, 'project_message', { n: 0 });
      await until(async () => (await shownIds(page)).length === 1, 5000, 'the first event');
      proxy.cut();
      await until(async () => (await page.getAttribute('#state', 'data-state')) === 'reconnecting', 5000, 'the page to notice the drop');
      await producer.del(streamKey(guid)); // e.g. expired, or Redis restarted without persistence
      const after = await xadd(guid, 'project_message', { n: 1 });
      proxy.restore();
      await page.waitForSelector('#resync-notice', { state: 'visible', timeout: 10_000 });
      expect(await text(page, '#resync-since')).toBe(first);
      expect(await text(page, '#resync-notice')).toContain('Reload');
      expect(await text(page, '#resync-latest')).toBe(after);
      // Live events continue after the server's latestId (what came before it is the app's reload).
      const live = await xadd(guid, 'project_message', { n: 2 });
      await until(async () => (await shownIds(page)).includes(live), 5000, 'a live event after the resync');
      expect(await shownIds(page)).toEqual([first, live]);
      await page.close();
    } finally {
      await proxy.close();
    }
  });
});
