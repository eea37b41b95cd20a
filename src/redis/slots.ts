import { createRequire } from 'node:module';

/** The Cluster hash slot of a key (its `{hash tag}` if it has one), as Redis computes it. */
export const slotOf = createRequire(import.meta.url)('cluster-key-slot') as (key: string) => number;

/**
 * Items grouped by the Cluster slot of their key, in first-seen order: one multi-key command per
 * group (a command may not span slots).
 */
export function groupBySlot<T>(items: Iterable<T>, keyOf: (item: T) => string): T[][] {
  const bySlot = new Map<number, T[]>();
  for (const item of items) {
    const slot = slotOf(keyOf(item));
    const group = bySlot.get(slot);
    if (group) group.push(item);
    else bySlot.set(slot, [item]);
  }
  return [...bySlot.values()];
}
