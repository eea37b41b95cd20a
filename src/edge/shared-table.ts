import { randomInt } from 'node:crypto';

/**
 * A hash table of small numeric records in shared memory, so every worker thread of a process sees
 * one set of edge counters (connections per user and per address, rate buckets, penalties) instead
 * of one per thread. Nothing in Node or on npm does this (a Map cannot be shared between isolates),
 * hence this file.
 *
 * - Keys are strings, stored as a 64-bit hash with a per-process random seed (two differently built
 *   32-bit lanes): two live keys share a record with probability ~n²/2⁶⁵ (n = live keys; 1e-10 at a
 *   million). Keys come from signed tokens or from network addresses, never chosen freely enough to
 *   aim at a victim's record without the seed.
 * - Values are `valueSlots` float64s per record.
 * - One lock for the whole table (a futex-style mutex on an Int32 with Atomics.wait): the work under
 *   it is a few probes, so with a handful of threads contention is negligible, and one lock keeps
 *   linear probing, deletion and growth simple and obviously correct.
 * - Open addressing with linear probing and backward-shift deletion (no tombstones); the memory grows
 *   by doubling (a growable SharedArrayBuffer every thread's view follows) up to `maxCapacity`, so a
 *   table holding 20,000 users takes a few hundred KB, not what MAX_CONNECTIONS could need.
 *
 * Every read or write of records happens between lock() and unlock(); the caller keeps that section
 * free of anything that can throw.
 */

/** The memory of a table: structured-clone it to a worker thread and open it there. */
export interface SharedTableMemory {
  /** Int32 words: lock, capacity (records), count (live records), seed A, seed B, value slots. */
  readonly header: SharedArrayBuffer;
  /** Records: per record one float64 holding the two hash words, then the value slots. Growable. */
  readonly records: SharedArrayBuffer;
}

const LOCK = 0;
const CAPACITY = 1;
const COUNT = 2;
const SEED_A = 3;
const SEED_B = 4;
const SLOTS = 5;
const HEADER_WORDS = 8;

/** Load factor above which the table doubles (linear probing stays short below it). */
const MAX_LOAD = 0.5;
/** Spins before a contended lock() sleeps in Atomics.wait. */
const SPINS = 64;

export function createSharedTableMemory(options: { valueSlots: number; maxCapacity: number; initialCapacity?: number }): SharedTableMemory {
  const maxCapacity = powerOfTwoAtLeast(options.maxCapacity);
  const capacity = Math.min(maxCapacity, powerOfTwoAtLeast(options.initialCapacity ?? 1024));
  const stride = 8 * (1 + options.valueSlots);
  const header = new SharedArrayBuffer(HEADER_WORDS * 4);
  const records = new SharedArrayBuffer(capacity * stride, { maxByteLength: maxCapacity * stride });
  const h = new Int32Array(header);
  h[CAPACITY] = capacity;
  h[SEED_A] = randomInt(0x7fffffff) | 1;
  h[SEED_B] = randomInt(0x7fffffff);
  h[SLOTS] = options.valueSlots;
  return { header, records };
}

function powerOfTwoAtLeast(n: number): number {
  let p = 16;
  while (p < n) p *= 2;
  return p;
}

export interface SharedTable {
  /** Records' values: record r's slot k is `values[r * stride + 1 + k]`; use valueIndex(). */
  readonly values: Float64Array;
  lock(): void;
  unlock(): void;
  /**
   * Hashes `key` in key space `space` (a small number: keys of different spaces never meet) for the
   * find/insert calls that follow; under the lock or not (it reads only the seed). The space is hashed
   * as a first character would be, so no prefixed string is built.
   */
  hash(space: number, key: string): void;
  /** The record of the last hashed key, or -1. */
  find(): number;
  /**
   * The record of the last hashed key, created with zeroed values if absent (then `created` is true
   * until the next call), or -1 when the table is at its maximum size and no `evictable` record
   * (asked of every record, oldest-placed order not guaranteed) could be removed.
   */
  findOrInsert(evictable: (record: number) => boolean): number;
  readonly created: boolean;
  remove(record: number): void;
  /** Index into `values` of slot `k` of record `r`. */
  valueIndex(record: number, k: number): number;
  /** Live records (read under the lock for an exact figure). */
  size(): number;
  /**
   * Whether the table holds no record, without the lock: an atomic read, ordered after every
   * unlock() that came before it. For a fast "nothing to find" on tables that are usually empty.
   */
  isEmpty(): boolean;
}

export function openSharedTable(memory: SharedTableMemory): SharedTable {
  const header = new Int32Array(memory.header);
  // Views without a length follow the growable buffer as it grows (in every thread).
  const words = new Int32Array(memory.records);
  const values = new Float64Array(memory.records);
  const slots = header[SLOTS]!;
  const stride = 1 + slots; // in float64 units
  const seedA = header[SEED_A]!;
  const seedB = header[SEED_B]!;
  let hashA = 0;
  let hashB = 0;
  let created = false;

  const { lock, unlock } = futexLock(header, LOCK);

  function hash(space: number, key: string): void {
    // Lane A: FNV-1a over UTF-16 units from a seeded basis; lane B: a multiply-rotate lane (MurmurHash3's
    // constants). Two unrelated constructions, so a structure that collides one is unlikely to collide both.
    let a = 0x811c9dc5 ^ seedA;
    let b = seedB;
    for (let i = -1; i < key.length; i++) {
      const c = i < 0 ? space : key.charCodeAt(i);
      a = Math.imul(a ^ c, 0x01000193);
      let k = Math.imul(c, 0xcc9e2d51);
      k = Math.imul((k << 15) | (k >>> 17), 0x1b873593);
      b ^= k;
      b = Math.imul((b << 13) | (b >>> 19), 5) + 0xe6546b64;
    }
    hashA = fmix(a ^ (key.length + 1));
    hashB = fmix(b ^ (key.length + 1) ^ Math.imul(hashA, 0x9e3779b1));
    // (0, 0) marks an empty record.
    if (hashA === 0 && hashB === 0) hashB = 1;
  }

  const wordA = (r: number) => r * stride * 2;
  const isEmpty = (r: number) => words[wordA(r)] === 0 && words[wordA(r) + 1] === 0;

  function probe(): number {
    const mask = header[CAPACITY]! - 1;
    let r = hashB & mask;
    for (;;) {
      const w = wordA(r);
      const x = words[w]!;
      const y = words[w + 1]!;
      if (x === hashA && y === hashB) return r;
      if (x === 0 && y === 0) return -1 - r; // empty: where the key would go
      r = (r + 1) & mask;
    }
  }

  function place(r: number): void {
    const w = wordA(r);
    words[w] = hashA;
    words[w + 1] = hashB;
    values.fill(0, r * stride + 1, r * stride + stride);
    header[COUNT]!++;
  }

  /** Doubles the table and re-places every record (under the lock; O(records), happens log2 times). */
  function grow(): boolean {
    const capacity = header[CAPACITY]!;
    const bytes = capacity * 2 * stride * 8;
    if (bytes > memory.records.maxByteLength) return false;
    const saved = values.slice(0, capacity * stride);
    const savedWords = new Int32Array(saved.buffer);
    memory.records.grow(bytes);
    values.fill(0, 0, capacity * 2 * stride);
    header[CAPACITY] = capacity * 2;
    header[COUNT] = 0;
    const keepA = hashA;
    const keepB = hashB;
    for (let r = 0; r < capacity; r++) {
      const w = r * stride * 2;
      if (savedWords[w] === 0 && savedWords[w + 1] === 0) continue;
      hashA = savedWords[w]!;
      hashB = savedWords[w + 1]!;
      const to = -1 - probe();
      place(to);
      values.set(saved.subarray(r * stride + 1, r * stride + stride), to * stride + 1);
    }
    hashA = keepA;
    hashB = keepB;
    return true;
  }

  function remove(record: number): void {
    const mask = header[CAPACITY]! - 1;
    let hole = record;
    let r = record;
    for (;;) {
      r = (r + 1) & mask;
      if (isEmpty(r)) break;
      const home = words[wordA(r) + 1]! & mask;
      // r may move back into the hole unless its home lies cyclically in (hole, r].
      const stays = hole < r ? home > hole && home <= r : home > hole || home <= r;
      if (stays) continue;
      words[wordA(hole)] = words[wordA(r)]!;
      words[wordA(hole) + 1] = words[wordA(r) + 1]!;
      values.copyWithin(hole * stride + 1, r * stride + 1, r * stride + stride);
      hole = r;
    }
    words[wordA(hole)] = 0;
    words[wordA(hole) + 1] = 0;
    header[COUNT]!--;
  }

  function evict(evictable: (record: number) => boolean): void {
    // Removal shifts records backwards, so a record moved into slot r is checked again.
    for (let r = 0; r < header[CAPACITY]!; ) {
      if (!isEmpty(r) && evictable(r)) remove(r);
      else r++;
    }
  }

  return {
    values,
    lock,
    unlock,
    hash,
    find() {
      const r = probe();
      return r >= 0 ? r : -1;
    },
    findOrInsert(evictable) {
      created = false;
      let r = probe();
      if (r >= 0) return r;
      if (header[COUNT]! + 1 > header[CAPACITY]! * MAX_LOAD && !grow()) {
        evict(evictable);
        if (header[COUNT]! + 1 > header[CAPACITY]! * MAX_LOAD * 1.5) return -1;
      }
      r = -1 - probe();
      place(r);
      created = true;
      return r;
    },
    get created() {
      return created;
    },
    remove,
    valueIndex: (record, k) => record * stride + 1 + k,
    size: () => header[COUNT]!,
    isEmpty: () => Atomics.load(header, COUNT) === 0,
  };
}

/**
 * A lock in one Int32 of shared memory, for every thread that maps it: 0 free, 1 held, 2 held with
 * possible sleepers. A short spin first (holders keep it for well under a microsecond), then
 * Atomics.wait, so a waiting thread sleeps instead of burning its core.
 */
function futexLock(header: Int32Array, at: number): { lock(): void; unlock(): void } {
  return {
    lock() {
      let c = Atomics.compareExchange(header, at, 0, 1);
      if (c === 0) return;
      for (let i = 0; i < SPINS; i++) {
        c = Atomics.compareExchange(header, at, 0, 1);
        if (c === 0) return;
      }
      // 2 = locked with (possible) sleepers: unlock() must then wake one.
      if (c !== 2) c = Atomics.exchange(header, at, 2);
      while (c !== 0) {
        Atomics.wait(header, at, 2);
        c = Atomics.exchange(header, at, 2);
      }
    },
    unlock() {
      if (Atomics.sub(header, at, 1) !== 1) {
        Atomics.store(header, at, 0);
        Atomics.notify(header, at, 1);
      }
    },
  };
}

/** MurmurHash3's 32-bit finalizer: every input bit affects every output bit. */
function fmix(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h | 0;
}
