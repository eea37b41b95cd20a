// The client's options resolved once, at createGatewayClient(): defaults filled in, URLs made
// absolute, and every missing piece (WebSocket, fetch, a MessagePack codec) an error thrown to the
// caller there rather than inside a reconnect loop.
import type { ConnectWith, FetchLike, GatewayClientOptions, MessagePackCodec, WebSocketCtor } from './api.js';
import { DEFAULT_RECONNECT, type ReconnectPolicy } from './policy.js';
import { defaultTicketsUrl, type TicketEndpoint } from './tickets.js';

export interface ClientSettings {
  readonly getToken: () => string | Promise<string>;
  readonly WebSocketImpl: WebSocketCtor;
  /** Frames are sent as MessagePack (and the msgpack subprotocol is offered). */
  readonly useMsgpack: boolean;
  /** The codec for binary frames, when the app gave one. */
  readonly msgpack: MessagePackCodec | undefined;
  /** The absolute ws(s) URL each socket connects to (before `?ticket=` or `?token=`). */
  readonly baseUrl: string;
  readonly connectWith: ConnectWith;
  readonly tickets: TicketEndpoint;
  readonly heartbeatIntervalMs: number;
  readonly heartbeatTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly renewBeforeMs: number;
  readonly reconnect: ReconnectPolicy;
}

export function resolveSettings(options: GatewayClientOptions): ClientSettings {
  const WebSocketImpl = options.WebSocketImpl ?? (globalThis as { WebSocket?: WebSocketCtor }).WebSocket;
  if (!WebSocketImpl) throw new Error('no WebSocket implementation: pass options.WebSocketImpl');
  const useMsgpack = options.protocol === 'msgpack';
  if (useMsgpack && !options.msgpack) throw new Error("protocol 'msgpack' needs options.msgpack ({ encode, decode })");
  // Resolved once, so a bad URL throws here, to the caller, instead of inside a reconnect loop.
  const here = (globalThis as { location?: { href: string } }).location?.href;
  const baseUrl = new URL(options.url, here).toString();
  const connectWith: ConnectWith = options.connectWith ?? 'ticket';
  const ticketsUrl = new URL(options.ticketsUrl ?? defaultTicketsUrl(baseUrl), here).toString();
  const fetchImpl = options.fetchImpl ?? (globalThis as { fetch?: FetchLike }).fetch;
  if (connectWith === 'ticket' && !fetchImpl) throw new Error("no fetch implementation for tickets: pass options.fetchImpl (or connectWith: 'query-token')");
  const fetchTicket: FetchLike = (url, init) => fetchImpl!(url, init); // called unbound: `window.fetch` refuses any `this` but window (options, the endpoint)
  const heartbeatTimeoutMs = options.heartbeatTimeoutMs ?? 10_000;
  return {
    // Called as a method of the options each time, as the app wrote it (its `this`, and a getToken
    // swapped in later).
    getToken: () => options.getToken(),
    WebSocketImpl,
    useMsgpack,
    msgpack: options.msgpack,
    baseUrl,
    connectWith,
    tickets: { url: ticketsUrl, fetch: fetchTicket, timeoutMs: heartbeatTimeoutMs },
    heartbeatIntervalMs: options.heartbeatIntervalMs ?? 25_000,
    heartbeatTimeoutMs,
    requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
    renewBeforeMs: options.renewBeforeMs ?? 30_000,
    reconnect: { ...DEFAULT_RECONNECT, ...options.reconnect },
  };
}
