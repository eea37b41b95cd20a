import type { RedisClient } from '../redis/client.js';
import { feedbackPendingProjectKey, feedbackPendingUserKey } from '../redis/keys.js';
import type { FeedbackLedger, PendingEntry, PendingQuotas } from './feedback-quotas.js';

// Count one feedback in a pending set unless the set is at its quota. A set is a sorted set of
// feedback ids scored by when they were counted: removing an id is idempotent (an ack that arrives
// twice, on two instances after a claim, releases once), and a member left behind by an instance
// that died between two steps (counted, then never appended; or deleted from the stream, then never
// released) stops counting once it is older than the heal time, so no count leaks for ever.
// KEYS[1] the set; ARGV now (ms), counted-before (ms: older members are dropped), quota, feedback id,
// heal time (ms: the set's TTL, refreshed on each count). Returns 1 when counted, 0 at the quota.
const RESERVE_LUA = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
`;

type ReserveScript = (key: string, now: number, countedBefore: number, quota: number, feedbackId: string, healMs: number) => Promise<number>;

/**
 * The quotas with Redis, shared by every instance: a user's set lives in the user's slot, a project's
 * in the project's (`{user:<id>}`, `{<guid>}`), so in a Cluster they are two scripts, each atomic
 * (the count never passes its quota, however many instances accept at once). If the second one
 * refuses, the first is released. The outbox releases both when the agents-server acks the feedback,
 * or when the append did not happen.
 */
export function createRedisLedger(options: {
  cmd: RedisClient;
  prefix: string;
  quotas: PendingQuotas;
  /** A member older than this no longer counts (the heal time of a count left by a dead instance). */
  healMs: number;
  onReleaseError: (err: unknown) => void;
}): FeedbackLedger {
  const { cmd, prefix, quotas, healMs } = options;
  if (!('autocodeFeedbackReserve' in cmd)) cmd.defineCommand('autocodeFeedbackReserve', { numberOfKeys: 1, lua: RESERVE_LUA });
  const reserveScript = (cmd as unknown as { autocodeFeedbackReserve: ReserveScript }).autocodeFeedbackReserve.bind(cmd);

  /** The sets an entry is counted in, with their quotas (only the quotas that are on). */
  function setsOf(entry: PendingEntry): { key: string; quota: number; kind: 'user' | 'project' }[] {
    const sets: { key: string; quota: number; kind: 'user' | 'project' }[] = [];
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
      const now = Date.now();
      // Both at once (one round trip); a Redis error rejects, and the outbox answers UNAVAILABLE.
      const settled = await Promise.allSettled(sets.map((s) => reserveScript(s.key, now, now - healMs, s.quota, entry.feedbackId, healMs)));
      const counted = sets.filter((_, i) => settled[i]!.status === 'fulfilled' && (settled[i] as PromiseFulfilledResult<number>).value === 1);
      if (counted.length === sets.length) return null;
      // Not stored: undo what was counted (a failed undo heals after healMs).
      if (counted.length) removeFrom(counted.map((s) => s.key), [entry.feedbackId]).catch(options.onReleaseError);
      const failed = settled.find((r) => r.status === 'rejected');
      if (failed) throw (failed as PromiseRejectedResult).reason;
      return sets.find((s) => !counted.includes(s))!.kind;
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
