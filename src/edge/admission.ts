import { createSanctionsMemory } from './sanctions.js';
import { createFanoutDelayMemory } from './fanout-delay.js';
import { createSharedTableMemory, openSharedTable, type SharedTableMemory } from './shared-table.js';

/**
 * Who may connect and how often, once per process whatever WORKERS is: connection counts per user,
 * per client address and per instance, upgrade-rate buckets per address, HTTP request buckets per
 * key, and a penalty box for clients closed for flooding. The state lives in shared memory
 * (shared-table.ts) that every worker thread opens, so a cap of 20 connections per user admits 20
 * in the whole process, not 20 per thread, and a user penalized on one thread is refused on all.
 * Every decision is synchronous and O(1): the uWS upgrade handler must decide before it returns.
 */

export type Admission = { ok: true } | { ok: false; retryAfterS: number; reason: string };

const ADMIT: Admission = { ok: true };

export interface EdgeCaps {
  /** Connections per instance (this process, all its worker threads). */
  readonly total: number;
  readonly perUser: number;
  /** Per client address (an IPv6 client's /prefix counts as one address; see client-address.ts). */
  readonly perAddress: number;
  readonly upgrades: { readonly perSecond: number; readonly burst: number };
  readonly http: { readonly perSecond: number; readonly burst: number };
}

/** What a worker thread needs to share the main thread's edge state (structured-cloneable). */
export interface EdgeStateMemory {
  /** Connection counts: one value (the count) per user or address key. */
  readonly connections: SharedTableMemory;
  /** Rate buckets and penalties: tokens, last refill (epoch ms), penalized until (epoch ms). */
  readonly limits: SharedTableMemory;
  /** Unsent bytes of each thread's sockets, in KiB, one Int32 per thread: the outbound budget is per process. */
  readonly buffered: SharedArrayBuffer;
  /** How far behind each project's fan-out is, process-wide (fanout-delay.ts). */
  readonly fanoutDelays: SharedTableMemory;
  /** The server API's blocks and project revocations (edge/sanctions.ts). */
  readonly sanctions: SharedTableMemory;
}

/** Threads a process may run (WORKERS' maximum). */
const MAX_THREADS = 256;

/** Rate and penalty records kept at most (then idle ones are forgotten: a forgotten bucket is a full one). */
const MAX_LIMIT_RECORDS = 1 << 19;

export function createEdgeStateMemory(caps: Pick<EdgeCaps, 'total'>): EdgeStateMemory {
  return {
    // One record per user and per address with a live connection, plus the instance total: at most
    // 2 × total + 1 live keys, kept under half the capacity. Grown on demand from 1,024 records.
    connections: createSharedTableMemory({ valueSlots: 1, maxCapacity: Math.min(1 << 24, 4 * caps.total + 64) }),
    limits: createSharedTableMemory({ valueSlots: 3, maxCapacity: MAX_LIMIT_RECORDS }),
    buffered: new SharedArrayBuffer(MAX_THREADS * 4),
    fanoutDelays: createFanoutDelayMemory(),
    sanctions: createSanctionsMemory(),
  };
}

export interface EdgeState {
  /**
   * An upgrade from `address` (null: a trusted proxy's own address, never limited): refused while
   * the address is penalized or its upgrade bucket is empty; takes a token otherwise.
   */
  checkUpgrade(address: string | null, now?: number): Admission;
  /**
   * A connection for `userId` from `address`: refused while the user is penalized or a cap is
   * reached; otherwise counted at once (released by `release`), so threads admitting at the same
   * moment never pass a cap together.
   */
  admit(userId: string, address: string | null, now?: number): Admission;
  release(userId: string, address: string | null): void;
  /**
   * Refuses the user's and the address's upgrades for `seconds`. Across instances, resolves once the
   * penalty is on its way to the other instances (see shared-penalties.ts); in one process, at once.
   */
  penalize(userId: string, address: string | null, seconds: number, now?: number): Promise<void> | void;
  /** One HTTP request for `key`'s bucket. */
  takeHttp(key: string, now?: number): Admission;
  /** Connections counted in this process (all threads). */
  connections(): number;
  /**
   * Records that thread `slot`'s sockets hold `bytes` unsent and returns what all threads of the
   * process hold (each thread's last report): MAX_BUFFERED_BYTES bounds the process, not a thread.
   */
  reportBuffered(slot: number, bytes: number): number;
}

// Key spaces in the tables: a user id and an address can never be mistaken for each other.
const USER = 1;
const ADDRESS = 2;
const HTTP = 3;
/** The instance's own count (one record, key ''). */
const TOTAL = 4;

// Value slots of the limits table.
const TOKENS = 0;
const REFILLED_AT = 1;
const PENALTY_UNTIL = 2;

export function openEdgeState(memory: EdgeStateMemory, caps: EdgeCaps): EdgeState {
  const buckets = openBuckets(memory.limits, caps);
  const counts = openCounts(memory.connections, caps);
  const buffered = new Int32Array(memory.buffered);
  return {
    checkUpgrade(address, now = Date.now()) {
      return address === null ? ADMIT : buckets.upgrade(address, now);
    },
    admit(userId, address, now = Date.now()) {
      const penalty = buckets.penaltyOf(USER, userId, now);
      return penalty.ok ? counts.admit(userId, address) : penalty;
    },
    release: counts.release,
    penalize: buckets.penalize,
    takeHttp: buckets.http,
    reportBuffered(slot, bytes) {
      Atomics.store(buffered, slot, Math.min(0x7fffffff, Math.ceil(bytes / 1024)));
      let kib = 0;
      for (let i = 0; i < buffered.length; i++) kib += Atomics.load(buffered, i);
      return kib * 1024;
    },
    connections: counts.total,
  };
}

/** The limits table: token buckets (upgrades per address, HTTP requests per principal) and penalties. */
function openBuckets(memory: SharedTableMemory, caps: EdgeCaps) {
  const limits = openSharedTable(memory);
  const lv = limits.values;
  // A bucket untouched this long is full again, the same as no record at all: such records (with no
  // penalty running) may be forgotten when the table is full.
  const refillMs = 1000 * Math.max(caps.upgrades.burst / caps.upgrades.perSecond, caps.http.burst / caps.http.perSecond);
  let evictNow = 0;
  const idle = (r: number) => lv[limits.valueIndex(r, PENALTY_UNTIL)]! <= evictNow && evictNow - lv[limits.valueIndex(r, REFILLED_AT)]! >= refillMs;

  /** Under the lock, for the key last hashed: its penalty, if one is running. */
  function runningPenalty(now: number): Admission {
    const r = limits.find();
    if (r < 0) return ADMIT;
    const until = lv[limits.valueIndex(r, PENALTY_UNTIL)]!;
    return until > now ? { ok: false, retryAfterS: Math.ceil((until - now) / 1000), reason: 'closed for flooding; wait before reconnecting' } : ADMIT;
  }

  /** Under the lock, for the key last hashed: takes one token from its bucket. */
  function takeToken(rate: { perSecond: number; burst: number }, now: number): Admission {
    evictNow = now;
    const r = limits.findOrInsert(idle);
    if (r < 0) return ADMIT; // table full of live records: err towards allowing
    const t = limits.valueIndex(r, TOKENS);
    const at = limits.valueIndex(r, REFILLED_AT);
    const tokens = limits.created ? rate.burst : Math.min(rate.burst, lv[t]! + ((now - lv[at]!) / 1000) * rate.perSecond);
    lv[at] = now;
    if (tokens >= 1) {
      lv[t] = tokens - 1;
      return ADMIT;
    }
    lv[t] = tokens;
    return { ok: false, retryAfterS: Math.max(1, Math.ceil((1 - tokens) / rate.perSecond)), reason: 'rate' };
  }

  /** Runs `fn` under the lock with `key` of `space` hashed. */
  function locked<T>(space: number, key: string, fn: () => T): T {
    limits.hash(space, key);
    limits.lock();
    try {
      return fn();
    } finally {
      limits.unlock();
    }
  }

  return {
    penaltyOf: (space: number, key: string, now: number) => locked(space, key, () => runningPenalty(now)),
    upgrade: (address: string, now: number) =>
      locked(ADDRESS, address, () => {
        const penalty = runningPenalty(now);
        return penalty.ok ? takeToken(caps.upgrades, now) : penalty;
      }),
    http: (key: string, now = Date.now()) => locked(HTTP, key, () => takeToken(caps.http, now)),
    penalize(userId: string, address: string | null, seconds: number, now = Date.now()): void {
      const until = now + seconds * 1000;
      for (const [space, key] of address === null ? [[USER, userId] as const] : ([[USER, userId], [ADDRESS, address]] as const)) {
        locked(space, key, () => {
          evictNow = now;
          const r = limits.findOrInsert(idle);
          if (r < 0) return;
          if (limits.created) {
            // A record made for the penalty alone: its bucket counts as full.
            lv[limits.valueIndex(r, TOKENS)] = Infinity;
            lv[limits.valueIndex(r, REFILLED_AT)] = now;
          }
          const p = limits.valueIndex(r, PENALTY_UNTIL);
          lv[p] = Math.max(lv[p]!, until);
        });
      }
    },
  };
}

/** The connections table: live connections of the process, of each user and of each address. */
function openCounts(memory: SharedTableMemory, caps: EdgeCaps) {
  const counts = openSharedTable(memory);
  const cv = counts.values;
  const never = () => false;

  /** Under the lock: the count of `key` in `space` (0 if none). */
  function countOf(space: number, key: string): number {
    counts.hash(space, key);
    const r = counts.find();
    return r < 0 ? 0 : cv[counts.valueIndex(r, 0)]!;
  }

  /** Under the lock: adds `delta` to the count of `key` in `space`; a count of 0 is removed. */
  function add(space: number, key: string, delta: number): boolean {
    counts.hash(space, key);
    const r = counts.findOrInsert(never);
    if (r < 0) return false;
    const i = counts.valueIndex(r, 0);
    const n = cv[i]! + delta;
    if (n <= 0) counts.remove(r);
    else cv[i] = n;
    return true;
  }

  const keysOf = (userId: string, address: string | null) =>
    address === null ? ([[TOTAL, ''], [USER, userId]] as const) : ([[TOTAL, ''], [USER, userId], [ADDRESS, address]] as const);

  return {
    admit(userId: string, address: string | null): Admission {
      counts.lock();
      try {
        // Retry-After: a slot frees when someone leaves; a few seconds is an honest guess.
        if (countOf(TOTAL, '') >= caps.total) return { ok: false, retryAfterS: 5, reason: `this instance holds its maximum of ${caps.total} connections` };
        if (countOf(USER, userId) >= caps.perUser) return { ok: false, retryAfterS: 5, reason: `at most ${caps.perUser} connections per user` };
        if (address !== null && countOf(ADDRESS, address) >= caps.perAddress) return { ok: false, retryAfterS: 5, reason: `at most ${caps.perAddress} connections per address` };
        // Counted now, under the same lock as the checks. The table is sized for every live key; if
        // it is ever full, refuse (undoing what was counted) rather than admit a connection that
        // could not be counted.
        const keys = keysOf(userId, address);
        for (let i = 0; i < keys.length; i++) {
          if (add(keys[i]![0], keys[i]![1], 1)) continue;
          for (let j = 0; j < i; j++) add(keys[j]![0], keys[j]![1], -1);
          return { ok: false, retryAfterS: 5, reason: 'connection table full' };
        }
        return ADMIT;
      } finally {
        counts.unlock();
      }
    },
    release(userId: string, address: string | null): void {
      counts.lock();
      try {
        for (const [space, key] of keysOf(userId, address)) add(space, key, -1);
      } finally {
        counts.unlock();
      }
    },
    total(): number {
      counts.lock();
      try {
        return countOf(TOTAL, '');
      } finally {
        counts.unlock();
      }
    },
  };
}

/** The caps from the configuration's edge section. */
export function edgeCaps(edge: {
  readonly maxConnections: number;
  readonly maxConnectionsPerUser: number;
  readonly maxConnectionsPerIp: number;
  readonly upgradesPerIp: { readonly perSecond: number; readonly burst: number };
  readonly httpPerToken: { readonly perSecond: number; readonly burst: number };
}): EdgeCaps {
  return { total: edge.maxConnections, perUser: edge.maxConnectionsPerUser, perAddress: edge.maxConnectionsPerIp, upgrades: edge.upgradesPerIp, http: edge.httpPerToken };
}
