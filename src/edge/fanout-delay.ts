import { createSharedTableMemory, openSharedTable, type SharedTableMemory } from './shared-table.js';

/**
 * How far behind each project's fan-out is, for the whole process: every thread that fans a project
 * out reports, after each of its fan-out turns, how long the project's oldest waiting event has
 * waited; the ingress reads the longest fresh report before it accepts an event for that project.
 * A report is fresh for FRESH_MS: a thread whose room caught up simply stops reporting it.
 */

/** A report older than this no longer counts (fan-out turns run far more often while a room is behind). */
const FRESH_MS = 100;
const DELAY = 0;
const REPORTED_AT = 1;
/** Projects behind at once, at most: far more than a process fans out (stale records make room). */
const MAX_PROJECTS = 1 << 16;
/** Project GUIDs are their own key space in this table. */
const PROJECT = 1;

export function createFanoutDelayMemory(): SharedTableMemory {
  return createSharedTableMemory({ valueSlots: 2, maxCapacity: MAX_PROJECTS, initialCapacity: 64 });
}

export interface FanoutDelays {
  /** This thread's rooms still behind after a turn, with how long their oldest event has waited (ms). */
  report(roomDelays: ReadonlyMap<string, number>, now?: number): void;
  /** The longest fresh wait of the project's events in any thread (0 when nobody is behind). */
  delayOf(projectGuid: string, now?: number): number;
}

export function openFanoutDelays(memory: SharedTableMemory): FanoutDelays {
  const table = openSharedTable(memory);
  const v = table.values;
  let evictNow = 0;
  const stale = (r: number) => evictNow - v[table.valueIndex(r, REPORTED_AT)]! > FRESH_MS;
  return {
    report(roomDelays, now = Date.now()) {
      for (const [guid, ms] of roomDelays) {
        table.hash(PROJECT, guid);
        table.lock();
        try {
          evictNow = now;
          const r = table.findOrInsert(stale);
          if (r < 0) continue;
          const d = table.valueIndex(r, DELAY);
          const at = table.valueIndex(r, REPORTED_AT);
          // Several threads may report one project: the longest fresh wait stands.
          v[d] = !table.created && now - v[at]! <= FRESH_MS ? Math.max(v[d]!, ms) : ms;
          v[at] = now;
        } finally {
          table.unlock();
        }
      }
    },
    delayOf(projectGuid, now = Date.now()) {
      table.hash(PROJECT, projectGuid);
      table.lock();
      try {
        const r = table.find();
        if (r < 0) return 0;
        if (now - v[table.valueIndex(r, REPORTED_AT)]! > FRESH_MS) {
          table.remove(r);
          return 0;
        }
        return v[table.valueIndex(r, DELAY)]!;
      } finally {
        table.unlock();
      }
    },
  };
}
