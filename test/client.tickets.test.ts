// The client library's ticket handshake in Node against a real gateway (port 0): the long-lived token
// goes only into the Authorization header of POST /v1/tickets, the socket URL carries the one-time
// ticket, the gateway's own 429 + Retry-After is honoured, and the query-token opt-out still works.
// (Scripted answers and exact backoff timing: client.unit.test.ts; in Chromium: client.browser.test.ts.)
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createGatewayClient, type FetchLike, type GatewayClient, type GatewayClientOptions } from '../src/client/index.js';
import { randomGuid, startGateway, until, userToken, type StartedGateway } from './helpers/gateway.js';

type TicketCall = { url: string; authorization: string | undefined; at: number; status?: number; retryAfter?: string | null };

function harness(gw: StartedGateway, options: Partial<GatewayClientOptions> = {}) {
  const token = userToken('*', `tickets-${Math.random().toString(36).slice(2)}`);
  const socketUrls: string[] = [];
  const sockets: WebSocket[] = [];
  const calls: TicketCall[] = [];
  const errors: string[] = [];
  // Every socket the client opens, by URL: what a proxy in front of the gateway would log.
  class RecordingWS extends WebSocket {
    constructor(url: string, protocols?: string | string[]) {
      super(url, protocols);
      socketUrls.push(url);
      sockets.push(this);
    }
  }
  // The real fetch, recording what was asked and answered.
  const fetchImpl: FetchLike = async (url, init) => {
    const call: TicketCall = { url, authorization: init.headers['authorization'], at: Date.now() };
    calls.push(call);
    const res = await fetch(url, init);
    call.status = res.status;
    call.retryAfter = res.headers.get('retry-after');
    return res;
  };
  const client = createGatewayClient({
    url: gw.wsUrl,
    getToken: () => token,
    WebSocketImpl: RecordingWS,
    fetchImpl,
    reconnect: { minDelayMs: 20, maxDelayMs: 200 },
    ...options,
  });
  client.on('error', (e) => errors.push(e.code));
  clients.push(client);
  return { client, token, socketUrls, sockets, calls, errors };
}

const clients: GatewayClient[] = [];
afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

describe('client tickets against a real gateway', () => {
  let gw: StartedGateway;
  beforeAll(async () => { gw = await startGateway(); });
  afterAll(async () => { await gw?.close(); });

  it('by default: the token only in the ticket request header; the socket opens with ?ticket= and works', async () => {
    const h = harness(gw);
    await until(() => h.client.state === 'open', 5000, 'the client to open');
    const guid = randomGuid();
    await h.client.join(guid);
    const got: string[] = [];
    h.client.on('event', (e) => got.push(e.id));
    const id = await gw.gw.publish(guid, { type: 'project_message', data: { text: 'via ticket' } });
    await until(() => got.length === 1, 5000, 'the event');
    expect(got).toEqual([id]);

    expect(h.calls).toEqual([{ url: `${gw.httpUrl}/v1/tickets`, authorization: `Bearer ${h.token}`, at: expect.any(Number), status: 201, retryAfter: null }]);
    expect(h.socketUrls).toHaveLength(1);
    const url = new URL(h.socketUrls[0]!);
    expect(url.searchParams.get('ticket')).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(url.searchParams.has('token')).toBe(false);
    for (const u of [...h.socketUrls, ...h.calls.map((c) => c.url)]) expect(u).not.toContain(h.token);

    // A reconnect gets a fresh ticket: a ticket is good for one connection only.
    h.sockets[0]!.terminate();
    await until(() => h.socketUrls.length === 2 && h.client.state === 'open', 5000, 'the reconnect');
    expect(h.calls.map((c) => c.status)).toEqual([201, 201]);
    expect(new URL(h.socketUrls[1]!).searchParams.get('ticket')).not.toBe(url.searchParams.get('ticket'));
    expect(h.errors).toEqual([]);
  });

  it("connectWith: 'query-token' still connects with ?token= and asks for no ticket", async () => {
    const h = harness(gw, { connectWith: 'query-token' });
    await until(() => h.client.state === 'open', 5000, 'the client to open');
    expect(h.calls).toEqual([]);
    expect(new URL(h.socketUrls[0]!).searchParams.get('token')).toBe(h.token);
    expect(await h.client.ping()).toBeLessThan(1000);
  });
});

describe("the gateway's 429 on /v1/tickets", () => {
  let gw: StartedGateway;
  // One request per second per token: the first ticket uses the burst, a reconnect right after is refused.
  beforeAll(async () => { gw = await startGateway({ HTTP_RATE_LIMIT_PER_S: '1', HTTP_RATE_LIMIT_BURST: '1' }); });
  afterAll(async () => { await gw?.close(); });

  it('is reported as RATE_LIMITED and retried no sooner than its Retry-After', async () => {
    const h = harness(gw);
    await until(() => h.client.state === 'open', 5000, 'the client to open');
    h.sockets[0]!.terminate();
    await until(() => h.socketUrls.length === 2 && h.client.state === 'open', 8000, 'the reconnect after the 429');
    expect(h.calls.map((c) => c.status)).toEqual([201, 429, 201]);
    const refused = h.calls[1]!;
    expect(refused.retryAfter).toBe('1');
    expect(h.calls[2]!.at - refused.at).toBeGreaterThanOrEqual(1000);
    expect(h.errors).toEqual(['RATE_LIMITED']);
  });
});
