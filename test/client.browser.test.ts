// End-to-end test of the browser client library (src/client) in a real headless Chromium (the npm
// one, see helpers/browser.ts) against a real in-process gateway. The page loads the compiled
// library as plain ES modules from a tiny static server, which also hands out tokens (so the test
// can hold a reconnect at getToken()) and forwards POST /v1/tickets to the gateway, so the tests can
// see every ticket request (the harness points the client's `ticketsUrl` at its own origin); one test
// leaves ticketsUrl at its default and fetches tickets from the gateway across origins (CORS).
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createSigner } from 'fast-jwt';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config.js';
import { createGateway } from '../src/gateway.js';
import { launchChromium } from './helpers/browser.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const signer = createSigner({ key: 'test-secret' });
const sign = (ttlMs: number) => signer({ sub: 'browser-user', projects: ['*'], exp: Math.floor((Date.now() + ttlMs) / 1000) });

type Gateway = Awaited<ReturnType<typeof createGateway>>;
type Published = { type: string; projectGuid: string; id: string; data: Record<string, unknown> };

// Runs inside the page (plain JS, not type-checked here). `h.make()` builds a client whose sockets
// are recorded: every frame sent/received, and a per-socket `muted` switch that hides inbound
// frames from the client to simulate a dead connection.
const PAGE = `<!doctype html><meta charset="utf-8"><title>gateway client test</title>
<script type="module">
import * as lib from '/client/index.js';
const h = { lib, c: {} };
h.make = (name, wsUrl, options = {}) => {
  const rec = { events: [], states: [], errors: [], resyncs: [], frames: [], sent: [], sockets: [], closes: [], tokens: 0 };
  class TrackedWS extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      this.muted = false;
      rec.sockets.push(this);
      this.addEventListener('message', (e) => rec.frames.push(e.data));
      this.addEventListener('close', (e) => rec.closes.push(e.code));
    }
    send(data) { rec.sent.push(JSON.parse(data)); super.send(data); }
    get onmessage() { return super.onmessage; }
    set onmessage(fn) { super.onmessage = fn && ((ev) => { if (!this.muted) fn(ev); }); }
  }
  const opts = {
    url: wsUrl,
    getToken: async () => { rec.tokens++; return (await fetch('/token')).text(); },
    WebSocketImpl: TrackedWS,
    reconnect: { minDelayMs: 20, maxDelayMs: 200 },
    ticketsUrl: '/v1/tickets',
    ...options,
  };
  // ticketsUrl: null = the library's default (the gateway's own /v1/tickets, across origins).
  if (opts.ticketsUrl === null) delete opts.ticketsUrl;
  const client = lib.createGatewayClient(opts);
  client.on('event', (e) => rec.events.push({ type: e.type, projectGuid: e.projectGuid, id: e.id, data: e.data }));
  client.on('state', (s) => rec.states.push(s));
  client.on('error', (e) => rec.errors.push({ code: e.code, message: e.message }));
  client.on('resync', (r) => rec.resyncs.push(r));
  h.c[name] = { client, rec };
  return true;
};
window.h = h;
</script>`;

function parseId(id: string): [bigint, bigint] {
  const [ms, seq] = id.split('-');
  return [BigInt(ms!), BigInt(seq!)];
}
function idLess(a: string, b: string): boolean {
  const [am, as] = parseId(a);
  const [bm, bs] = parseId(b);
  return am < bm || (am === bm && as < bs);
}

let gw: Gateway;
let gwPort: number;
let web: Server;
let webPort: number;
let browser: Browser;
let page: Page;
let outDir: string;
let tokenGate: Promise<void> | null = null;
/** Lifetimes (ms) of the next tokens handed out; afterwards tokens last 10 minutes. */
const tokenTtls: number[] = [];
const pageErrors: string[] = [];
/** Every token /token handed out, and every ticket request the page made (as the forwarder saw it). */
const handedTokens: string[] = [];
const ticketCalls: Array<{ url: string; method: string; authorization: string | undefined; status?: number }> = [];

/** Evaluates an expression in the page (where `h` is the harness). */
const ev = <T>(expr: string): Promise<T> => page.evaluate(expr) as Promise<T>;
const waitFor = (expr: string, timeout = 5000) => page.waitForFunction(expr, undefined, { timeout, polling: 20 });
const wsUrl = () => `ws://127.0.0.1:${gwPort}/ws`;
const newClient = (name: string, options: Record<string, unknown> = {}) =>
  ev<boolean>(`h.make(${JSON.stringify(name)}, ${JSON.stringify(wsUrl())}, ${JSON.stringify(options)})`);
const openClient = async (name: string, options: Record<string, unknown> = {}) => {
  await newClient(name, options);
  await waitFor(`h.c.${name}.client.state === 'open'`);
};
type EventType = Parameters<Gateway['publish']>[1]['type'];
const publish = (guid: string, type: EventType, data: Record<string, unknown>) => gw.publish(guid, { type, data });

describe('browser client (Chromium + real gateway)', () => {
  beforeAll(async () => {
    // Compile the library on its own (as `npm run build` does) into a scratch dir, so the test
    // never serves a stale dist/ and never races a concurrent build.
    outDir = mkdtempSync(join(tmpdir(), 'gw-client-'));
    execFileSync(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', join(ROOT, 'tsconfig.client.json'), '--outDir', outDir], { stdio: 'pipe' });

    // A 1 s sweep and no clock tolerance make token expiry (4401) observable within the test.
    const config = parseConfig({
      JWT_SECRET: 'test-secret', PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'silent', HEARTBEAT_INTERVAL_S: '1', JWT_CLOCK_TOLERANCE_S: '0',
    });
    gw = await createGateway(config);
    gwPort = await gw.listen();

    web = createServer((req, res) => {
      const path = new URL(req.url ?? '/', 'http://x').pathname;
      if (path === '/') {
        res.writeHead(200, { 'content-type': 'text/html' }).end(PAGE);
      } else if (path === '/token') {
        const ttl = tokenTtls.shift() ?? 600_000;
        void (tokenGate ?? Promise.resolve()).then(() => {
          const token = sign(ttl);
          handedTokens.push(token);
          res.writeHead(200, { 'content-type': 'text/plain' }).end(token);
        });
      } else if (path === '/v1/tickets') {
        const call: (typeof ticketCalls)[number] = { url: req.url ?? '', method: req.method ?? '', authorization: req.headers.authorization };
        ticketCalls.push(call);
        void fetch(`http://127.0.0.1:${gwPort}/v1/tickets`, { method: 'POST', headers: { authorization: req.headers.authorization ?? '' } }).then(async (r) => {
          call.status = r.status;
          const retryAfter = r.headers.get('retry-after');
          res.writeHead(r.status, { 'content-type': 'application/json', ...(retryAfter ? { 'retry-after': retryAfter } : {}) }).end(await r.text());
        });
      } else if (path.endsWith('.js')) {
        // The browser build keeps src/'s layout: /client/index.js imports /protocol/*.js and /errors.js.
        const file = normalize(join(outDir, path));
        if (!file.startsWith(outDir) || !existsSync(file)) return void res.writeHead(404).end();
        res.writeHead(200, { 'content-type': 'text/javascript' }).end(readFileSync(file));
      } else {
        res.writeHead(404).end();
      }
    });
    await new Promise<void>((resolve) => web.listen(0, '127.0.0.1', resolve));
    webPort = (web.address() as AddressInfo).port;

    browser = await launchChromium();
    page = await browser.newPage();
    page.on('pageerror', (err) => pageErrors.push(String(err)));
    await page.goto(`http://127.0.0.1:${webPort}/`);
    await waitFor('window.h !== undefined');
  }, 30_000);

  afterAll(async () => {
    await browser?.close();
    await gw?.close();
    await new Promise((resolve) => (web ? web.close(resolve) : resolve(undefined)));
    if (outDir) rmSync(outDir, { recursive: true, force: true });
    expect(pageErrors).toEqual([]); // e.g. an exception thrown out of the library's timers
  });

  it('receives live events published on the server', async () => {
    const guid = randomUUID();
    await openClient('live');
    const ack = await ev<{ latestId: string }>(`h.c.live.client.join(${JSON.stringify(guid)})`);
    expect(typeof ack.latestId).toBe('string');
    const sent: Array<{ type: EventType; data: Record<string, unknown> }> = [
      { type: 'project_message', data: { text: 'hello' } },
      { type: 'project_stage_update', data: { stage: 'build', progress: 0.5 } },
      { type: 'agent_message', data: { agent: 'coder', text: 'done' } },
    ];
    const ids: string[] = [];
    for (const e of sent) ids.push(await publish(guid, e.type, e.data));
    await waitFor('h.c.live.rec.events.length >= 3');
    const got = await ev<Published[]>('h.c.live.rec.events');
    expect(got).toEqual(sent.map((e, i) => ({ ...e, projectGuid: guid, id: ids[i] })));
    expect(await ev<string | null>(`h.c.live.client.lastEventId(${JSON.stringify(guid)})`)).toBe(ids[2]);
    await ev('h.c.live.client.close()');
  });

  it('connects with a one-time ticket: the token only in the ticket request header, ?ticket= (never ?token=) on the socket', async () => {
    const callsBefore = ticketCalls.length;
    await openClient('tk');
    await ev('h.c.tk.rec.sockets[0].close()'); // a reconnect takes a new ticket
    await waitFor(`h.c.tk.rec.sockets.length === 2 && h.c.tk.client.state === 'open'`);
    // One getToken() per connect, each token POSTed in the header for the ticket of that connect.
    expect(ticketCalls.slice(callsBefore)).toEqual(
      handedTokens.slice(-2).map((t) => ({ url: '/v1/tickets', method: 'POST', authorization: `Bearer ${t}`, status: 201 })),
    );
    const urls = await ev<string[]>('h.c.tk.rec.sockets.map((s) => s.url)');
    expect(urls).toHaveLength(2);
    for (const u of urls) {
      const url = new URL(u);
      expect(url.searchParams.get('ticket')).toMatch(/^[A-Za-z0-9_-]{43}$/);
      expect(url.searchParams.has('token')).toBe(false);
      for (const t of handedTokens) expect(u).not.toContain(t);
    }
    expect(new URL(urls[0]!).searchParams.get('ticket')).not.toBe(new URL(urls[1]!).searchParams.get('ticket'));
    expect(await ev<number>('h.c.tk.client.ping()')).toBeLessThan(1000);
    await ev('h.c.tk.client.close()');
  });

  it("gets its ticket from the gateway's own /v1/tickets across origins (the default ticketsUrl: a CORS preflight, then the POST)", async () => {
    const callsBefore = ticketCalls.length;
    await openClient('cors', { ticketsUrl: null });
    // Nothing went through the page's own origin: the browser asked the gateway directly.
    expect(ticketCalls.length).toBe(callsBefore);
    expect(new URL(await ev<string>('h.c.cors.rec.sockets[0].url')).searchParams.get('ticket')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(await ev<unknown[]>('h.c.cors.rec.errors')).toEqual([]);
    await ev('h.c.cors.client.close()');
  });

  it("connectWith: 'query-token' (the opt-out) connects with ?token= and asks for no ticket", async () => {
    const callsBefore = ticketCalls.length;
    await openClient('qt', { connectWith: 'query-token' });
    expect(ticketCalls.length).toBe(callsBefore);
    const url = new URL(await ev<string>('h.c.qt.rec.sockets[0].url'));
    expect(url.searchParams.get('token')).toBe(handedTokens.at(-1));
    expect(url.searchParams.has('ticket')).toBe(false);
    await ev('h.c.qt.client.close()');
  });

  it('accepts batched (array) frames: 50 events published in one tick arrive once, in order', async () => {
    const guid = randomUUID();
    await openClient('batch');
    await ev(`h.c.batch.client.join(${JSON.stringify(guid)})`);
    const ids = await Promise.all(Array.from({ length: 50 }, (_, n) => publish(guid, 'project_message', { n })));
    await waitFor('h.c.batch.rec.events.length >= 50');
    await new Promise((r) => setTimeout(r, 100)); // anything extra (a duplicate) would show up now
    const got = await ev<Published[]>('h.c.batch.rec.events');
    expect(got.map((e) => e.data.n)).toEqual(Array.from({ length: 50 }, (_, n) => n));
    expect(got.map((e) => e.id)).toEqual(ids);
    for (let i = 1; i < got.length; i++) expect(idLess(got[i - 1]!.id, got[i]!.id)).toBe(true);
    // The array code path must actually have been exercised.
    const frames = await ev<string[]>('h.c.batch.rec.frames');
    const arrays = frames.filter((f) => f.startsWith('['));
    expect(arrays.length).toBeGreaterThan(0);
    expect(arrays.some((f) => (JSON.parse(f) as unknown[]).length > 1)).toBe(true);
    await ev('h.c.batch.client.close()');
  });

  it('reconnects after a dropped socket and resumes: every missed event exactly once, in order, then live', async () => {
    const guid = randomUUID();
    const guid2 = randomUUID();
    await openClient('rc');
    await ev(`h.c.rc.client.join(${JSON.stringify(guid)})`);
    const before = [await publish(guid, 'project_message', { n: 0 }), await publish(guid, 'project_message', { n: 1 })];
    await waitFor('h.c.rc.rec.events.length >= 2');

    // Hold the reconnect at getToken() so the events below are published while disconnected.
    let openGate!: () => void;
    tokenGate = new Promise<void>((resolve) => { openGate = resolve; });
    await ev('h.c.rc.rec.sockets.at(-1).close()');
    await waitFor(`h.c.rc.client.state === 'reconnecting' && h.c.rc.rec.tokens === 2`);
    const missed: string[] = [];
    for (let n = 2; n < 7; n++) missed.push(await publish(guid, 'project_message', { n }));
    // Requests made while offline are queued and flushed once the connection is back.
    await ev(`(h.joinP = h.c.rc.client.join(${JSON.stringify(guid2)}), h.fbP = h.c.rc.client.sendFeedback(${JSON.stringify(guid)}, 'queued while offline'), true)`);
    openGate();
    tokenGate = null;

    await waitFor('h.c.rc.rec.events.length >= 7');
    const after: string[] = [];
    for (let n = 7; n < 10; n++) after.push(await publish(guid, 'project_message', { n }));
    await waitFor('h.c.rc.rec.events.length >= 10');
    await new Promise((r) => setTimeout(r, 150));

    const got = await ev<Published[]>('h.c.rc.rec.events');
    expect(got.map((e) => e.id)).toEqual([...before, ...missed, ...after]);
    expect(got.map((e) => e.data.n)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(await ev<unknown[]>('h.c.rc.rec.resyncs')).toEqual([]);
    expect(await ev<number>('h.c.rc.rec.sockets.length')).toBe(2);
    expect(await ev<string[]>('h.c.rc.rec.states')).toEqual(['open', 'reconnecting', 'open']);
    // The re-join on the new socket asked for exactly what came after the last event seen.
    const rejoin = await ev<Array<{ type: string; projectGuid: string; data: { since?: string } }>>(
      `h.c.rc.rec.sent.filter((f) => f.type === 'join_project' && f.projectGuid === ${JSON.stringify(guid)})`,
    );
    expect(rejoin.map((f) => f.data.since)).toEqual([undefined, before[1]]);
    // ... and the queued join and feedback went through.
    expect(await ev<{ latestId: string }>('h.joinP')).toHaveProperty('latestId');
    expect(await ev<{ accepted: unknown }>('h.fbP')).toHaveProperty('accepted');
    await ev('h.c.rc.client.close()');
  });

  it('token expiry: on 4401 it fetches a fresh token, reconnects and resumes without gaps or duplicates', async () => {
    const guid = randomUUID();
    tokenTtls.push(2000); // the first token expires within 1-2 s (exp has 1 s resolution), the next ones do not
    await openClient('exp', { renewBeforeMs: 0 }); // no renewal: let the server close with 4401
    await ev(`h.c.exp.client.join(${JSON.stringify(guid)})`);
    const first = await publish(guid, 'project_status_change', { status: 'running' });
    await waitFor('h.c.exp.rec.events.length >= 1');
    await waitFor(`h.c.exp.rec.sockets.length === 2 && h.c.exp.client.state === 'open'`, 5000);
    const second = await publish(guid, 'project_status_change', { status: 'done' });
    await waitFor('h.c.exp.rec.events.length >= 2');
    await new Promise((r) => setTimeout(r, 100));
    expect(await ev<number[]>('h.c.exp.rec.closes')).toEqual([4401]);
    expect(await ev<number>('h.c.exp.rec.tokens')).toBe(2);
    expect((await ev<Published[]>('h.c.exp.rec.events')).map((e) => e.id)).toEqual([first, second]);
    const sinces = await ev<Array<string | undefined>>(`h.c.exp.rec.sent.filter((f) => f.type === 'join_project').map((f) => f.data.since)`);
    expect(sinces).toEqual([undefined, first]);
    await ev('h.c.exp.client.close()');
  });

  it('token renewal: auth_refresh with a fresh getToken() before exp keeps the same socket, so the server never closes with 4401', async () => {
    const guid = randomUUID();
    tokenTtls.push(3000); // exp 2-3 s ahead; renewal at half the remaining lifetime (renewBeforeMs is larger)
    await openClient('renew', { renewBeforeMs: 5000 });
    await ev(`h.c.renew.client.join(${JSON.stringify(guid)})`);
    const first = await publish(guid, 'project_message', { n: 0 });
    await waitFor('h.c.renew.rec.events.length >= 1');
    await waitFor(`h.c.renew.rec.sent.some((f) => f.type === 'auth_refresh')`, 5000);
    // Past the first token's exp plus the server's 1 s sweep: the one socket is still open and live.
    await new Promise((r) => setTimeout(r, 2500));
    const second = await publish(guid, 'project_message', { n: 1 });
    await waitFor('h.c.renew.rec.events.length >= 2');
    expect(await ev<number[]>('h.c.renew.rec.closes')).toEqual([]);
    expect(await ev<number>('h.c.renew.rec.sockets.length')).toBe(1);
    expect(await ev<number>('h.c.renew.rec.tokens')).toBeGreaterThanOrEqual(2);
    expect(await ev<string[]>('h.c.renew.rec.states')).toEqual(['open']);
    expect((await ev<Published[]>('h.c.renew.rec.events')).map((e) => e.id)).toEqual([first, second]);
    const acks = await ev<Array<{ type: string }>>(`h.c.renew.rec.frames.map((f) => JSON.parse(f)).filter((f) => f.type === 'auth_refresh')`);
    expect(acks.length).toBeGreaterThanOrEqual(1);
    await ev('h.c.renew.client.close()');
  });

  it('heartbeat: ping/pong round trip, periodic pings answered, dead connection detected and replaced', async () => {
    await openClient('hb', { heartbeatIntervalMs: 100, heartbeatTimeoutMs: 600 });
    const rtt = await ev<number>('h.c.hb.client.ping()');
    expect(rtt).toBeGreaterThanOrEqual(0);
    expect(rtt).toBeLessThan(1000);

    await new Promise((r) => setTimeout(r, 550));
    const pings = await ev<number>(`h.c.hb.rec.sent.filter((f) => f.type === 'ping').length`);
    const pongs = await ev<Array<{ id: string; data: { serverTime: number } }>>(
      `h.c.hb.rec.frames.map((f) => JSON.parse(f)).filter((f) => f.type === 'pong')`,
    );
    expect(pings).toBeGreaterThanOrEqual(4); // 1 explicit + >= 3 heartbeats
    expect(pongs.length).toBeGreaterThanOrEqual(pings - 1); // the last one may still be in flight
    expect(typeof pongs[0]!.data.serverTime).toBe('number');
    const sentIds = await ev<string[]>(`h.c.hb.rec.sent.filter((f) => f.type === 'ping').map((f) => f.id)`);
    for (const p of pongs) expect(sentIds).toContain(p.id);
    expect(await ev<number>('h.c.hb.rec.sockets.length')).toBe(1);

    // Silence the socket: no frame after a ping within heartbeatTimeoutMs means it is dead.
    await ev('h.c.hb.rec.sockets[0].muted = true');
    await waitFor(`h.c.hb.rec.sockets.length === 2 && h.c.hb.client.state === 'open'`, 3000);
    expect(await ev<string[]>('h.c.hb.rec.states')).toEqual(['open', 'reconnecting', 'open']);
    expect(await ev<number>('h.c.hb.client.ping()')).toBeLessThan(1000);
    await ev('h.c.hb.client.close()');
  });

  it('sendFeedback resolves with the user_feedback_response and rejects on an error frame', async () => {
    const guid = randomUUID();
    await openClient('fb');
    await ev(`h.c.fb.client.join(${JSON.stringify(guid)})`);
    const res = await ev<{ accepted: unknown; forwarded: unknown }>(
      `h.c.fb.client.sendFeedback(${JSON.stringify(guid)}, 'looks good', { meta: { rating: 5 } })`,
    );
    expect(typeof res.accepted).toBe('boolean');
    expect(typeof res.forwarded).toBe('boolean');
    const reply = await ev<Array<{ id: string }>>(`h.c.fb.rec.frames.map((f) => JSON.parse(f)).filter((f) => f.type === 'user_feedback_response')`);
    const request = await ev<Array<{ id: string }>>(`h.c.fb.rec.sent.filter((f) => f.type === 'user_feedback')`);
    expect(reply.map((f) => f.id)).toEqual(request.map((f) => f.id));

    // Empty content is invalid per the protocol: the promise rejects with the server's code.
    const failure = await ev<{ code: string; message: string }>(
      `h.c.fb.client.sendFeedback(${JSON.stringify(guid)}, '').then(() => ({ code: 'RESOLVED' }), (e) => ({ code: e.code, message: e.message }))`,
    );
    expect(failure.code).not.toBe('RESOLVED');
    expect(failure.code).toMatch(/^[A-Z_]+$/);
    expect(await ev<Array<{ code: string }>>('h.c.fb.rec.errors')).toEqual([expect.objectContaining({ code: failure.code })]);
    expect(await ev<string>('h.c.fb.client.state')).toBe('open'); // the connection survives an error frame
    await ev('h.c.fb.client.close()');
    expect(await ev<string>('h.c.fb.client.state')).toBe('closed');
  });

  it('drops replayed duplicates and stale ids, compares ids numerically, and reports resync (scripted socket)', async () => {
    // A scripted socket lets the test send exactly the overlapping replays a real server must not
    // (but a client must survive) and check the client-side dedupe in isolation.
    const result = await ev<{ delivered: string[]; sinces: Array<string | undefined>; resyncs: unknown[]; states: string[] }>(`(async () => {
      const sockets = [];
      class FakeWS {
        constructor(url) { this.url = url; this.readyState = 0; this.sent = []; sockets.push(this);
          setTimeout(() => { this.readyState = 1; this.onopen?.({}); }, 0); }
        send(d) { this.sent.push(JSON.parse(d)); }
        close(code = 1000) { this.readyState = 3; setTimeout(() => this.onclose?.({ code, reason: '' }), 0); }
        push(x) { this.onmessage?.({ data: JSON.stringify(x) }); }
      }
      const until = async (f) => { for (let i = 0; i < 200 && !f(); i++) await new Promise((r) => setTimeout(r, 5)); if (!f()) throw new Error('timeout'); };
      const G = 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee';
      const ev = (id) => ({ type: 'project_message', projectGuid: G, data: {}, id, timestamp: '' });
      const delivered = [], resyncs = [], states = [];
      // connectWith 'query-token': the scripted socket plays the gateway, there is no ticket endpoint.
      const c = h.lib.createGatewayClient({ url: 'ws://fake/ws', getToken: () => 't', WebSocketImpl: FakeWS,
        connectWith: 'query-token', reconnect: { minDelayMs: 1, maxDelayMs: 5 } });
      c.on('event', (e) => delivered.push(e.id));
      c.on('resync', (r) => resyncs.push(r));
      c.on('state', (s) => states.push(s));
      const joined = c.join(G.toUpperCase());
      await until(() => sockets[0]?.sent.length === 1);
      let s = sockets[0], j = s.sent[0];
      s.push({ type: 'join_project', projectGuid: G, id: j.id, data: { latestId: '990-0' } });
      await joined;
      s.push([ev('980-0'), ev('990-0'), ev('999-0'), ev('999-1')]);   // first two: already before the join
      s.push(ev('999-1'));                                            // duplicate
      s.push([ev('1000-0'), ev('999-5')]);                            // numeric, not lexical; then stale
      s.close(1006);
      await until(() => sockets[1]?.sent.length === 1);
      s = sockets[1]; j = s.sent[0];
      s.push([ev('999-1'), ev('1000-0'), ev('1000-1')]);             // overlapping replay
      s.push({ type: 'join_project', projectGuid: G, id: j.id, data: { latestId: '1000-1', recovered: true, replayed: 3 } });
      s.push(ev('1000-2'));
      s.close(4401);
      await until(() => sockets[2]?.sent.length === 1);
      s = sockets[2]; const j3 = s.sent[0];
      s.push({ type: 'join_project', projectGuid: G, id: j3.id, data: { latestId: '5-0', recovered: false, replayed: 0 } });
      s.push(ev('4-9'));                                              // older than the new latestId
      s.push(ev('5-1'));
      c.close();
      s.push(ev('5-2'));                                              // after close(): ignored
      await new Promise((r) => setTimeout(r, 30));
      return { delivered, sinces: sockets.map((x) => x.sent[0]?.data.since), resyncs, states, count: sockets.length };
    })()`);
    expect(result.delivered).toEqual(['999-0', '999-1', '1000-0', '1000-1', '1000-2', '5-1']);
    expect(result.sinces).toEqual([undefined, '1000-0', '1000-2']);
    expect(result.resyncs).toEqual([{ projectGuid: 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee', since: '1000-2', latestId: '5-0' }]);
    expect(result.states).toEqual(['open', 'reconnecting', 'open', 'reconnecting', 'open', 'closed']);
  });
});
