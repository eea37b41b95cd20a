// The browser client's state machine in Node, driven through a scripted WebSocket and fake timers:
// backoff and jitter, close-code handling, de-duplication, the request queue and its timeouts,
// token renewal, MessagePack and the ticket request before each connect (against a scripted ticket
// endpoint). (The same library runs against a real gateway in Chromium in client.browser.test.ts
// and in Node in client.tickets.test.ts; here each decision is isolated so a wrong one fails by name.)
import { createSigner } from 'fast-jwt';
import { Packr } from 'msgpackr';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  SUBPROTOCOLS as CLIENT_SUBPROTOCOLS,
  backoffDelay,
  closeDecision,
  createGatewayClient,
  renewalDelayMs,
  tokenExpiryMs,
  type GatewayClient,
  type FetchLike,
  type GatewayClientOptions,
  type WebSocketLike,
} from '../src/client/index.js';
import { DEFAULT_RECONNECT } from '../src/client/policy.js';
import { SUBPROTOCOLS as SERVER_SUBPROTOCOLS } from '../src/protocol/codec.js';

const GUID = 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee';
const packr = new Packr({ useRecords: false, mapsAsObjects: true });
type Sent = { type: string; projectGuid?: string; id: string; data?: Record<string, unknown> };

/** A WebSocket the test plays the server side of. */
class ScriptedSocket implements WebSocketLike {
  readyState = 0;
  protocol = '';
  binaryType?: string;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: unknown) => void) | null = null;
  onclose: ((ev: unknown) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  readonly sent: Sent[] = [];
  closedWith: number | undefined;
  constructor(readonly url: string, readonly protocols?: string | string[]) {
    sockets.push(this);
  }
  send(data: string | Uint8Array): void {
    this.sent.push((typeof data === 'string' ? JSON.parse(data) : packr.unpack(data)) as Sent);
  }
  close(code = 1000): void {
    this.closedWith = code;
    this.readyState = 3;
  }
  // ---- server side ----
  accept(protocol: string = SERVER_SUBPROTOCOLS.json): void {
    this.readyState = 1;
    this.protocol = protocol;
    this.onopen?.({});
  }
  push(frame: unknown, binary = false): void {
    this.onmessage?.({ data: binary ? toArrayBuffer(packr.pack(frame)) : JSON.stringify(frame) });
  }
  drop(code: number): void {
    this.readyState = 3;
    this.onclose?.({ code, reason: '' });
  }
  /** Answers the join it was sent (the n-th join_project frame) with an ack. */
  ackJoin(data: Record<string, unknown>, n = 0): void {
    const join = this.sent.filter((f) => f.type === 'join_project')[n]!;
    this.push({ type: 'join_project', projectGuid: join.projectGuid, id: join.id, data, timestamp: '' });
  }
  /** The token this socket authenticated with: `?token=`, or the token its `?ticket=` was issued for. */
  token(): string | null {
    const params = new URL(this.url).searchParams;
    const ticket = params.get('ticket');
    return ticket === null ? params.get('token') : (ticketTokens.get(ticket) ?? null);
  }
}

/** What the scripted ticket endpoint was asked. */
type TicketRequest = { url: string; method: string; authorization: string | undefined };
/** A scripted answer of the ticket endpoint; with none queued it answers 201 with a fresh ticket. */
type TicketReply = { status: number; code: string; retryAfter?: string } | 'hang';

function jsonResponse(status: number, body: unknown, headers: Record<string, string> = {}) {
  return { status, headers: { get: (name: string) => headers[name.toLowerCase()] ?? null }, json: async () => body };
}

/** POST /v1/tickets as the gateway answers it (routes.ts), scripted by `ticketReplies`. */
const fakeFetch: FetchLike = async (url, init) => {
  const authorization = init.headers['authorization'];
  ticketRequests.push({ url, method: init.method, authorization });
  const reply = ticketReplies.shift();
  if (reply === 'hang') {
    return new Promise((_resolve, reject) => init.signal.addEventListener('abort', () => reject(new Error('aborted'))));
  }
  if (reply) return jsonResponse(reply.status, { error: { code: reply.code, message: 'scripted' } }, reply.retryAfter ? { 'retry-after': reply.retryAfter } : {});
  const ticket = `ticket-${ticketRequests.length}`;
  ticketTokens.set(ticket, (authorization ?? '').replace(/^Bearer /, ''));
  return jsonResponse(201, { ticket, expiresInS: 30 });
};

function toArrayBuffer(bytes: Uint8Array): ArrayBuffer {
  return bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
}

let sockets: ScriptedSocket[];
let clients: GatewayClient[];
let ticketRequests: TicketRequest[];
let ticketReplies: TicketReply[];
let ticketTokens: Map<string, string>;
const event = (id: string, projectGuid = GUID) => ({ type: 'project_message', projectGuid, data: { id }, timestamp: '', id });

function makeClient(options: Partial<GatewayClientOptions> = {}) {
  const delivered: string[] = [];
  const errors: string[] = [];
  const states: string[] = [];
  const tokens = { count: 0 };
  const client = createGatewayClient({
    url: 'ws://gateway.test/ws',
    getToken: () => `token-${++tokens.count}`,
    WebSocketImpl: ScriptedSocket,
    fetchImpl: fakeFetch,
    heartbeatIntervalMs: 60_000,
    heartbeatTimeoutMs: 30_000,
    ...options,
  });
  client.on('event', (e) => delivered.push(e.id));
  client.on('error', (e) => errors.push(e.code));
  client.on('state', (s) => states.push(s));
  clients.push(client);
  return { client, delivered, errors, states, tokens };
}

/** Lets getToken()'s promise, the ticket request and the socket creation run. */
const settle = () => vi.advanceTimersByTimeAsync(0);
const last = () => sockets.at(-1)!;

beforeEach(() => {
  vi.useFakeTimers();
  sockets = [];
  clients = [];
  ticketRequests = [];
  ticketReplies = [];
  ticketTokens = new Map();
});
afterEach(() => {
  for (const c of clients) c.close();
  vi.restoreAllMocks();
  vi.useRealTimers();
});

describe('backoff', () => {
  it('stays within [base * (1 - jitter), base] with base = min(max, min * factor^attempt)', () => {
    const rc = { ...DEFAULT_RECONNECT, minDelayMs: 100, maxDelayMs: 5000, factor: 2, jitter: 0.5 };
    for (let attempt = 0; attempt < 12; attempt++) {
      const base = Math.min(5000, 100 * 2 ** attempt);
      for (const r of [0, 0.25, 0.5, 0.999999]) {
        const d = backoffDelay(attempt, rc, () => r);
        expect(d).toBeLessThanOrEqual(base);
        expect(d).toBeGreaterThanOrEqual(base * 0.5);
      }
      expect(backoffDelay(attempt, rc, () => 0)).toBe(base); // no jitter drawn: the full base
    }
    expect(backoffDelay(40, rc, () => 0)).toBe(5000); // capped, however many attempts
    expect(backoffDelay(3, { ...rc, jitter: 0 }, Math.random)).toBe(800);
    expect(backoffDelay(3, { ...rc, jitter: 7 }, () => 0.5)).toBe(400); // jitter clamps to 1
  });

  it('jitter spreads clients: 200 draws of the same attempt are not all equal', () => {
    const draws = new Set(Array.from({ length: 200 }, () => backoffDelay(2, DEFAULT_RECONNECT)));
    expect(draws.size).toBeGreaterThan(100);
  });

  it('the client waits exactly the backoff between failed attempts, doubling up to the cap', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0); // jitter off: delays are the bases
    makeClient({ reconnect: { minDelayMs: 100, maxDelayMs: 400, factor: 2 } });
    await settle();
    const expected = [100, 200, 400, 400];
    for (const delay of expected) {
      const before = sockets.length;
      last().drop(1006);
      await vi.advanceTimersByTimeAsync(delay - 1);
      expect(sockets.length).toBe(before); // not a millisecond early
      await vi.advanceTimersByTimeAsync(1);
      expect(sockets.length).toBe(before + 1);
    }
  });

  it('resets once a connection has stayed open for stableAfterMs', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0);
    makeClient({ reconnect: { minDelayMs: 100, maxDelayMs: 10_000, stableAfterMs: 1000 } });
    await settle();
    for (let i = 0; i < 3; i++) { last().drop(1006); await vi.advanceTimersByTimeAsync(100 * 2 ** i); }
    expect(sockets).toHaveLength(4);
    last().accept();
    await vi.advanceTimersByTimeAsync(1000); // stable
    last().drop(1006);
    await vi.advanceTimersByTimeAsync(100);
    expect(sockets).toHaveLength(5); // back to the first delay, not 800 ms
  });
});

describe('close codes (README table)', () => {
  it('decides per code: 1001 and 4401 at once, 4429 the longest wait, 1009 reported, others back off', () => {
    expect(closeDecision(1001)).toEqual({ delay: 'reset' });
    expect(closeDecision(4401)).toEqual({ delay: 'reset' });
    expect(closeDecision(4429)).toMatchObject({ delay: 'max', error: { code: 'RATE_LIMITED' } });
    expect(closeDecision(1009)).toMatchObject({ delay: 'backoff', error: { code: 'PAYLOAD_TOO_LARGE' } });
    for (const code of [1006, 4408, 1011, 4000]) expect(closeDecision(code)).toEqual({ delay: 'backoff' });
  });

  async function afterFailures(n: number) {
    vi.spyOn(Math, 'random').mockReturnValue(0);
    const c = makeClient({ reconnect: { minDelayMs: 100, maxDelayMs: 3000 } });
    await settle();
    for (let i = 0; i < n; i++) { last().drop(1006); await vi.advanceTimersByTimeAsync(3000); }
    last().accept();
    return c;
  }

  it('1001 (gateway draining) and 4401 (token expired) reconnect after the shortest delay even after failures', async () => {
    for (const code of [1001, 4401]) {
      const { tokens } = await afterFailures(4); // the next plain backoff would be 1600 ms
      const before = sockets.length;
      const tokensBefore = tokens.count;
      last().drop(code);
      await vi.advanceTimersByTimeAsync(100);
      expect(sockets.length).toBe(before + 1);
      expect(tokens.count).toBe(tokensBefore + 1); // a fresh getToken() for the new socket
      expect(last().token()).toBe(`token-${tokens.count}`);
      clients.pop()!.close();
    }
  });

  it('4429 waits the longest delay and reports RATE_LIMITED; 1009 reports PAYLOAD_TOO_LARGE', async () => {
    const { errors } = await afterFailures(0);
    last().drop(4429);
    await vi.advanceTimersByTimeAsync(2999);
    expect(sockets).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(sockets).toHaveLength(2);
    last().accept();
    last().drop(1009);
    expect(errors).toEqual(['RATE_LIMITED', 'PAYLOAD_TOO_LARGE']);
  });

  it('4403 (disconnected or blocked by the server API) is final: reported as DISCONNECTED, state closed, no reconnect', async () => {
    expect(closeDecision(4403)).toMatchObject({ delay: 'stop', error: { code: 'DISCONNECTED' } });
    const { errors, states } = await afterFailures(0);
    last().drop(4403);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(sockets).toHaveLength(1);
    expect(errors).toEqual(['DISCONNECTED']);
    expect(states.at(-1)).toBe('closed');
  });

  it('close() is final: no reconnect, state closed, pending requests rejected', async () => {
    const { client, states } = makeClient();
    await settle();
    last().accept();
    const fb = client.sendFeedback(GUID, 'hi');
    client.close();
    await expect(fb).rejects.toMatchObject({ code: 'CLIENT_CLOSED' });
    expect(last().closedWith).toBe(1000);
    await vi.advanceTimersByTimeAsync(60_000);
    expect(sockets).toHaveLength(1);
    expect(states).toEqual(['open', 'closed']);
  });
});

describe('tickets: the token goes in a header, never in a URL', () => {
  it('by default POSTs the token as Authorization: Bearer to /v1/tickets on the ws host, then connects with ?ticket= only', async () => {
    const { client, tokens } = makeClient({ reconnect: { minDelayMs: 10, maxDelayMs: 10 } });
    await settle();
    last().accept();
    last().drop(1006);
    await vi.advanceTimersByTimeAsync(10);
    expect(tokens.count).toBe(2);
    expect(ticketRequests).toEqual([
      { url: 'http://gateway.test/v1/tickets', method: 'POST', authorization: 'Bearer token-1' },
      { url: 'http://gateway.test/v1/tickets', method: 'POST', authorization: 'Bearer token-2' }, // a fresh ticket per connect
    ]);
    expect(sockets.map((s) => s.url)).toEqual(['ws://gateway.test/ws?ticket=ticket-1', 'ws://gateway.test/ws?ticket=ticket-2']);
    for (const s of sockets) expect(new URL(s.url).searchParams.has('token')).toBe(false);
    client.close();
  });

  it('derives https for wss (same host and port, path /v1/tickets), or uses ticketsUrl when given', async () => {
    makeClient({ url: 'wss://gw.example:8443/base/ws?x=1' });
    makeClient({ url: 'ws://gw.example/ws', ticketsUrl: 'https://api.example/proxy/tickets' });
    await settle();
    expect(ticketRequests.map((r) => r.url)).toEqual(['https://gw.example:8443/v1/tickets', 'https://api.example/proxy/tickets']);
    expect(sockets[0]!.url).toBe('wss://gw.example:8443/base/ws?x=1&ticket=ticket-1');
  });

  it("connectWith: 'query-token' (the opt-out) asks for no ticket and sends ?token=", async () => {
    makeClient({ connectWith: 'query-token' });
    await settle();
    expect(ticketRequests).toEqual([]);
    expect(last().url).toBe('ws://gateway.test/ws?token=token-1');
  });

  it('503 from the ticket endpoint: reported, retried with the exponential backoff, no socket until a ticket comes', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0); // jitter off: delays are the bases
    ticketReplies.push({ status: 503, code: 'UNAVAILABLE' }, { status: 503, code: 'UNAVAILABLE' }, { status: 503, code: 'UNAVAILABLE' });
    const { errors, states } = makeClient({ reconnect: { minDelayMs: 100, maxDelayMs: 10_000 } });
    await settle();
    expect(ticketRequests).toHaveLength(1);
    for (const [n, delay] of [[2, 100], [3, 200], [4, 400]] as const) {
      await vi.advanceTimersByTimeAsync(delay - 1);
      expect(ticketRequests).toHaveLength(n - 1); // not a millisecond early
      await vi.advanceTimersByTimeAsync(1);
      expect(ticketRequests).toHaveLength(n);
    }
    expect(errors).toEqual(['UNAVAILABLE', 'UNAVAILABLE', 'UNAVAILABLE']);
    expect(states).toEqual(['reconnecting']);
    expect(sockets).toHaveLength(1); // only after the fourth request, the first that got a ticket
    expect(last().token()).toBe('token-4');
  });

  it('429 with Retry-After: the next request waits Retry-After plus the backoff, never less', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0);
    ticketReplies.push({ status: 429, code: 'RATE_LIMITED', retryAfter: '3' });
    const { errors } = makeClient({ reconnect: { minDelayMs: 100, maxDelayMs: 10_000 } });
    await settle();
    await vi.advanceTimersByTimeAsync(3_099);
    expect(ticketRequests).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(ticketRequests).toHaveLength(2);
    expect(errors).toEqual(['RATE_LIMITED']);
    expect(sockets).toHaveLength(1);
  });

  it('401: reported as UNAUTHORIZED, and the retry asks getToken() for a new token', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0);
    ticketReplies.push({ status: 401, code: 'UNAUTHORIZED' });
    const { errors, tokens } = makeClient({ reconnect: { minDelayMs: 100, maxDelayMs: 10_000 } });
    await settle();
    await vi.advanceTimersByTimeAsync(100);
    expect(errors).toEqual(['UNAUTHORIZED']);
    expect(tokens.count).toBe(2);
    expect(ticketRequests.map((r) => r.authorization)).toEqual(['Bearer token-1', 'Bearer token-2']);
    expect(last().token()).toBe('token-2');
  });

  it('a ticket request that hangs is aborted after heartbeatTimeoutMs, reported, and retried', async () => {
    vi.spyOn(Math, 'random').mockReturnValue(0);
    ticketReplies.push('hang');
    const { errors } = makeClient({ heartbeatTimeoutMs: 2_000, reconnect: { minDelayMs: 100, maxDelayMs: 10_000 } });
    await settle();
    await vi.advanceTimersByTimeAsync(1_999);
    expect(errors).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(errors).toEqual(['CONNECT_ERROR']);
    await vi.advanceTimersByTimeAsync(100);
    expect(ticketRequests).toHaveLength(2);
    expect(sockets).toHaveLength(1);
  });
});

describe('de-duplication by event id', () => {
  it('delivers each id once, in numeric order, across batches and a reconnect that overlaps', async () => {
    const { client, delivered } = makeClient({ reconnect: { minDelayMs: 10, maxDelayMs: 10 } });
    await settle();
    last().accept();
    const joined = client.join(GUID.toUpperCase()); // GUIDs are lower-cased like the gateway does
    last().ackJoin({ latestId: '990-0' });
    await expect(joined).resolves.toEqual({ latestId: '990-0' });
    last().push([event('980-0'), event('990-0'), event('999-0'), event('999-1')]); // first two: before the join
    last().push(event('999-1')); // duplicate
    last().push([event('1000-0'), event('999-5')]); // 1000-0 > 999-x numerically; then a stale one
    last().push(event('1000-0', 'ffffffff-bbbb-cccc-dddd-eeeeeeeeeeee')); // a project we did not join
    expect(delivered).toEqual(['999-0', '999-1', '1000-0']);
    expect(client.lastEventId(GUID)).toBe('1000-0');

    last().drop(1006);
    await vi.advanceTimersByTimeAsync(10);
    last().accept();
    const rejoin = last().sent.find((f) => f.type === 'join_project')!;
    expect(rejoin.data).toEqual({ since: '1000-0' }); // resume from the last delivered id
    last().push([event('999-1'), event('1000-0'), event('1000-1')]); // overlapping replay
    last().ackJoin({ latestId: '1000-1', recovered: true, replayed: 3 });
    last().push(event('1000-2'));
    expect(delivered).toEqual(['999-0', '999-1', '1000-0', '1000-1', '1000-2']);
  });

  it('recovered: false resets to the server latestId and reports resync once', async () => {
    const { client, delivered } = makeClient({ reconnect: { minDelayMs: 10, maxDelayMs: 10 } });
    const resyncs: unknown[] = [];
    client.on('resync', (r) => resyncs.push(r));
    await settle();
    last().accept();
    void client.join(GUID);
    last().ackJoin({ latestId: '0-0' });
    last().push(event('50-0'));
    last().drop(1001);
    await vi.advanceTimersByTimeAsync(10);
    last().accept();
    last().ackJoin({ latestId: '7-0', recovered: false, replayed: 0 }); // history restarted with smaller ids
    last().push(event('6-9')); // older than the new latestId
    last().push(event('7-1'));
    expect(resyncs).toEqual([{ projectGuid: GUID, since: '50-0', latestId: '7-0' }]);
    expect(delivered).toEqual(['50-0', '7-1']);
  });
});

describe('request queue and timeouts', () => {
  it('queues feedback while disconnected and sends it after the re-joins once open', async () => {
    const { client } = makeClient();
    await settle();
    void client.join(GUID);
    const fb = client.sendFeedback(GUID, 'queued', { meta: { rating: 5 } });
    expect(last().sent).toEqual([]); // not open yet: nothing sent
    last().accept();
    expect(last().sent.map((f) => f.type)).toEqual(['join_project', 'user_feedback']);
    const sent = last().sent[1]!;
    expect(sent).toMatchObject({ projectGuid: GUID, data: { content: 'queued', meta: { rating: 5 } } });
    last().push({ type: 'user_feedback_response', projectGuid: GUID, id: sent.id, data: { accepted: true, forwarded: true }, timestamp: '' });
    await expect(fb).resolves.toEqual({ accepted: true, forwarded: true });
  });

  it('a request never answered rejects with TIMEOUT after requestTimeoutMs, and a queued one is never sent late', async () => {
    const { client } = makeClient({ requestTimeoutMs: 1000 });
    await settle();
    const queued = client.sendFeedback(GUID, 'too late');
    const outcome = queued.catch((e: { code: string }) => e.code);
    await vi.advanceTimersByTimeAsync(999);
    last().accept(); // opens just before the timeout: sent now, still unanswered
    await vi.advanceTimersByTimeAsync(1);
    expect(await outcome).toBe('TIMEOUT');

    // Queued while offline and timed out before the next open: dropped from the queue, never sent.
    last().drop(1006);
    const offline = client.sendFeedback(GUID, 'offline');
    const offlineOutcome = offline.catch((e: { code: string }) => e.code);
    await vi.advanceTimersByTimeAsync(1000);
    expect(await offlineOutcome).toBe('TIMEOUT');
    expect(sockets).toHaveLength(2); // the reconnect attempt is under way, not open yet
    last().accept();
    expect(last().sent.filter((f) => f.type === 'user_feedback')).toEqual([]);
  });

  it('feedback in flight when the socket dies rejects with CONNECTION_LOST and is not re-sent', async () => {
    const { client } = makeClient({ reconnect: { minDelayMs: 10, maxDelayMs: 10 } });
    await settle();
    last().accept();
    const fb = client.sendFeedback(GUID, 'once');
    expect(last().sent.filter((f) => f.type === 'user_feedback')).toHaveLength(1);
    last().drop(1006);
    await expect(fb).rejects.toMatchObject({ code: 'CONNECTION_LOST' });
    await vi.advanceTimersByTimeAsync(10);
    last().accept();
    expect(last().sent.filter((f) => f.type === 'user_feedback')).toEqual([]);
  });

  it('an error frame rejects the request it answers; ping needs an open connection', async () => {
    const { client, errors } = makeClient();
    await settle();
    await expect(client.ping()).rejects.toMatchObject({ code: 'NOT_CONNECTED' });
    last().accept();
    const fb = client.sendFeedback(GUID, '');
    const req = last().sent.at(-1)!;
    last().push({ type: 'error', projectGuid: GUID, id: req.id, data: { code: 'INVALID_FRAME', message: 'content too short' }, timestamp: '' });
    await expect(fb).rejects.toMatchObject({ code: 'INVALID_FRAME', message: 'content too short' });
    expect(errors).toEqual(['INVALID_FRAME']);
    expect(client.state).toBe('open');
  });
});

describe('token renewal', () => {
  const sign = createSigner({ key: 'unit-secret' });
  const tokenFor = (expS: number) => sign({ sub: 'u', projects: '*', exp: expS });

  it('reads exp and renews renewBeforeMs ahead, or half-way for short tokens', () => {
    expect(tokenExpiryMs(tokenFor(2_000_000_000))).toBe(2_000_000_000_000);
    expect(tokenExpiryMs('not-a-jwt')).toBeNull();
    expect(tokenExpiryMs(sign({ sub: 'u' }))).toBeNull();
    expect(renewalDelayMs(100_000, 0, 30_000)).toBe(70_000);
    expect(renewalDelayMs(10_000, 0, 30_000)).toBe(5_000);
    expect(renewalDelayMs(null, 0, 30_000)).toBeNull();
    expect(renewalDelayMs(5, 10, 30_000)).toBe(0);
  });

  it('renews in band before exp: auth_refresh on the same socket, and renews again before the new exp', async () => {
    vi.setSystemTime(1_700_000_000_000);
    const now = () => Math.floor(Date.now() / 1000);
    let issued = 0;
    const { client, states } = makeClient({ getToken: () => tokenFor(now() + 60 + issued++), renewBeforeMs: 30_000 });
    await settle();
    last().accept();
    void client.join(GUID);
    last().ackJoin({ latestId: '5-0' });
    await vi.advanceTimersByTimeAsync(29_000);
    expect(last().sent.filter((f) => f.type === 'auth_refresh')).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(1_000); // 30 s before exp
    const refresh = last().sent.find((f) => f.type === 'auth_refresh')!;
    expect(refresh.data).toEqual({ token: expect.any(String) });
    expect(refresh.data!.token).not.toBe(sockets[0]!.token());
    last().push({ type: 'auth_refresh', projectGuid: null, id: refresh.id, data: { userId: 'u', expiresAt: null }, timestamp: '' });
    expect(sockets).toHaveLength(1);
    expect(sockets[0]!.closedWith).toBeUndefined();
    expect(states).toEqual(['open']);
    // The next renewal is scheduled from the new token's exp (60 s after the refresh), not the old one's.
    await vi.advanceTimersByTimeAsync(29_000);
    expect(last().sent.filter((f) => f.type === 'auth_refresh')).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(2_000);
    expect(last().sent.filter((f) => f.type === 'auth_refresh')).toHaveLength(2);
  });

  it('falls back to a planned reconnect with the fresh token when the gateway does not know auth_refresh, and resumes', async () => {
    vi.setSystemTime(1_700_000_000_000);
    const now = () => Math.floor(Date.now() / 1000);
    let issued = 0;
    const { client, states } = makeClient({ getToken: () => tokenFor(now() + 60 + issued++), renewBeforeMs: 30_000 });
    await settle();
    last().accept();
    void client.join(GUID);
    last().ackJoin({ latestId: '5-0' });
    last().push(event('6-0'));
    await vi.advanceTimersByTimeAsync(30_000);
    const refresh = last().sent.find((f) => f.type === 'auth_refresh')!;
    last().push({ type: 'error', projectGuid: null, id: refresh.id, data: { code: 'UNKNOWN_TYPE', message: 'unknown message type' }, timestamp: '' });
    expect(sockets[0]!.closedWith).toBe(4000);
    await settle(); // the ticket request for the fresh token
    expect(sockets).toHaveLength(2);
    expect(last().token()).toBe(refresh.data!.token);
    last().accept();
    expect(last().sent[0]).toMatchObject({ type: 'join_project', data: { since: '6-0' } });
    expect(states).toEqual(['open', 'reconnecting', 'open']);
  });

  it('a leave_project with reason access_revoked stops tracking the room and reports FORBIDDEN', async () => {
    const { client, errors } = makeClient();
    await settle();
    last().accept();
    void client.join(GUID);
    last().ackJoin({ latestId: '5-0' });
    last().push({ type: 'leave_project', projectGuid: GUID, id: null, data: { reason: 'access_revoked' }, timestamp: '' });
    expect(errors).toContain('FORBIDDEN');
    expect(client.lastEventId(GUID)).toBeNull();
  });

  it('does not reconnect when getToken() returns a token that expires no later', async () => {
    vi.setSystemTime(1_700_000_000_000);
    const fixed = tokenFor(Math.floor(Date.now() / 1000) + 60);
    let asked = 0;
    makeClient({ getToken: () => (asked++, fixed) });
    await settle();
    last().accept();
    await vi.advanceTimersByTimeAsync(59_000);
    expect(asked).toBe(2); // connect, then the renewal at 30 s before exp
    expect(sockets).toHaveLength(1);
    expect(sockets[0]!.closedWith).toBeUndefined();
  });
});

describe('MessagePack', () => {
  it('offers autocode.v1.msgpack, sends binary frames and decodes binary (batched) frames', async () => {
    const { client, delivered } = makeClient({
      protocol: 'msgpack',
      msgpack: { encode: (v) => packr.pack(v), decode: (b) => packr.unpack(b) },
    });
    await settle();
    expect(last().protocols).toBe(SERVER_SUBPROTOCOLS.msgpack);
    expect(last().binaryType).toBe('arraybuffer');
    last().accept(SERVER_SUBPROTOCOLS.msgpack);
    expect(client.protocol).toBe('autocode.v1.msgpack');
    void client.join(GUID);
    const join = last().sent[0]!; // decoded by ScriptedSocket from the binary frame
    last().push({ type: 'join_project', projectGuid: GUID, id: join.id, data: { latestId: '1-0' }, timestamp: '' }, true);
    last().push([event('2-0'), event('3-0')], true);
    expect(delivered).toEqual(['2-0', '3-0']);
  });

  it('refuses msgpack without a codec, and the client and server name the subprotocols alike', () => {
    expect(() => createGatewayClient({ url: 'ws://x/ws', getToken: () => 't', protocol: 'msgpack', WebSocketImpl: ScriptedSocket })).toThrow(/msgpack/);
    expect(CLIENT_SUBPROTOCOLS).toEqual(SERVER_SUBPROTOCOLS);
  });
});
