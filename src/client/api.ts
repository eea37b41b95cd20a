// The client's public shapes: its options, the events it emits, the GatewayClient interface and
// the error it rejects with. Every module of the client builds on these; index.ts re-exports them.
import type { ErrorCode } from '../errors.js';
import type { Envelope, EventType } from '../protocol/messages.js';
import type { ReconnectOptions } from './policy.js';

export type ConnectionState = 'connecting' | 'open' | 'closed' | 'reconnecting';

/** Producers put any JSON object in `data`; the gateway passes it through untouched. */
export type EventData = Record<string, unknown>;
/** A project event, discriminated on `type` (one of the four event names of the protocol). */
export type ProjectEventEnvelope = { [T in EventType]: Envelope<T, EventData> & { id: string; projectGuid: string } }[EventType];

export interface JoinAck { latestId: string | null; recovered?: boolean; replayed?: number }
/**
 * The gateway's answer to user_feedback: `status` "accepted" (stored in Redis, durable) or "queued"
 * (in one gateway's memory), with the `feedbackId` the agents-server will answer about.
 */
export interface FeedbackResponse {
  status?: 'accepted' | 'queued';
  durable?: boolean;
  feedbackId?: string;
  accepted: boolean;
  forwarded: boolean;
  reason?: string;
  [key: string]: unknown;
}
export interface ResyncInfo { projectGuid: string; since: string; latestId: string | null }
export interface DisconnectInfo { code: number; reason: string }

/** Codes the client reports itself, next to the server's ErrorCode set. */
export type ClientErrorCode =
  | 'TIMEOUT' | 'CONNECTION_LOST' | 'CLIENT_CLOSED' | 'NOT_CONNECTED' | 'LEFT'
  | 'TOKEN_ERROR' | 'CONNECT_ERROR' | 'BAD_FRAME';

/** Server error frames (code from the protocol table) and client-side failures (TIMEOUT, ...). */
export class GatewayClientError extends Error {
  readonly code: ErrorCode | ClientErrorCode | (string & {});
  readonly frame: Envelope | undefined;
  constructor(code: GatewayClientError['code'], message: string, frame?: Envelope) {
    super(message);
    this.name = 'GatewayClientError';
    this.code = code;
    this.frame = frame;
  }
}

/** The subset of the WebSocket API used here; satisfied by the DOM WebSocket and by `ws`. */
export interface WebSocketLike {
  readonly readyState: number;
  /** The subprotocol the server picked ('' when it named none). */
  readonly protocol?: string;
  binaryType?: string;
  // `any` so that both the DOM and `ws` handler signatures are assignable.
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: any) => void) | null;
  onclose: ((ev: any) => void) | null;
  onerror: ((ev: any) => void) | null;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketCtor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** The part of `fetch` the ticket request uses; the browser's and Node's global `fetch` both fit. */
export type FetchLike = (
  url: string,
  init: { method: 'POST'; headers: Record<string, string>; signal: AbortSignal },
) => Promise<{ status: number; headers: { get(name: string): string | null }; json(): Promise<unknown> }>;

/**
 * How a socket authenticates. `'ticket'`: POST the token in an Authorization header for a one-time
 * ticket, then connect with `?ticket=`; `'query-token'`: the token itself as `?token=`, which puts a
 * long-lived credential in the URL (and so in proxy access logs).
 */
export type ConnectWith = 'ticket' | 'query-token';

/**
 * MessagePack is opt-in and brought by the app, so this library stays dependency-free: in the
 * browser, msgpackr's ES modules as the gateway serves them (/vendor/msgpackr/pack.js), in Node the
 * npm package. Must produce/read plain maps (msgpackr: `useRecords: false`).
 */
export interface MessagePackCodec {
  encode(value: unknown): Uint8Array;
  decode(bytes: Uint8Array): unknown;
}

export interface GatewayClientOptions {
  url: string;
  /** Called on every (re)connect and before each token renewal. */
  getToken: () => string | Promise<string>;
  /**
   * 'ticket' (default): before each (re)connect, trade the token for a one-time ticket at
   * `ticketsUrl`, so the token never appears in a URL. 'query-token': send the token as `?token=`,
   * for deployments where the client cannot reach the gateway's HTTP API.
   */
  connectWith?: ConnectWith;
  /** Where tickets are requested; default `/v1/tickets` on the ws URL's host (http for ws, https for wss). */
  ticketsUrl?: string;
  /** `fetch` for the ticket request (default: the global one). */
  fetchImpl?: FetchLike;
  /** Wire format: 'json' (default) or 'msgpack' (needs `msgpack`). */
  protocol?: 'json' | 'msgpack';
  msgpack?: MessagePackCodec;
  heartbeatIntervalMs?: number;
  heartbeatTimeoutMs?: number;
  /** Timeout for sendFeedback() and ping(), counted from the call (queue time included). */
  requestTimeoutMs?: number;
  /** Renew the session this long before the token's `exp` (0 turns renewal off). */
  renewBeforeMs?: number;
  reconnect?: ReconnectOptions;
  WebSocketImpl?: WebSocketCtor;
}

export interface ProjectHandlers {
  event?: (env: ProjectEventEnvelope) => void;
  resync?: (info: ResyncInfo) => void;
}

export interface ClientEvents {
  event: ProjectEventEnvelope;
  resync: ResyncInfo;
  state: ConnectionState;
  error: GatewayClientError;
  /** A socket went away (server close, network loss, heartbeat); a reconnect follows unless closed. */
  disconnect: DisconnectInfo;
  /**
   * A frame the agents-server addressed to this user rather than to a room: a `user_feedback_response`
   * answering their feedback (its `id` is the feedback's request id), or a targeted `agent_message`.
   */
  reply: Envelope;
}

export interface FeedbackExtra { replyTo?: string; meta?: Record<string, unknown> }

export interface GatewayClient {
  readonly state: ConnectionState;
  /** The subprotocol in use on the open connection, e.g. 'autocode.v1.msgpack' ('' when none). */
  readonly protocol: string;
  join(projectGuid: string, handlers?: ProjectHandlers): Promise<JoinAck>;
  leave(projectGuid: string): void;
  sendFeedback(projectGuid: string, content: string, extra?: FeedbackExtra): Promise<FeedbackResponse>;
  ping(): Promise<number>;
  on<K extends keyof ClientEvents>(event: K, fn: (payload: ClientEvents[K]) => void): () => void;
  /** Last event id delivered for a joined project (what the next reconnect resumes from). */
  lastEventId(projectGuid: string): string | null;
  close(): void;
}
