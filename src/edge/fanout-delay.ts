import type { FanoutBacklog } from '../bus/ingress.js';
import { createSharedTableMemory, openSharedTable, type SharedTableMemory } from './shared-table.js';

/**
 * How far behind each project's fan-out is, for the whole process: every thread that fans a project
 * out reports, after each of its fan-out turns, how long an event accepted now would wait there and
 * the bytes queued ahead of it, and once more (0) when the room caught up; the ingress reads the
 * longest report before it accepts an event for that project.
 */

/**
 * A report older than this no longer counts. A thread reports a room after every fan-out turn while it
 * is behind and once more (0) when it caught up, which removes the record: this only ends the records
 * of a thread or instance that stopped reporting. Turns can take hundreds of milliseconds when many
 * rooms are behind (measured: 250 ms with 65 rooms behind), so it is well above a turn.
 */
const FRESH_MS = 2000;
const DELAY = 0;
const REPORTED_AT = 1;
const BYTES = 2;
/** Who made the report that stands: a thread's slot, or REMOTE_REPORTER. */
const REPORTER = 3;
/** Reports of other instances (shared-overload.ts). */
export const REMOTE_REPORTER = -1;
/** Projects behind at once, at most: far more than a process fans out (stale records make room). */
const MAX_PROJECTS = 1 << 16;
/** Project GUIDs are their own key space in this table. */
const PROJECT = 1;

export function createFanoutDelayMemory(): SharedTableMemory {
  return createSharedTableMemory({ valueSlots: 4, maxCapacity: MAX_PROJECTS, initialCapacity: 64 });
}

export interface FanoutDelays {
  /**
   * This thread's rooms still behind after a turn: how long an event accepted now would wait (ms), and
   * the bytes ahead; 0 ms for a room that caught up. `from`: another reporter than this thread.
   */
  report(backlogs: ReadonlyMap<string, FanoutBacklog>, now?: number, from?: number): void;
  /** The longest fresh report of the project in any thread, with when it was made (null when nobody is behind). */
  backlogOf(projectGuid: string, now?: number): (FanoutBacklog & { readonly at: number }) | null;
}

/** `reporter`: this thread's slot (each thread's reports replace only its own or a shorter one). */
export function openFanoutDelays(memory: SharedTableMemory, reporter = 0): FanoutDelays {
  const table = openSharedTable(memory);
  const v = table.values;
  let evictNow = 0;
  const stale = (r: number) => evictNow - v[table.valueIndex(r, REPORTED_AT)]! > FRESH_MS;
  return {
    report(backlogs, now = Date.now(), from = reporter) {
      for (const [guid, { ms, bytes }] of backlogs) {
        table.hash(PROJECT, guid);
        table.lock();
        try {
          evictNow = now;
          // Several threads may report one project: the longest fresh wait stands, and only its own
          // reporter may lower it (a room caught up there; another thread's shorter wait does not).
          if (ms === 0) {
            const r = table.find();
            if (r >= 0 && (v[table.valueIndex(r, REPORTER)] === from || stale(r))) table.remove(r);
            continue;
          }
          const r = table.findOrInsert(stale);
          if (r < 0) continue;
          const d = table.valueIndex(r, DELAY);
          const by = table.valueIndex(r, REPORTER);
          if (!table.created && !stale(r) && ms < v[d]! && v[by] !== from) continue;
          v[d] = ms;
          v[table.valueIndex(r, BYTES)] = bytes;
          v[by] = from;
          v[table.valueIndex(r, REPORTED_AT)] = now;
        } finally {
          table.unlock();
        }
      }
    },
    backlogOf(projectGuid, now = Date.now()) {
      table.hash(PROJECT, projectGuid);
      table.lock();
      try {
        const r = table.find();
        if (r < 0) return null;
        const at = v[table.valueIndex(r, REPORTED_AT)]!;
        if (now - at > FRESH_MS) {
          table.remove(r);
          return null;
        }
        return { ms: v[table.valueIndex(r, DELAY)]!, bytes: v[table.valueIndex(r, BYTES)]!, at };
      } finally {
        table.unlock();
      }
    },
  };
}
