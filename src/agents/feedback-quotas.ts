import { GatewayError } from '../errors.js';

// Pending feedback (accepted, not yet acked by the agents-server) counted per user and per project,
// so one user, or one project, cannot fill the store every other user's feedback waits in while the
// agents-server is away. Without Redis the counts live here (one thread, or the agents hub in the
// main thread for every worker of the process); with Redis, in Redis (feedback-quotas-redis.ts).

/** 0 = no quota of that kind. */
export interface PendingQuotas {
  readonly perUser: number;
  readonly perProject: number;
}

/** One feedback as the quotas count it. */
export interface PendingEntry {
  readonly feedbackId: string;
  readonly userId: string;
  readonly projectGuid: string;
}

/** Which bound refused a feedback: its user's quota, its project's, or the whole store's. */
export type QuotaRefusal = 'user' | 'project' | 'store';

/** What an outbox asks before it stores a feedback, and tells once the feedback is gone. */
export interface FeedbackLedger {
  /** Counts the feedback as pending; resolves the bound that refused it (nothing counted), or null. */
  reserve(entry: PendingEntry): Promise<QuotaRefusal | null>;
  /** These feedbacks are no longer pending (acked, or not stored after all). Unknown ids are ignored. */
  release(entries: readonly PendingEntry[]): void;
}

/** FEEDBACK_QUEUE_FULL with the bound that refused it (feedback_refused_total{reason} tells them apart). */
export type QuotaError = GatewayError & { readonly refusal: QuotaRefusal };

/** The refusal a user gets: FEEDBACK_QUEUE_FULL, saying which bound so they know it is theirs. */
export function quotaError(refusal: QuotaRefusal, quotas: PendingQuotas & { store: string }): QuotaError {
  return Object.assign(new GatewayError('FEEDBACK_QUEUE_FULL', quotaMessage(refusal, quotas)), { refusal });
}

function quotaMessage(refusal: QuotaRefusal, quotas: PendingQuotas & { store: string }): string {
  switch (refusal) {
    case 'user':
      return `you have ${quotas.perUser} feedbacks waiting for the agents-server (FEEDBACK_PENDING_PER_USER); not accepted, retry later`;
    case 'project':
      return `this project has ${quotas.perProject} feedbacks waiting for the agents-server (FEEDBACK_PENDING_PER_PROJECT); not accepted, retry later`;
    case 'store':
      return `too much feedback waiting for the agents-server (${quotas.store}); not accepted, retry later`;
  }
}

/** The bound behind a quotaError; null for any other error. */
export function quotaRefusalOf(err: unknown): QuotaRefusal | null {
  return err instanceof GatewayError && 'refusal' in err ? (err as QuotaError).refusal : null;
}

/**
 * The counts of one process's memory outboxes: per user, per project, and in all (the store's bound,
 * FEEDBACK_MEMORY_QUEUE, per process). Each entry belongs to an owner (a worker thread, 0 for a
 * gateway without worker threads), so a thread that ends takes its counts with it: its queue died
 * with it, and a count it held must not stay behind.
 */
export interface PendingCounts {
  reserve(owner: number, entry: PendingEntry): QuotaRefusal | null;
  /** Only the owner's own entries are released (an id another thread counted is ignored). */
  release(owner: number, feedbackIds: Iterable<string>): void;
  releaseOwner(owner: number): void;
  /** Entries counted in all (for tests and metrics). */
  size(): number;
}

export function createPendingCounts(bounds: PendingQuotas & { total: number }): PendingCounts {
  const entries = new Map<string, PendingEntry & { owner: number }>();
  const perUser = new Map<string, number>();
  const perProject = new Map<string, number>();
  const add = (counts: Map<string, number>, key: string, by: number) => {
    const n = (counts.get(key) ?? 0) + by;
    if (n > 0) counts.set(key, n);
    else counts.delete(key);
  };
  const over = (counts: Map<string, number>, key: string, bound: number) => bound > 0 && (counts.get(key) ?? 0) >= bound;

  function forget(feedbackId: string): void {
    const e = entries.get(feedbackId)!;
    entries.delete(feedbackId);
    add(perUser, e.userId, -1);
    add(perProject, e.projectGuid, -1);
  }

  return {
    reserve(owner, entry) {
      if (entries.has(entry.feedbackId)) return null;
      if (over(perUser, entry.userId, bounds.perUser)) return 'user';
      if (over(perProject, entry.projectGuid, bounds.perProject)) return 'project';
      if (entries.size >= bounds.total) return 'store';
      entries.set(entry.feedbackId, { feedbackId: entry.feedbackId, userId: entry.userId, projectGuid: entry.projectGuid, owner });
      add(perUser, entry.userId, 1);
      add(perProject, entry.projectGuid, 1);
      return null;
    },
    release(owner, feedbackIds) {
      for (const fid of feedbackIds) if (entries.get(fid)?.owner === owner) forget(fid);
    },
    releaseOwner(owner) {
      for (const [fid, e] of entries) if (e.owner === owner) forget(fid);
    },
    size: () => entries.size,
  };
}

/** A ledger over counts held in this thread (a gateway without worker threads). */
export function localLedger(counts: PendingCounts): FeedbackLedger {
  return {
    reserve: async (entry) => counts.reserve(0, entry),
    release: (entries) => counts.release(0, entries.map((e) => e.feedbackId)),
  };
}
