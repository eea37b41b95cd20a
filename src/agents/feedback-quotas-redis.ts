import type { RedisClient } from '../redis/client.js';
import { feedbackPendingProjectKey, feedbackPendingUserKey } from '../redis/keys.js';
import type { FeedbackLedger, PendingEntry, PendingQuotas } from './feedback-quotas.js';

// Count one feedback in its pending sets unless one of them is at its quota. A set is a sorted set
// of feedback ids scored by when they were counted: removing an id is idempotent (an ack that
// arrives twice, on two instances after a claim, releases once), and a member left behind by an
// instance that died between two steps (counted, then never appended; or deleted from the stream,
// then never released) stops counting once it is older than the heal time, so no count leaks for ever.
// Every set is checked before any is added to, so a feedback refused by one set never counts in another.
// KEYS the sets (all in one slot, or one per call); ARGV now (ms), counted-before (ms: older members
// are dropped), feedback id, heal time (ms: each set's TTL, refreshed on each count), then each set's
// quota. Returns 0 when counted in all, else the (1-based) index of the set at its quota.
const RESERVE_LUA = `
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. ARGV[2])
  if redis.call('ZCARD', key) >= tonumber(ARGV[4 + i]) then return i end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, ARGV[1], ARGV[3])
  redis.call('PEXPIRE', key, ARGV[4])
end
return 0
`;

type ReserveScript = (numberOfKeys: number, ...keysThenArgs: (string | number)[]) => Promise<number>;
type PendingSet = { key: string; quota: number; kind: 'user' | 'project' };

/**
 * The quotas with Redis, shared by every instance: a user's set lives in the user's slot, a project's
 * in the project's (`{user:<id>}`, `{<guid>}`). On one Redis both are one script (one round trip,
 * atomic: a count never passes its quota, however many instances accept at once). In a Cluster (no
 * script spans two slots) the user's set first, then the project's, undoing the user's count if the
 * project refuses. The outbox releases both when the agents-server acks the feedback, or when the
 * append did not happen.
 */
export function createRedisLedger(options: {
  cmd: RedisClient;
  prefix: string;
  quotas: PendingQuotas;
  clustered: boolean;
  /** A member older than this no longer counts (the heal time of a count left by a dead instance). */
  healMs: number;
  onReleaseError: (err: unknown) => void;
}): FeedbackLedger {
  const { cmd, prefix, quotas, healMs } = options;
  if (!('autocodeFeedbackReserve' in cmd)) cmd.defineCommand('autocodeFeedbackReserve', { lua: RESERVE_LUA });
  const script = (cmd as unknown as { autocodeFeedbackReserve: ReserveScript }).autocodeFeedbackReserve.bind(cmd);

  /** Counts `feedbackId` in every set, or in none: resolves the refusing set, or null. */
  async function reserveIn(sets: readonly PendingSet[], feedbackId: string): Promise<PendingSet | null> {
    const now = Date.now();
    const refused = await script(sets.length, ...sets.map((s) => s.key), now, now - healMs, feedbackId, healMs, ...sets.map((s) => s.quota));
    return refused ? sets[refused - 1]! : null;
  }

  /** The sets an entry is counted in, with their quotas (only the quotas that are on). */
  function setsOf(entry: PendingEntry): PendingSet[] {
    const sets: PendingSet[] = [];
    if (quotas.perUser > 0) sets.push({ key: feedbackPendingUserKey(prefix, entry.userId), quota: quotas.perUser, kind: 'user' });
    if (quotas.perProject > 0) sets.push({ key: feedbackPendingProjectKey(prefix, entry.projectGuid), quota: quotas.perProject, kind: 'project' });
    return sets;
  }

  function removeFrom(keys: readonly string[], feedbackIds: readonly string[]): Promise<unknown> {
    return Promise.all(keys.map((key) => cmd.call('ZREM', key, ...feedbackIds)));
  }

  return {
    async reserve(entry) {
      const sets = setsOf(entry);
      if (!sets.length) return null;
      // A Redis error rejects (nothing counted, or the undo below failed: heals after healMs); the outbox answers UNAVAILABLE.
      if (!options.clustered || sets.length === 1) return (await reserveIn(sets, entry.feedbackId))?.kind ?? null;
      const counted: PendingSet[] = [];
      try {
        for (const set of sets) {
          if (await reserveIn([set], entry.feedbackId)) return set.kind;
          counted.push(set);
        }
        return null;
      } finally {
        if (counted.length < sets.length && counted.length) removeFrom(counted.map((s) => s.key), [entry.feedbackId]).catch(options.onReleaseError);
      }
    },
    release(entries) {
      if (!entries.length || !setsOf(entries[0]!).length) return;
      // Grouped per set: a burst of acks from one user or project is one ZREM each.
      const bySet = new Map<string, string[]>();
      for (const e of entries) {
        for (const s of setsOf(e)) {
          const ids = bySet.get(s.key);
          if (ids) ids.push(e.feedbackId);
          else bySet.set(s.key, [e.feedbackId]);
        }
      }
      for (const [key, ids] of bySet) removeFrom([key], ids).catch(options.onReleaseError);
    },
  };
}
