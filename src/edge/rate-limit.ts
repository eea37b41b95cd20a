export type RateDecision = 'allow' | 'limit' | 'drop' | 'close';

/** A socket's frame bucket (fields of the connection record, kept inline there). */
export interface FrameBucket {
  tokens: number;
  tokensAt: number;
  /** Frames dropped while rate limited; too many closes the socket. */
  limitedDrops: number;
}

/**
 * Token bucket per connection. The first frame over the limit gets an error frame; further ones
 * are dropped silently (an error per frame would let a flooder amplify); a client that keeps
 * flooding for twice the burst is closed.
 */
export function takeToken(conn: FrameBucket, now: number, perSecond: number, burst: number): RateDecision {
  conn.tokens = Math.min(burst, conn.tokens + ((now - conn.tokensAt) / 1000) * perSecond);
  conn.tokensAt = now;
  if (conn.tokens >= 1) {
    conn.tokens -= 1;
    conn.limitedDrops = 0;
    return 'allow';
  }
  conn.limitedDrops++;
  if (conn.limitedDrops === 1) return 'limit';
  return conn.limitedDrops > burst * 2 ? 'close' : 'drop';
}
