/**
 * Who may connect and how often: per-key token buckets (upgrades per IP, HTTP requests per token),
 * connection counts per user, per IP and per instance, and a penalty box for clients closed for
 * flooding, so a flooder cannot reconnect at once and carry on. Every decision is O(1) and
 * synchronous: the uWS upgrade handler must decide before it returns.
 */

export type Admission = { ok: true } | { ok: false; retryAfterS: number; reason: string };

const ADMIT: Admission = { ok: true };

/**
 * Token buckets by key, bounded in number: the least recently used key is forgotten first (a
 * forgotten key starts with a full bucket, so the bound only ever errs towards allowing).
 */
export function createKeyedRateLimiter(options: { perSecond: number; burst: number; maxKeys: number }) {
  const buckets = new Map<string, { tokens: number; at: number }>();
  return (key: string, now = Date.now()): Admission => {
    let b = buckets.get(key);
    if (b) {
      buckets.delete(key);
      b.tokens = Math.min(options.burst, b.tokens + ((now - b.at) / 1000) * options.perSecond);
      b.at = now;
    } else {
      b = { tokens: options.burst, at: now };
      if (buckets.size >= options.maxKeys) buckets.delete(buckets.keys().next().value!);
    }
    buckets.set(key, b);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return ADMIT;
    }
    return { ok: false, retryAfterS: Math.max(1, Math.ceil((1 - b.tokens) / options.perSecond)), reason: 'rate' };
  };
}

export interface ConnectionCaps {
  readonly total: number;
  readonly perUser: number;
  readonly perIp: number;
}

/** Live connection counts; `admit` checks the caps, `opened`/`closed` keep the counts. */
export function createConnectionCounter(caps: ConnectionCaps) {
  const byUser = new Map<string, number>();
  // Per address: its count and the first socket's copy of the address string, which later sockets
  // from that address share (sharedAddress). One entry per address, none per connection.
  const byIp = new Map<string, { readonly ip: string; n: number }>();
  let total = 0;
  return {
    admit(userId: string, ip: string): Admission {
      // Retry-After: a connection slot frees when someone leaves; a few seconds is an honest guess.
      if (total >= caps.total) return { ok: false, retryAfterS: 5, reason: `this instance holds its maximum of ${caps.total} connections` };
      if ((byUser.get(userId) ?? 0) >= caps.perUser) return { ok: false, retryAfterS: 5, reason: `at most ${caps.perUser} connections per user` };
      if ((byIp.get(ip)?.n ?? 0) >= caps.perIp) return { ok: false, retryAfterS: 5, reason: `at most ${caps.perIp} connections per address` };
      return ADMIT;
    },
    /** The address string already held for `ip` (equal to it), so sockets of one address share one. */
    sharedAddress(ip: string): string {
      return byIp.get(ip)?.ip ?? ip;
    },
    opened(userId: string, ip: string): void {
      total++;
      byUser.set(userId, (byUser.get(userId) ?? 0) + 1);
      const a = byIp.get(ip);
      if (a) a.n++;
      else byIp.set(ip, { ip, n: 1 });
    },
    closed(userId: string, ip: string): void {
      total--;
      const n = (byUser.get(userId) ?? 0) - 1;
      if (n > 0) byUser.set(userId, n);
      else byUser.delete(userId);
      const a = byIp.get(ip);
      if (a && --a.n <= 0) byIp.delete(ip);
    },
    get total() {
      return total;
    },
  };
}

/** Keys (a user, an address) refused until a deadline: set when a socket is closed for flooding. */
export function createPenaltyBox(maxKeys = 100_000) {
  const until = new Map<string, number>();
  return {
    /** Keys held (some may have expired and not been checked since): 0 means nobody is penalized. */
    get size() {
      return until.size;
    },
    penalize(key: string, seconds: number, now = Date.now()): void {
      if (until.size >= maxKeys) until.delete(until.keys().next().value!);
      until.set(key, now + seconds * 1000);
    },
    check(key: string, now = Date.now()): Admission {
      const t = until.get(key);
      if (t === undefined) return ADMIT;
      if (t <= now) {
        until.delete(key);
        return ADMIT;
      }
      return { ok: false, retryAfterS: Math.ceil((t - now) / 1000), reason: 'closed for flooding; wait before reconnecting' };
    },
  };
}
