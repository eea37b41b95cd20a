// Browser client for the AutoCode WebSocket gateway (wire protocol: docs/protocol.md). Plain ES
// module: it imports only the browser-safe protocol modules it shares with the server (message
// names and envelope types, event-id comparison, error and close codes), so the compiled tree
// dist/browser/ can be served as-is; the gateway does, at /client/index.js.
import { GatewayClientError, type ConnectionState, type GatewayClient, type GatewayClientOptions, type WebSocketLike } from './api.js';
import { createFrameRouter } from './inbound.js';
import { createListeners } from './listeners.js';
import { CLIENT_ABANDONED, backoffDelay, closeDecision } from './policy.js';
import { createRenewal } from './renewal.js';
import { createRequests } from './requests.js';
import { createRooms } from './rooms.js';
import { resolveSettings } from './settings.js';
import { requestTicket } from './tickets.js';
import { createIdSource, wireFormat, type Link, type Outgoing } from './wire.js';

export { compareIds as compareEventIds, isEventId } from '../protocol/event-id.js';
export { CloseCodes, ErrorCodes, type ErrorCode } from '../errors.js';
export { EVENT_TYPES, SUBPROTOCOLS, type Envelope, type EventType } from '../protocol/messages.js';
export { backoffDelay, closeDecision, renewalDelayMs, tokenExpiryMs, type CloseDecision, type ReconnectOptions } from './policy.js';
export { defaultTicketsUrl } from './tickets.js';
export {
  GatewayClientError,
  type ClientErrorCode,
  type ClientEvents,
  type ConnectionState,
  type ConnectWith,
  type DisconnectInfo,
  type EventData,
  type FeedbackExtra,
  type FeedbackResponse,
  type FetchLike,
  type GatewayClient,
  type GatewayClientOptions,
  type JoinAck,
  type MessagePackCodec,
  type ProjectEventEnvelope,
  type ProjectHandlers,
  type ResyncInfo,
  type WebSocketCtor,
  type WebSocketLike,
} from './api.js';

const OPEN = 1;

export function createGatewayClient(options: GatewayClientOptions): GatewayClient {
  const settings = resolveSettings(options);
  const { WebSocketImpl, baseUrl, connectWith, reconnect: rc } = settings;
  const wire = wireFormat(settings.useMsgpack, settings.msgpack);
  const hbInterval = settings.heartbeatIntervalMs;
  const hbTimeout = settings.heartbeatTimeoutMs;
  const reqTimeout = settings.requestTimeoutMs;

  const { emit, on } = createListeners();

  let state: ConnectionState = 'connecting';
  let ws: WebSocketLike | null = null;
  let socketToken = ''; // the token the current socket was opened with
  let closedByUser = false;
  let attempt = 0;
  let generation = 0; // bumps on every connect/close so a slow getToken() cannot resurrect an old attempt
  let reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  let heartbeatTimer: ReturnType<typeof setInterval> | undefined;
  let deadTimer: ReturnType<typeof setTimeout> | undefined;
  let stableTimer: ReturnType<typeof setTimeout> | undefined;

  const nextId = createIdSource();

  function setState(next: ConnectionState): void {
    if (state === next) return;
    state = next;
    emit('state', next);
  }
  const isOpen = (): boolean => ws !== null && state === 'open' && ws.readyState === OPEN;
  function send(frame: Outgoing): void {
    ws!.send(wire.encode(frame));
  }
  const link: Link = { get socket() { return ws; }, get closed() { return closedByUser; }, isOpen, send };
  const requests = createRequests({ link, nextId, timeoutMs: reqTimeout });
  const rooms = createRooms({ link, requests, nextId, emit, reconnect: rc });
  const routeFrame = createFrameRouter({ wire, rooms, requests, emit });
  const renewal = createRenewal({ getToken: settings.getToken, renewBeforeMs: settings.renewBeforeMs, link, requests, nextId, emit, reconnectWith });

  // ---- connection lifecycle ----

  /** Opens a socket with `freshToken`, or with one from getToken(). */
  async function connect(freshToken?: string): Promise<void> {
    const gen = ++generation;
    let token: string;
    try {
      token = freshToken ?? (await settings.getToken());
    } catch (err) {
      if (gen !== generation || closedByUser) return;
      emit('error', new GatewayClientError('TOKEN_ERROR', `getToken failed: ${String(err)}`));
      scheduleReconnect('backoff');
      return;
    }
    if (gen !== generation || closedByUser) return;
    const url = new URL(baseUrl);
    if (connectWith === 'ticket') {
      const got = await requestTicket(token, settings.tickets);
      if (gen !== generation || closedByUser) return;
      if ('error' in got) {
        // Like a failed connect: report, back off (at least Retry-After), and the next attempt calls getToken() again.
        emit('error', got.error);
        scheduleReconnect('backoff', got.retryAfterMs);
        return;
      }
      url.searchParams.set('ticket', got.ticket);
    } else {
      url.searchParams.set('token', token); // browsers cannot set an Authorization header on WebSockets
    }
    let sock: WebSocketLike;
    try {
      sock = new WebSocketImpl(url.toString(), wire.subprotocol);
    } catch (err) {
      emit('error', new GatewayClientError('CONNECT_ERROR', String(err)));
      scheduleReconnect('backoff');
      return;
    }
    sock.binaryType = 'arraybuffer'; // MessagePack frames as bytes, not Blobs that need an await
    ws = sock;
    socketToken = token;
    // A connect that hangs (black-holed network) is handled like a dead heartbeat.
    deadTimer = setTimeout(onDead, hbTimeout);
    sock.onopen = () => { if (ws === sock) onOpen(); };
    sock.onmessage = (ev: { data: unknown }) => { if (ws === sock) onFrame(ev.data); };
    sock.onerror = () => {}; // a close event always follows; `ws` also needs a listener to not throw
    sock.onclose = (ev: { code: number; reason?: unknown }) => { if (ws === sock) onSocketGone(ev.code, String(ev.reason ?? '')); };
  }

  function onOpen(): void {
    clearTimeout(deadTimer);
    deadTimer = undefined;
    setState('open');
    stableTimer = setTimeout(() => { attempt = 0; }, rc.stableAfterMs);
    renewal.start(socketToken);
    // Joins first, so queued feedback reaches the server after the room membership it needs.
    rooms.rejoinAll();
    requests.flushQueued();
    heartbeatTimer = setInterval(() => {
      if (!isOpen()) return;
      send({ type: 'ping', id: nextId() });
      deadTimer ??= setTimeout(onDead, hbTimeout);
    }, hbInterval);
  }

  /** Client-side end of a socket (dead heartbeat, renewal): forget it, then close it for the server's sake. */
  function abandonSocket(reason: string): void {
    const sock = ws;
    dropSocket();
    try { sock?.close(CLIENT_ABANDONED, reason); } catch { /* already closing */ }
  }

  function onDead(): void {
    abandonSocket('heartbeat timeout');
    emit('disconnect', { code: CLIENT_ABANDONED, reason: 'heartbeat timeout' });
    scheduleReconnect('backoff');
  }

  function onSocketGone(code: number, reason: string): void {
    dropSocket();
    if (closedByUser) return;
    emit('disconnect', { code, reason });
    const decision = closeDecision(code);
    if (decision.error) emit('error', new GatewayClientError(decision.error.code, decision.error.message));
    scheduleReconnect(decision.delay);
  }

  /** Forgets the current socket; requests in flight on it can no longer be answered. */
  function dropSocket(): void {
    clearInterval(heartbeatTimer);
    clearTimeout(deadTimer);
    clearTimeout(stableTimer);
    renewal.stop();
    heartbeatTimer = deadTimer = stableTimer = undefined;
    if (ws) {
      const noop = () => {};
      ws.onopen = ws.onmessage = ws.onclose = noop;
      ws.onerror = noop;
      ws = null;
    }
    requests.failInFlight();
  }

  /** A planned reconnect (a fresh token the socket could not take in band): this socket goes, the next comes at once. */
  function reconnectWith(token: string): void {
    abandonSocket('token renewal');
    emit('disconnect', { code: CLIENT_ABANDONED, reason: 'token renewal' });
    attempt = 0;
    setState('reconnecting');
    void connect(token);
  }

  /** `atLeastMs` (a server's Retry-After) comes on top of the backoff, whose jitter then spreads the clients told the same. */
  function scheduleReconnect(delay: 'reset' | 'backoff' | 'max', atLeastMs = 0): void {
    if (closedByUser) return;
    setState('reconnecting');
    clearTimeout(reconnectTimer);
    if (delay === 'reset') attempt = 0;
    // 'max': an attempt number past any cap gives exactly the longest (jittered) delay.
    const ms = atLeastMs + backoffDelay(delay === 'max' ? 64 : attempt++, rc);
    reconnectTimer = setTimeout(() => { void connect(); }, ms);
  }

  function onFrame(raw: unknown): void {
    clearTimeout(deadTimer); // any frame proves the connection is alive
    deadTimer = undefined;
    routeFrame(raw);
  }

  // ---- public API ----

  void connect();

  return {
    get state() { return state; },
    get protocol() { return (isOpen() && ws?.protocol) || ''; },

    join: rooms.join,
    leave: rooms.leave,
    sendFeedback: requests.sendFeedback,
    ping: requests.ping,
    on,
    lastEventId: rooms.lastEventId,

    close() {
      if (closedByUser) return;
      closedByUser = true;
      generation++;
      clearTimeout(reconnectTimer);
      const err = new GatewayClientError('CLIENT_CLOSED', 'client closed');
      requests.failAll(err);
      const sock = ws;
      dropSocket();
      try { sock?.close(1000, 'client closed'); } catch { /* already closing */ }
      rooms.rejectAll(err);
      setState('closed');
    },
  };
}
