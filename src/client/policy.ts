// Pure decisions of the client's state machine, kept apart from the socket plumbing so they can be
// unit-tested without a network and read in one place: how long to wait before reconnecting, what
// a close code means, and when a token must be renewed.
import { exponentialBackoff } from '../common/backoff.js';
import { CloseCodes } from '../errors.js';

export interface ReconnectOptions {
  minDelayMs?: number;
  maxDelayMs?: number;
  factor?: number;
  /** Fraction of the delay that is randomised away: delay * (1 - jitter * random()). */
  jitter?: number;
  /** The backoff resets once a connection has stayed open this long. */
  stableAfterMs?: number;
}
export type ReconnectPolicy = Required<ReconnectOptions>;

export const DEFAULT_RECONNECT: ReconnectPolicy = { minDelayMs: 500, maxDelayMs: 15_000, factor: 2, jitter: 0.5, stableAfterMs: 5_000 };

/**
 * Delay before reconnect attempt number `attempt` (0-based): exponential, capped at maxDelayMs,
 * then shrunk by up to `jitter` so that clients dropped together (a gateway restart) do not all
 * come back in the same millisecond. Always within [base * (1 - jitter), base].
 */
export function backoffDelay(attempt: number, rc: ReconnectPolicy, random: () => number = Math.random): number {
  return exponentialBackoff(attempt, { minMs: rc.minDelayMs, maxMs: rc.maxDelayMs, factor: rc.factor, jitter: rc.jitter }, random);
}

/** The WebSocket standard's code for "message too big" (RFC 6455); uWS closes with it over MAX_PAYLOAD_BYTES. */
export const MESSAGE_TOO_BIG = 1009;
/** What the client uses itself when it gives up on a socket (heartbeat timeout, token renewal). */
export const CLIENT_ABANDONED = 4000;

export interface CloseDecision {
  /**
   * `reset`: reconnect after the shortest backoff (the server asked us to, or the cause is fixed by
   * the fresh token every connect fetches); `backoff`: the next step of the exponential backoff;
   * `max`: wait the longest delay (the server says we are too noisy); `stop`: no reconnect at all
   * (the server's API disconnected or blocked this user: reconnecting would be a loop of refusals).
   */
  delay: 'reset' | 'backoff' | 'max' | 'stop';
  /** A client-side error to report, for closes the app should know about. */
  error?: { code: string; message: string };
}

/**
 * The README's close-code table, from the client's side. Every close leads to a reconnect (only
 * `close()` stops the client), except 4403: what differs is how soon, and whether the app hears about it.
 */
export function closeDecision(code: number): CloseDecision {
  switch (code) {
    case CloseCodes.GOING_AWAY:
      // A gateway draining for a restart: any other instance can take us at once; the jitter in
      // the shortest backoff still spreads a whole room of clients over a few hundred ms.
      return { delay: 'reset' };
    case CloseCodes.TOKEN_EXPIRED:
      // Routine: connect() always calls getToken() again, so the cause is gone on the next try.
      return { delay: 'reset' };
    case CloseCodes.RATE_LIMITED:
      return { delay: 'max', error: { code: 'RATE_LIMITED', message: 'closed by the gateway for flooding (4429)' } };
    case CloseCodes.DISCONNECTED:
      // The backend disconnected or blocked this user on purpose: the app decides what comes next
      // (a fresh client after a new login, say), not a reconnect loop.
      return { delay: 'stop', error: { code: 'DISCONNECTED', message: 'disconnected by the server (4403); not reconnecting' } };
    case MESSAGE_TOO_BIG:
      return { delay: 'backoff', error: { code: 'PAYLOAD_TOO_LARGE', message: 'the gateway closed the connection: a frame was over its MAX_PAYLOAD_BYTES (1009)' } };
    case CloseCodes.HEARTBEAT_TIMEOUT: // the server heard nothing from us: a network problem
    default: // 1006 (network loss, slow consumer, HTTP 401 at the upgrade), anything unknown
      return { delay: 'backoff' };
  }
}

/** The `exp` claim of a JWT in ms since the epoch, or null when absent/unreadable. Not a verification. */
export function tokenExpiryMs(token: string): number | null {
  const payload = token.split('.')[1];
  if (!payload) return null;
  try {
    const b64 = payload.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(payload.length / 4) * 4, '=');
    const claims = JSON.parse(atob(b64)) as { exp?: unknown };
    return typeof claims.exp === 'number' && Number.isFinite(claims.exp) ? claims.exp * 1000 : null;
  } catch {
    return null;
  }
}

/**
 * How long from `now` until the session should be renewed with a fresh token: `renewBeforeMs`
 * before the expiry, or half-way through the remaining lifetime for tokens shorter than that.
 * Null when the token does not expire.
 */
export function renewalDelayMs(expMs: number | null, now: number, renewBeforeMs: number): number | null {
  if (expMs === null) return null;
  const left = expMs - now;
  if (left <= 0) return 0;
  return left - Math.min(renewBeforeMs, left / 2);
}
