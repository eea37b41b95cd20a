import type { Logger } from 'pino';
import WebSocket from 'ws';
import { exponentialBackoff } from '../common/backoff.js';
import type { Metrics } from '../metrics.js';
import { parseAgentFrame, type AgentFrame } from './agent-frames.js';

export interface AgentsLinkOptions {
  url: string;
  token?: string;
  nodeId: string;
  log: Logger;
  metrics: Metrics;
  /** Ping interval; a link that did not answer the previous ping (or send anything) by the next one is closed. */
  heartbeatMs: number;
  /** Cap of the reconnect backoff. */
  reconnectMaxMs: number;
  /** Largest frame accepted from the agents-server; a larger one closes the link (ws answers 1009). */
  maxFrameBytes: number;
  /** The link opened (after the `hello` frame went out). */
  onOpen(): void;
  /** The link closed (either side, or a heartbeat timeout); a reconnect is scheduled. */
  onClose(): void;
  /** A valid frame from the agents-server. Throwing is caught and logged. */
  onFrame(frame: AgentFrame): void;
}

export interface AgentsLink {
  /** Sends one frame; false if the link is not open (the caller keeps what must not be lost). */
  send(frame: { type: string; projectGuid: string | null; data: unknown; id: string | null; timestamp?: string }): boolean;
  isOpen(): boolean;
  /** Bytes queued on the socket and not yet written (0 when closed). */
  bufferedAmount(): number;
  close(): void;
}

/** Bytes waiting in the link's send buffer beyond which the agents-server counts as not reading. */
const MAX_BUFFERED_BYTES = 64 * 1024 * 1024;
/**
 * How long close() waits for the agents-server to answer the close handshake before cutting the
 * connection. ws waits 30 s by default, on a timer that keeps the event loop (a worker thread) alive;
 * a live agents-server answers within a round trip.
 */
const CLOSE_HANDSHAKE_MS = 500;

/** Backoff from 200 ms doubling to AGENTS_RECONNECT_MAX_MS, half of it random, so instances spread out. */
export function reconnectDelay(attempt: number, maxMs: number): number {
  return exponentialBackoff(attempt, { minMs: 200, maxMs, jitter: 0.5 });
}

/**
 * The gateway's WebSocket to the agents-server (design doc 3.2.5). Knows nothing of feedback or
 * presence: it connects, says hello, keeps the link alive with ping/pong (a half-open TCP link
 * accepts `send()` for minutes, so only an answer proves the peer is there), reconnects with
 * backoff and jitter, and validates every incoming frame before handing it on.
 */
export function createAgentsLink(options: AgentsLinkOptions): AgentsLink {
  const { log, metrics } = options;
  let socket: WebSocket | null = null;
  let open = false;
  let closed = false;
  let attempts = 0;
  let retryTimer: NodeJS.Timeout | null = null;
  let heartbeatTimer: NodeJS.Timeout | null = null;
  let invalidLogged = 0;
  let invalidWindow = 0;

  function logInvalid(problem: string, type: string | undefined): void {
    // At most 10 lines a second: a hostile agents-server must not flood the logs.
    const now = Date.now();
    if (now - invalidWindow > 1000) {
      invalidWindow = now;
      invalidLogged = 0;
    }
    if (invalidLogged++ < 10) log.warn({ problem, type }, 'agents-server frame skipped');
  }

  function connect(): void {
    if (closed) return;
    // closeTimeout is ws >= 8.23 (package.json asks for it); @types/ws does not list it yet.
    const wsOptions: WebSocket.ClientOptions & { closeTimeout: number } = {
      headers: { ...(options.token ? { authorization: `Bearer ${options.token}` } : {}), 'x-gateway-node': options.nodeId },
      handshakeTimeout: 5000,
      closeTimeout: CLOSE_HANDSHAKE_MS,
      maxPayload: options.maxFrameBytes,
    };
    const ws = new WebSocket(options.url, wsOptions);
    socket = ws;
    let alive = true;
    ws.on('open', () => {
      open = true;
      attempts = 0;
      metrics.agentsLinkUp.set(1);
      metrics.agentsLinkConnects.inc();
      log.info({ url: options.url }, 'agents-server link open');
      ws.send(JSON.stringify({ type: 'hello', projectGuid: null, id: null, timestamp: new Date().toISOString(), data: { nodeId: options.nodeId, protocol: 1 } }));
      heartbeatTimer = setInterval(() => {
        if (!alive) {
          metrics.agentsLinkHeartbeatTimeouts.inc();
          log.warn({ heartbeatMs: options.heartbeatMs }, 'agents-server did not answer the ping in time; closing the link');
          ws.terminate();
          return;
        }
        alive = false;
        ws.ping();
      }, options.heartbeatMs);
      try {
        options.onOpen();
      } catch (err) {
        log.error({ err }, 'agents relay: link open handler failed');
      }
    });
    ws.on('pong', () => (alive = true));
    ws.on('message', (raw, isBinary) => {
      alive = true;
      if (isBinary) {
        metrics.agentsFramesInvalid.inc({ reason: 'binary' });
        return logInvalid('binary frame', undefined);
      }
      const parsed = parseAgentFrame(raw.toString());
      if ('problem' in parsed) {
        metrics.agentsFramesInvalid.inc({ reason: parsed.type === undefined ? 'malformed' : 'invalid' });
        logInvalid(parsed.problem, parsed.type);
        send({ type: 'error', projectGuid: null, id: parsed.id ?? null, data: { code: 'INVALID_FRAME', message: parsed.problem } });
        return;
      }
      metrics.agentsFramesReceived.inc({ type: parsed.frame.type });
      try {
        options.onFrame(parsed.frame);
      } catch (err) {
        log.error({ err, type: parsed.frame.type }, 'agents relay: frame handling failed');
      }
    });
    ws.on('error', (err) => log.warn({ err: err.message }, 'agents-server link error'));
    ws.on('close', (code) => {
      if (heartbeatTimer) clearInterval(heartbeatTimer);
      heartbeatTimer = null;
      const wasOpen = open;
      open = false;
      socket = null;
      metrics.agentsLinkUp.set(0);
      if (wasOpen) {
        log.warn({ code }, 'agents-server link closed');
        try {
          options.onClose();
        } catch (err) {
          log.error({ err }, 'agents relay: link close handler failed');
        }
      }
      if (closed) return;
      retryTimer = setTimeout(connect, reconnectDelay(attempts++, options.reconnectMaxMs));
    });
  }

  function send(frame: { type: string; projectGuid: string | null; data: unknown; id: string | null; timestamp?: string }): boolean {
    if (!open || !socket || socket.readyState !== WebSocket.OPEN) return false;
    if (socket.bufferedAmount > MAX_BUFFERED_BYTES) {
      // An agents-server that stopped reading: drop the link rather than grow memory without bound.
      // Everything unacked is sent again on the next link; subscriptions resume from their position.
      log.warn({ bufferedBytes: socket.bufferedAmount }, 'agents-server is not reading; closing the link');
      socket.terminate();
      return false;
    }
    socket.send(JSON.stringify({ timestamp: new Date().toISOString(), ...frame }));
    return true;
  }

  connect();

  return {
    send,
    isOpen: () => open,
    bufferedAmount: () => socket?.bufferedAmount ?? 0,
    close() {
      closed = true;
      if (retryTimer) clearTimeout(retryTimer);
      // No ping while the close handshake runs: a timeout would only terminate what is closing anyway.
      if (heartbeatTimer) clearInterval(heartbeatTimer);
      heartbeatTimer = null;
      socket?.close(1001, 'gateway shutting down');
    },
  };
}
