import type { WebSocket } from 'uWebSockets.js';
import type { Logger } from 'pino';
import type { Config } from '../config.js';
import { monotonicMs, type Connection, type SocketData } from '../connections/connection.js';
import type { ConnectionRegistry } from '../connections/registry.js';
import { releaseDrainWaiters, replayWindowBytes } from '../connections/send.js';
import type { EdgeState } from '../edge/admission.js';
import type { Metrics } from '../metrics.js';

/** Sockets cut per event-loop turn at most, and the time one turn's cuts may take (see cut()). */
const CUTS_PER_TURN = 16;
const CUT_BATCH_MS = 1;

/** What one unsent byte may cost in memory: uWS's per-socket buffer is a std::string grown by doubling. */
export const BUFFER_FOOTPRINT_FACTOR = 2;

export interface OutboundDeps {
  readonly config: Config;
  readonly registry: ConnectionRegistry;
  /** Where the process's unsent bytes are tallied (each worker thread reports its own). */
  readonly edgeState: EdgeState;
  /** This thread's slot in that tally (its worker id; 0 without workers). */
  readonly threadSlot: number;
  readonly log: Logger;
  readonly metrics: Metrics;
}

export interface OutboundBudget {
  /** The periodic check (twice a second): write timeouts and the process budget. */
  enforce(): void;
  /** After each room flush: the bytes handed to uWS (frame bytes × subscribers). */
  noteFanOut(bytes: number): void;
  /** uWS's drain callback: the kernel took bytes from this socket. */
  drained(ws: WebSocket<SocketData>): void;
}

/**
 * What the sockets' unsent bytes may cost, and who is cut when they cost too much (a slow consumer
 * is disconnected, never silently skipped: it reconnects and resumes with `since`). Three ways:
 * uWS's own per-socket MAX_BACKPRESSURE_BYTES (closeOnBackpressureLimit, in the behavior), a write
 * that makes no progress for WRITE_TIMEOUT_S (as Centrifugo's websocket_write_timeout), and the
 * process-wide MAX_BUFFERED_BYTES, which cuts the largest holders first.
 */
export function createOutboundBudget(deps: OutboundDeps): OutboundBudget {
  const { config, log, metrics } = deps;

  /**
   * The process-wide outbound budget: the memory every socket's unsent bytes take together.
   * Per-socket MAX_BACKPRESSURE_BYTES bounds one reader; this bounds a crowd of them (2,000
   * never-reading clients × 4 MiB would be 8 GB). uWS keeps a socket's unsent bytes in a growing
   * std::string, whose capacity doubles: it can hold up to twice what it reports, so each socket
   * counts BUFFER_FOOTPRINT_FACTOR × its unsent bytes (measured without it: 268-294 MiB unsent under a
   * 256 MiB budget, RSS +358-465 MiB). Over the budget, the sockets holding the most are dropped
   * first until the total is back under 90% of it. They are cut, not sent a close frame: a close
   * frame would queue behind the very bytes they do not read. They reconnect and resume with `since`.
   */
  function enforce(): void {
    fannedOutSinceCheck = 0;
    const now = monotonicMs();
    let unsent = 0;
    let timedOut = 0;
    const holding: { conn: Connection; bytes: number }[] = [];
    for (const conn of deps.registry.all()) {
      const ws = conn.ws;
      if (!ws || conn.cutPending) continue;
      const bytes = ws.getBufferedAmount();
      if (bytes === 0) {
        conn.stalledSince = 0;
        continue;
      }
      // A write that cannot complete (as Centrifugo's websocket_write_timeout): the reader is gone or
      // stopped reading, and every second it stays it holds memory here and in the kernel.
      if (conn.stalledSince === 0) conn.stalledSince = now;
      else if (now - conn.stalledSince > config.writeTimeoutMs) {
        timedOut++;
        cut(conn);
        continue;
      }
      unsent += bytes;
      holding.push({ conn, bytes });
    }
    if (timedOut) {
      metrics.slowConsumersDropped.inc({ reason: 'write_timeout' }, timedOut);
      log.warn({ dropped: timedOut, writeTimeoutMs: config.writeTimeoutMs }, 'cut sockets whose unsent bytes made no progress (write timeout)');
    }
    metrics.bufferedBytes.set(unsent);
    // The budget is the process's: every worker thread reports its sockets' bytes, and each cuts its
    // own share of the excess (in proportion to what it holds), so together they get back under it.
    const processUnsent = deps.edgeState.reportBuffered(deps.threadSlot, unsent);
    const processFootprint = processUnsent * BUFFER_FOOTPRINT_FACTOR;
    if (processFootprint <= config.maxBufferedBytes || unsent === 0) return;
    const share = unsent / Math.max(unsent, processUnsent);
    let footprint = unsent * BUFFER_FOOTPRINT_FACTOR;
    const target = footprint - (processFootprint - config.maxBufferedBytes * 0.9) * share;
    holding.sort((a, b) => b.bytes - a.bytes);
    let dropped = 0;
    for (const { conn, bytes } of holding) {
      if (footprint <= target) break;
      footprint -= bytes * BUFFER_FOOTPRINT_FACTOR;
      dropped++;
      cut(conn);
    }
    metrics.slowConsumersDropped.inc({ reason: 'process_budget' }, dropped);
    log.warn({ dropped, unsentBytes: unsent, processUnsentBytes: processUnsent, footprintAfter: footprint, budget: config.maxBufferedBytes }, 'outbound buffer budget exceeded; dropped the slowest consumers');
  }

  /**
   * Cuts are carried out CUTS_PER_TURN (or CUT_BATCH_MS) at a time, one batch per event-loop turn: closing a socket
   * with megabytes unsent costs the loop ~0.1-0.4 ms (measured: 862 at once blocked it 134-174 ms; batches of 64 took 5-26 ms),
   * and every other room waits while it does. A socket waiting for its cut is taken off every topic
   * at once, so it sends nothing more meanwhile (its memberships stay: close gives them back).
   */
  const cutQueue: Connection[] = [];
  function cut(conn: Connection): void {
    conn.cutPending = true;
    const ws = conn.ws;
    if (ws) for (const topic of ws.getTopics()) ws.unsubscribe(topic);
    cutQueue.push(conn);
    if (cutQueue.length === 1) setImmediate(cutBatch);
  }
  function cutBatch(): void {
    // What a cut costs depends on the machine (its kernel, its allocator's munmap): the batch also
    // stops after CUT_BATCH_MS, so the delay it adds to other rooms is bounded in time, not only in count.
    const started = performance.now();
    let n = 0;
    while (n < cutQueue.length && n < CUTS_PER_TURN) {
      const conn = cutQueue[n++]!;
      if (conn.ws && !conn.closed) conn.ws.close();
      if (performance.now() - started >= CUT_BATCH_MS) break;
    }
    cutQueue.splice(0, n);
    if (cutQueue.length) setImmediate(cutBatch);
  }

  /**
   * The timer alone checks twice a second, and a flood can outgrow the budget many times over
   * between two ticks (measured: 256 MiB budget, 678 MiB buffered): once the bytes fanned out since
   * the last check could have filled an eighth of the budget, check now.
   */
  let fannedOutSinceCheck = 0;
  function noteFanOut(bytes: number): void {
    fannedOutSinceCheck += bytes;
    if (fannedOutSinceCheck >= config.maxBufferedBytes / 8) enforce();
  }

  function drained(ws: WebSocket<SocketData>): void {
    const conn = ws.getUserData().conn;
    // The kernel took bytes: the write timeout starts over.
    conn.stalledSince = monotonicMs();
    if (conn.drainWaiters && ws.getBufferedAmount() < replayWindowBytes(config.maxBackpressureBytes)) releaseDrainWaiters(conn);
  }

  return { enforce, noteFanOut, drained };
}
