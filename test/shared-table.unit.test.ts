// The shared-memory table under the process-wide edge limits (src/edge/shared-table.ts): checked
// against a Map model with random operations, then hammered by real worker threads at once.
import fc from 'fast-check';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { createEdgeStateMemory, edgeCaps, openEdgeState } from '../src/edge/admission.js';
import { createSharedTableMemory, openSharedTable } from '../src/edge/shared-table.js';

describe('shared table', () => {
  it('behaves as a Map of key → value through inserts, updates, removals and growth', () => {
    // Unbiased: fast-check otherwise favours the first few keys, and a table of five keys has no
    // clusters for a removal to get wrong.
    const keys = fc.noBias(fc.integer({ min: 0, max: 299 })).map((i) => `key-${i}`);
    const op = fc.oneof(
      fc.record({ kind: fc.constant('set' as const), key: keys, value: fc.integer({ min: 1, max: 1000 }) }),
      fc.record({ kind: fc.constant('delete' as const), key: keys }),
    );
    fc.assert(
      fc.property(fc.array(op, { minLength: 200, maxLength: 1500 }), (ops) => {
        const table = openSharedTable(createSharedTableMemory({ valueSlots: 2, maxCapacity: 4096, initialCapacity: 16 }));
        const model = new Map<string, number>();
        table.lock();
        try {
          for (const o of ops) {
            table.hash(1, o.key);
            if (o.kind === 'set') {
              const r = table.findOrInsert(() => false);
              expect(table.created).toBe(!model.has(o.key));
              table.values[table.valueIndex(r, 1)] = o.value;
              model.set(o.key, o.value);
            } else {
              const r = table.find();
              expect(r >= 0).toBe(model.has(o.key));
              if (r >= 0) table.remove(r);
              model.delete(o.key);
            }
            expect(table.isEmpty()).toBe(model.size === 0);
          }
          expect(table.size()).toBe(model.size);
          for (let i = 0; i < 300; i++) {
            table.hash(1, `key-${i}`);
            const r = table.find();
            expect(r >= 0 ? table.values[table.valueIndex(r, 1)] : undefined).toBe(model.get(`key-${i}`));
          }
        } finally {
          table.unlock();
        }
      }),
      { seed: 1834, numRuns: 200 },
    );
  });

  it('at its maximum size, makes room by evicting what the caller calls evictable, else refuses', () => {
    const table = openSharedTable(createSharedTableMemory({ valueSlots: 1, maxCapacity: 16, initialCapacity: 16 }));
    table.lock();
    const placed: number[] = [];
    for (let i = 0; ; i++) {
      table.hash(1, `k${i}`);
      const r = table.findOrInsert(() => false);
      if (r < 0) break;
      table.values[table.valueIndex(r, 0)] = i;
      placed.push(i);
    }
    // 16 records at most 75% full before refusing.
    expect(placed.length).toBe(12);
    // Even values are evictable now: room for a new key.
    table.hash(1, 'new');
    const r = table.findOrInsert((rec) => table.values[table.valueIndex(rec, 0)]! % 2 === 0);
    expect(r).toBeGreaterThanOrEqual(0);
    expect(table.size()).toBe(7);
    for (const i of placed) {
      table.hash(1, `k${i}`);
      expect(table.find() >= 0).toBe(i % 2 === 1);
    }
    table.unlock();
  });

  it('keeps counts exact when worker threads add and remove at the same time', async () => {
    const memory = createSharedTableMemory({ valueSlots: 1, maxCapacity: 1 << 16, initialCapacity: 16 });
    // Each thread adds 1 to 500 keys (growing the table meanwhile) 20 times, then removes half its adds.
    // They start together (a barrier), or thread start-up alone would serialize them.
    const barrier = new Int32Array(new SharedArrayBuffer(4));
    const source = `
      const { parentPort, workerData } = require('node:worker_threads');
      import(workerData.module).then(({ openSharedTable }) => {
        const t = openSharedTable(workerData.memory);
        Atomics.add(workerData.barrier, 0, 1);
        while (Atomics.load(workerData.barrier, 0) < 4) {}
        for (let round = 0; round < 20; round++) {
          for (let k = 0; k < 500; k++) {
            t.hash(1, 'key-' + k); t.lock();
            const r = t.findOrInsert(() => false);
            t.values[t.valueIndex(r, 0)] += 1;
            t.unlock();
          }
        }
        for (let k = 0; k < 500; k++) {
          for (let n = 0; n < 10; n++) {
            t.hash(1, 'key-' + k); t.lock();
            const r = t.find();
            const i = t.valueIndex(r, 0);
            if (t.values[i] === 1) t.remove(r); else t.values[i] -= 1;
            t.unlock();
          }
        }
        parentPort.postMessage('done');
      });`;
    const module = new URL('../dist/edge/shared-table.js', import.meta.url).href;
    const threads = Array.from({ length: 4 }, () => new Worker(source, { eval: true, workerData: { memory, module, barrier } }));
    await Promise.all(threads.map((w) => new Promise((resolve, reject) => (w.once('message', resolve), w.once('error', reject)))));
    const table = openSharedTable(memory);
    table.lock();
    for (let k = 0; k < 500; k++) {
      table.hash(1, `key-${k}`);
      const r = table.find();
      expect(table.values[table.valueIndex(r, 0)]).toBe(4 * 20 - 4 * 10);
    }
    expect(table.size()).toBe(500);
    table.unlock();
  });
});

describe('edge state', () => {
  const caps = edgeCaps({ maxConnections: 5, maxConnectionsPerUser: 2, maxConnectionsPerIp: 3, upgradesPerIp: { perSecond: 1, burst: 2 }, httpPerToken: { perSecond: 10, burst: 3 } });

  it('admits up to each cap, releases slots, and is one state for every opener of the memory', () => {
    const memory = createEdgeStateMemory(caps);
    const a = openEdgeState(memory, caps);
    const b = openEdgeState(memory, caps); // as a second worker thread opens it
    expect(a.admit('alice', '10.0.0.1').ok).toBe(true);
    expect(b.admit('alice', '10.0.0.2').ok).toBe(true);
    expect(a.admit('alice', '10.0.0.3')).toMatchObject({ ok: false, reason: 'at most 2 connections per user' });
    expect(b.admit('bob', '10.0.0.1').ok).toBe(true);
    expect(a.admit('carol', '10.0.0.1').ok).toBe(true);
    expect(b.admit('dave', '10.0.0.1')).toMatchObject({ ok: false, reason: 'at most 3 connections per address' });
    // A trusted proxy's own request (no address key) is counted per user and in total, never per address.
    expect(a.admit('erin', null).ok).toBe(true);
    expect(a.admit('frank', null)).toMatchObject({ ok: false, reason: 'this instance holds its maximum of 5 connections' });
    expect(b.connections()).toBe(5);
    a.release('alice', '10.0.0.1');
    expect(b.admit('dave', '10.0.0.1').ok).toBe(true);
    expect(a.connections()).toBe(5);
  });

  it('rate-limits upgrades and HTTP per key, and penalizes a user and an address everywhere', () => {
    const memory = createEdgeStateMemory(caps);
    const a = openEdgeState(memory, caps);
    const b = openEdgeState(memory, caps);
    const t0 = 1_000_000;
    expect(a.checkUpgrade('10.0.0.1', t0).ok).toBe(true);
    expect(b.checkUpgrade('10.0.0.1', t0).ok).toBe(true);
    expect(a.checkUpgrade('10.0.0.1', t0)).toMatchObject({ ok: false, retryAfterS: 1 });
    expect(b.checkUpgrade('10.0.0.1', t0 + 1000).ok).toBe(true); // refilled one token
    expect(a.checkUpgrade(null, t0).ok).toBe(true); // a trusted proxy's own request
    expect([1, 2, 3, 4].map(() => (b.takeHttp('token-x', t0).ok ? 1 : 0))).toEqual([1, 1, 1, 0]);

    a.penalize('mallory', '10.0.0.9', 10, t0);
    expect(b.admit('mallory', '10.0.0.7', t0 + 5000)).toMatchObject({ ok: false, retryAfterS: 5 });
    expect(b.checkUpgrade('10.0.0.9', t0 + 5000)).toMatchObject({ ok: false, retryAfterS: 5 });
    expect(b.admit('mallory', '10.0.0.7', t0 + 10_001).ok).toBe(true);
    expect(a.checkUpgrade('10.0.0.9', t0 + 10_001).ok).toBe(true);
  });
});

describe('memory ticket store', () => {
  it('refuses when full instead of evicting a ticket that has not expired', async () => {
    const { createMemoryTicketStore } = await import('../src/auth/tickets.js');
    const store = createMemoryTicketStore({ ttlS: 30, perUser: 100, maxTickets: 10 });
    const principal = (userId: string) => ({ userId, projects: 'all' as const, scopes: new Set<string>(), expiresAtS: null });
    const tickets = await Promise.all(Array.from({ length: 10 }, (_, i) => store.issue(principal(`u${i}`))));
    await expect(store.issue(principal('late'))).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    for (const [i, t] of tickets.entries()) expect((await store.redeem(t))?.userId).toBe(`u${i}`);
    // Redeemed tickets leave room.
    expect(typeof (await store.issue(principal('late')))).toBe('string');
  });
});
