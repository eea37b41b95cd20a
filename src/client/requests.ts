// Frames that wait for an answer (join_project, user_feedback, ping, auth_refresh): matched to the
// reply by frame id, given up after requestTimeoutMs where the caller waits on them, and failed
// when the socket they went out on dies. Feedback sent while offline waits in a queue that is
// flushed once a socket is open again (after the re-joins).
import type { Envelope } from '../protocol/messages.js';
import { GatewayClientError, type FeedbackExtra, type FeedbackResponse } from './api.js';
import type { Link, Outgoing } from './wire.js';

/** A request waiting for its answer. */
export interface Pending {
  reply: (env: Envelope) => void;
  fail: (err: GatewayClientError) => void;
  /** Called instead of fail() when the socket it was sent on dies. */
  lost?: () => void;
  inFlight: boolean;
  timer?: ReturnType<typeof setTimeout>;
}

export interface Requests {
  /**
   * Waits for the answer to frame `id`. With `onTimeout`, the request is dropped after
   * requestTimeoutMs without one, then onTimeout() is called.
   */
  track(id: string, request: Pending, onTimeout?: () => void): void;
  /** The request that frame `id` answers, no longer waiting; undefined when none is. */
  take(id: string): Pending | undefined;
  sendFeedback(projectGuid: string, content: string, extra?: FeedbackExtra): Promise<FeedbackResponse>;
  ping(): Promise<number>;
  /** Sends the feedback queued while offline (the socket has just opened; call after the re-joins). */
  flushQueued(): void;
  /** The socket died: requests in flight on it can no longer be answered. */
  failInFlight(): void;
  /** close(): every request fails with `err` (those re-sent on the next open are simply dropped). */
  failAll(err: GatewayClientError): void;
}

export function createRequests(deps: { link: Link; nextId: () => string; timeoutMs: number }): Requests {
  const { link, nextId, timeoutMs } = deps;
  const pending = new Map<string, Pending>();
  const outbox: Outgoing[] = []; // feedback sent while disconnected, flushed after the re-joins

  function track(id: string, request: Pending, onTimeout?: () => void): void {
    if (onTimeout) request.timer = setTimeout(() => { pending.delete(id); onTimeout(); }, timeoutMs);
    pending.set(id, request);
  }

  return {
    track,

    take(id) {
      const p = pending.get(id);
      if (p) {
        pending.delete(id);
        clearTimeout(p.timer);
      }
      return p;
    },

    sendFeedback(projectGuid, content, extra = {}) {
      if (link.closed) return Promise.reject(new GatewayClientError('CLIENT_CLOSED', 'client is closed'));
      const id = nextId();
      const frame: Outgoing = { type: 'user_feedback', projectGuid: projectGuid.toLowerCase(), id, data: { ...extra, content } };
      return new Promise<FeedbackResponse>((resolve, reject) => {
        const p: Pending = { inFlight: false, reply: (env) => resolve(env.data as FeedbackResponse), fail: reject };
        track(id, p, () => {
          const i = outbox.indexOf(frame);
          if (i >= 0) outbox.splice(i, 1);
          reject(new GatewayClientError('TIMEOUT', `no user_feedback_response within ${timeoutMs} ms`));
        });
        if (link.isOpen()) {
          p.inFlight = true;
          link.send(frame);
        } else {
          outbox.push(frame);
        }
      });
    },

    ping() {
      if (!link.isOpen()) return Promise.reject(new GatewayClientError('NOT_CONNECTED', 'ping needs an open connection'));
      const id = nextId();
      const t0 = performance.now();
      return new Promise<number>((resolve, reject) => {
        track(id, { inFlight: true, reply: () => resolve(performance.now() - t0), fail: reject }, () => {
          reject(new GatewayClientError('TIMEOUT', `no pong within ${timeoutMs} ms`));
        });
        link.send({ type: 'ping', id });
      });
    },

    flushQueued() {
      for (const frame of outbox.splice(0)) {
        const p = pending.get(frame.id);
        if (!p) continue; // timed out while queued
        p.inFlight = true;
        link.send(frame);
      }
    },

    failInFlight() {
      for (const [id, p] of pending) {
        if (!p.inFlight) continue;
        pending.delete(id);
        clearTimeout(p.timer);
        if (p.lost) p.lost();
        else p.fail(new GatewayClientError('CONNECTION_LOST', 'connection lost before the reply arrived'));
      }
    },

    failAll(err) {
      for (const p of pending.values()) { clearTimeout(p.timer); if (!p.lost) p.fail(err); }
      pending.clear();
      outbox.length = 0;
    },
  };
}
