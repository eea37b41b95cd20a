/**
 * Every error code the gateway can put in an `error` frame or an HTTP error body, and every
 * WebSocket close code it uses. Clients switch on these strings and numbers: never rename one.
 */
export const ErrorCodes = {
  BAD_JSON: { http: 400, message: 'frame is not valid JSON' },
  BAD_MSGPACK: { http: 400, message: 'frame is not valid MessagePack' },
  INVALID_FRAME: { http: 400, message: 'frame does not match the protocol schema' },
  UNKNOWN_TYPE: { http: 400, message: 'unknown message type' },
  INVALID_GUID: { http: 400, message: 'projectGuid is not a valid GUID' },
  INVALID_EVENT_ID: { http: 400, message: 'event id must look like <ms>-<seq>' },
  UNSUPPORTED_PROTOCOL: { http: 400, message: 'no supported subprotocol offered' },
  MALFORMED_REQUEST: { http: 400, message: 'ambiguous or malformed HTTP framing' },
  UNSUPPORTED_MEDIA_TYPE: { http: 415, message: 'send Content-Type: application/json' },
  INVALID_DATA: { http: 400, message: 'data must be plain JSON within the depth limit' },
  PAYLOAD_TOO_LARGE: { http: 413, message: 'payload too large' },
  UNAUTHORIZED: { http: 401, message: 'missing or invalid token' },
  FORBIDDEN: { http: 403, message: 'token does not grant access to this project' },
  /** An upgrade refused: the server API blocked this user until a time (Retry-After says when it ends). */
  USER_BLOCKED: { http: 403, message: 'this user is blocked' },
  /** A join refused: the server API revoked this user's access to the project after the token was issued; a token issued later is accepted. */
  ACCESS_REVOKED: { http: 403, message: 'access to this project was revoked; get a new token' },
  NOT_JOINED: { http: 409, message: 'join the project first' },
  IDEMPOTENCY_KEY_REUSED: { http: 422, message: 'this Idempotency-Key was used with a different body' },
  RATE_LIMITED: { http: 429, message: 'too many messages' },
  /** A publish with a new Idempotency-Key refused: its producer holds IDEMPOTENCY_KEYS_PER_PRODUCER unexpired keys. Nothing was appended; retry after Retry-After (its oldest key expires then), or publish without a key. */
  IDEMPOTENCY_KEYS_EXHAUSTED: { http: 429, message: 'this producer holds too many unexpired Idempotency-Keys; nothing appended, retry after Retry-After' },
  TOO_MANY_CONNECTIONS: { http: 429, message: 'connection limit reached' },
  TOO_MANY_ROOMS: { http: 429, message: 'too many joined projects on this connection' },
  UNAVAILABLE: { http: 503, message: 'event bus unavailable, retry later' },
  /** A publish refused because the project's fan-out is behind (FANOUT_MAX_DELAY_MS): nothing was appended; slow down, retry after Retry-After. */
  OVERLOADED: { http: 503, message: 'fan-out is behind for this project; nothing appended, retry after Retry-After' },
  /** user_feedback refused: the undelivered-feedback store is at its bound (FEEDBACK_STREAM_MAX / FEEDBACK_MEMORY_QUEUE), or the user's or project's pending quota (FEEDBACK_PENDING_PER_USER / _PER_PROJECT; the message says which). Nothing was stored. */
  FEEDBACK_QUEUE_FULL: { http: 503, message: 'too much feedback waiting for the agents-server; not accepted, retry later' },
  NOT_FOUND: { http: 404, message: 'no such route' },
  INTERNAL: { http: 500, message: 'internal error' },
} as const satisfies Record<string, { http: number; message: string }>;

export type ErrorCode = keyof typeof ErrorCodes;

/** An error that maps to a protocol error code; anything else thrown is reported as INTERNAL. */
export class GatewayError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string = ErrorCodes[code].message,
    /** When to try again, for a refusal that will pass by itself (an HTTP answer sends it as Retry-After). */
    readonly retryAfterS?: number,
  ) {
    super(message);
    this.name = 'GatewayError';
  }
}

export function toGatewayError(err: unknown): GatewayError {
  return err instanceof GatewayError ? err : new GatewayError('INTERNAL');
}

/** WebSocket close codes (4000-4999 is the application range; 4xxx mirrors the HTTP status). */
export const CloseCodes = {
  /** Server is shutting down: reconnect to any instance and resume with `since`. */
  GOING_AWAY: 1001,
  /** A client frame over MAX_PAYLOAD_BYTES (over twice that, uWS cuts the connection: 1006). */
  MESSAGE_TOO_BIG: 1009,
  /** The token's `exp` passed while connected, or an `auth_refresh` was refused: get a fresh token, then reconnect. */
  TOKEN_EXPIRED: 4401,
  /** Closed by the server API (disconnect, block): do not reconnect on your own; the app decides (a new token, a user action). */
  DISCONNECTED: 4403,
  /** No frame and no pong within IDLE_TIMEOUT_S. */
  HEARTBEAT_TIMEOUT: 4408,
  /** The client kept sending after being rate limited. */
  RATE_LIMITED: 4429,
} as const;
