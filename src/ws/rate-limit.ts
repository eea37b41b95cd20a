import type { Connection } from '../rooms/connection.js';

export type RateDecision = 'allow' | 'limit' | 'drop' | 'close';

/**
 * Token bucket per connection. The first frame over the limit gets an error frame; further ones
 * are dropped silently (an error per frame would let a flooder amplify); a client that keeps
 * flooding for twice the burst is closed.
 */
export function takeToken(conn: Connection, now: number, perSecond: number, burst: number): RateDecision {
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
