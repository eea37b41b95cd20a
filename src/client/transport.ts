// The connection: one socket at a time, authenticated with a fresh token (or a one-time ticket for
// it), watched by a heartbeat, and replaced after a backoff with jitter whenever it goes, until
// close(). The connection state the app sees ('connecting', 'open', ...) is kept here.
import { GatewayClientError, type ConnectionState, type WebSocketLike } from './api.js';
import { dial } from './dial.js';
import { createHeartbeat } from './heartbeat.js';
import type { Emit } from './listeners.js';
import { CLIENT_ABANDONED, backoffDelay, closeDecision, type CloseDecision, type ReconnectPolicy } from './policy.js';
import type { ClientSettings } from './settings.js';
import type { Link, Outgoing, WireFormat } from './wire.js';

const OPEN = 1;

/** What the rest of the client does at the turns of a socket's life. */
export interface TransportHooks {
  /** A socket opened; `token` is the one it authenticated with. */
  opened(token: string): void;
  /** A frame arrived on the current socket. */
  frame(raw: unknown): void;
  /** The current socket was let go (closed, abandoned, or close()): nothing sent on it will be answered. */
  dropped(): void;
}

export interface Transport extends Link {
  readonly state: ConnectionState;
  /** The subprotocol in use on the open socket ('' when none). */
  readonly protocol: string;
  /** Opens the first socket. */
  start(): void;
  /** A planned reconnect (a fresh token the socket could not take in band): this socket goes, the next comes at once. */
  reconnectWith(token: string): void;
  /** For good: the socket is closed (1000), no reconnect follows, and the state is 'closed'. */
  close(): void;
}

export interface TransportDeps {
  settings: ClientSettings;
  wire: WireFormat;
  nextId: () => string;
  emit: Emit;
}

export function createTransport(deps: TransportDeps, hooks: TransportHooks): Transport {
  const { settings, wire, nextId, emit } = deps;

  let state: ConnectionState = 'connecting';
  let ws: WebSocketLike | null = null;
  let closedByUser = false;
  let generation = 0; // bumps on every connect/close so a slow getToken() cannot resurrect an old attempt

  function setState(next: ConnectionState): void {
    if (state === next) return;
    state = next;
    emit('state', next);
  }
  const isOpen = (): boolean => ws !== null && state === 'open' && ws.readyState === OPEN;
  function send(frame: Outgoing): void {
    ws!.send(wire.encode(frame));
  }
  const heartbeat = createHeartbeat({
    intervalMs: settings.heartbeatIntervalMs,
    timeoutMs: settings.heartbeatTimeoutMs,
    isOpen,
    sendPing: () => send({ type: 'ping', id: nextId() }),
    onDead,
  });
  const schedule = createReconnectSchedule(settings.reconnect, () => connect());

  /** Opens a socket with `freshToken`, or with one from getToken(). */
  function connect(freshToken?: string): void {
    const gen = ++generation;
    void dial(settings, wire, freshToken, {
      stale: () => gen !== generation || closedByUser,
      failed(error, atLeastMs) {
        emit('error', error);
        scheduleReconnect('backoff', atLeastMs);
      },
      created: attach,
    });
  }

  /** Makes `sock` the current socket; its events count only while it is. */
  function attach(sock: WebSocketLike, token: string): void {
    sock.binaryType = 'arraybuffer'; // MessagePack frames as bytes, not Blobs that need an await
    ws = sock;
    // A connect that hangs (black-holed network) is handled like a dead heartbeat.
    heartbeat.connecting();
    sock.onopen = () => { if (ws === sock) onOpen(token); };
    sock.onmessage = (ev: { data: unknown }) => { if (ws === sock) onFrame(ev.data); };
    sock.onerror = () => {}; // a close event always follows; `ws` also needs a listener to not throw
    sock.onclose = (ev: { code: number; reason?: unknown }) => { if (ws === sock) onSocketGone(ev.code, String(ev.reason ?? '')); };
  }

  function onOpen(token: string): void {
    heartbeat.alive();
    setState('open');
    schedule.opened();
    hooks.opened(token);
    heartbeat.start();
  }

  function onFrame(raw: unknown): void {
    heartbeat.alive(); // any frame proves the connection is alive
    hooks.frame(raw);
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
    if (decision.delay === 'stop') return stopForGood();
    scheduleReconnect(decision.delay);
  }

  /** Forgets the current socket; requests in flight on it can no longer be answered. */
  function dropSocket(): void {
    heartbeat.stop();
    schedule.dropped();
    if (ws) {
      const noop = () => {};
      ws.onopen = ws.onmessage = ws.onclose = noop;
      ws.onerror = noop;
      ws = null;
    }
    hooks.dropped();
  }

  function scheduleReconnect(delay: Exclude<CloseDecision['delay'], 'stop'>, atLeastMs = 0): void {
    if (closedByUser) return;
    setState('reconnecting');
    schedule.next(delay, atLeastMs);
  }

  /** The server said not to come back (4403): as close(), with the socket already gone. */
  function stopForGood(): void {
    closedByUser = true;
    generation++;
    schedule.cancel();
    setState('closed');
  }

  return {
    get state() { return state; },
    get protocol() { return (isOpen() && ws?.protocol) || ''; },
    get socket() { return ws; },
    get closed() { return closedByUser; },
    isOpen,
    send,

    start() {
      connect();
    },

    reconnectWith(token) {
      abandonSocket('token renewal');
      emit('disconnect', { code: CLIENT_ABANDONED, reason: 'token renewal' });
      schedule.startOver();
      setState('reconnecting');
      connect(token);
    },

    close() {
      if (closedByUser) return;
      closedByUser = true;
      generation++;
      schedule.cancel();
      const sock = ws;
      dropSocket();
      try { sock?.close(1000, 'client closed'); } catch { /* already closing */ }
      setState('closed');
    },
  };
}

/**
 * The reconnect loop's clock: the attempt number behind the backoff, the timer of the next
 * attempt, and the fresh start once a socket has stayed open for stableAfterMs.
 */
function createReconnectSchedule(rc: ReconnectPolicy, reconnect: () => void) {
  let attempt = 0;
  let reconnectTimer: ReturnType<typeof setTimeout> | undefined;
  let stableTimer: ReturnType<typeof setTimeout> | undefined;
  return {
    /** `atLeastMs` (a server's Retry-After) comes on top of the backoff, whose jitter then spreads the clients told the same. */
    next(delay: CloseDecision['delay'], atLeastMs: number): void {
      clearTimeout(reconnectTimer);
      if (delay === 'reset') attempt = 0;
      // 'max': an attempt number past any cap gives exactly the longest (jittered) delay.
      const ms = atLeastMs + backoffDelay(delay === 'max' ? 64 : attempt++, rc);
      reconnectTimer = setTimeout(reconnect, ms);
    },
    /** The next attempt counts as the first (a planned reconnect is no failure). */
    startOver(): void {
      attempt = 0;
    },
    cancel(): void {
      clearTimeout(reconnectTimer);
    },
    opened(): void {
      stableTimer = setTimeout(() => { attempt = 0; }, rc.stableAfterMs);
    },
    dropped(): void {
      clearTimeout(stableTimer);
      stableTimer = undefined;
    },
  };
}
