import type { Logger } from 'pino';
import type { PresenceChange, PresenceSnapshot } from '../agents/presence.js';
import { createPendingCounts, type PendingEntry, type PendingQuotas, type QuotaRefusal } from '../agents/feedback-quotas.js';
import { createMemoryInbox, type ReplyOutcome } from '../agents/replies.js';
import type { Envelope } from '../protocol/messages.js';

/** A worker's call on the hub (FromWorker 'agents-hub'). */
export type AgentsHubRequest =
  | { readonly op: 'presence'; readonly node: string; readonly field: string; readonly online: boolean }
  | { readonly op: 'presence-snapshot'; readonly requestId: number }
  | { readonly op: 'user-online'; readonly userId: string }
  | { readonly op: 'user-offline'; readonly userId: string }
  | { readonly op: 'reply'; readonly requestId: number; readonly userId: string; readonly envelope: Envelope }
  | { readonly op: 'cursor-get'; readonly requestId: number; readonly guid: string }
  | { readonly op: 'cursor-set'; readonly guid: string; readonly eventId: string }
  | { readonly op: 'feedback-reserve'; readonly requestId: number; readonly entry: PendingEntry }
  | { readonly op: 'feedback-release'; readonly feedbackIds: readonly string[] };

/** What the hub tells a worker (ToWorker 'agents-hub'). */
export type AgentsHubMessage =
  | { readonly op: 'presence-change'; readonly change: PresenceChange }
  | { readonly op: 'deliver'; readonly userId: string; readonly envelope: Envelope }
  /** The answer to the request with this id: a snapshot, a reply's outcome, a confirmed position, a feedback's refusal (or null). */
  | { readonly op: 'answer'; readonly requestId: number; readonly value: PresenceSnapshot | ReplyOutcome | QuotaRefusal | string | null };

export interface AgentsHub {
  /** A worker's way in: the pool wraps each message for the worker's port. */
  attach(workerId: number, send: (message: AgentsHubMessage) => void): void;
  /** A worker's thread ended: its users go offline and it receives nothing more. */
  detach(workerId: number): void;
  handle(workerId: number, request: AgentsHubRequest): void;
}

/**
 * The agents relay's cross-thread parts of a WORKERS > 1 process without Redis, in the main thread:
 * what Redis does between instances, for the worker threads (each an instance with its own link).
 *
 * - Presence: each worker reports its node-level transitions (its first connection of a user in a
 *   project joined, its last one left); the hub numbers them with one sequence and sends every
 *   change to every worker, whose presence keeps the aggregate as it does from Redis pub/sub. A
 *   worker's presence starts from a snapshot; the port's order puts every later change after it.
 * - Targeted replies: each worker says which users it holds connections of; a reply goes to those
 *   workers ('live'), or into an inbox for AGENT_REPLY_OFFLINE_S that the next worker to hold the
 *   user receives ('stored').
 * - Positions confirmed with project_update_ack, so a subscribe on any link resumes from them.
 * - Pending feedback counted per user, per project and in all, so FEEDBACK_MEMORY_QUEUE and the
 *   quotas hold per process. Each worker's memory outbox keeps and sends what it accepted on its
 *   own link; it asks here before storing, and releases on ack. A worker that ends releases all it held.
 */
export function createAgentsHub(options: { offlineWindowS: number; log: Logger; feedback: PendingQuotas & { total: number } }): AgentsHub {
  const workers = new Map<number, (message: AgentsHubMessage) => void>();
  /** Per worker: its node name and the `<projectGuid> <userId>` fields online through it. */
  const presence = new Map<number, { node: string; fields: Set<string> }>();
  let seq = 0;
  /** User → the workers holding a connection of theirs. */
  const holders = new Map<string, Set<number>>();
  const inbox = createMemoryInbox(options.offlineWindowS);
  const cursors = new Map<string, string>();
  const pending = createPendingCounts(options.feedback);

  const post = (workerId: number, message: AgentsHubMessage) => workers.get(workerId)?.(message);

  function transition(node: string, field: string, online: boolean): void {
    const change: PresenceChange = { seq: ++seq, node, field, online };
    for (const workerId of workers.keys()) post(workerId, { op: 'presence-change', change });
  }

  function run(workerId: number, request: AgentsHubRequest): void {
    switch (request.op) {
      case 'presence': {
        let entry = presence.get(workerId);
        if (!entry) presence.set(workerId, (entry = { node: request.node, fields: new Set() }));
        // Idempotent, as HSET / HDEL are in Redis: only a real transition is numbered and sent.
        if (request.online === entry.fields.has(request.field)) return;
        if (request.online) entry.fields.add(request.field);
        else entry.fields.delete(request.field);
        return transition(entry.node, request.field, request.online);
      }
      case 'presence-snapshot':
        return post(workerId, { op: 'answer', requestId: request.requestId, value: { seq, nodes: [...presence.values()].map((e) => [e.node, [...e.fields]]) } });
      case 'user-online': {
        let workerIds = holders.get(request.userId);
        if (!workerIds) holders.set(request.userId, (workerIds = new Set()));
        workerIds.add(workerId);
        // Kept replies go to the first worker that holds the user again, before any later reply.
        for (const envelope of inbox.take(request.userId)) post(workerId, { op: 'deliver', userId: request.userId, envelope });
        return;
      }
      case 'user-offline': {
        const workerIds = holders.get(request.userId);
        if (workerIds?.delete(workerId) && workerIds.size === 0) holders.delete(request.userId);
        return;
      }
      case 'reply': {
        const workerIds = holders.get(request.userId);
        if (workerIds) for (const id of workerIds) post(id, { op: 'deliver', userId: request.userId, envelope: request.envelope });
        const outcome: ReplyOutcome = workerIds ? 'live' : inbox.keep(request.userId, request.envelope);
        return post(workerId, { op: 'answer', requestId: request.requestId, value: outcome });
      }
      case 'cursor-get':
        return post(workerId, { op: 'answer', requestId: request.requestId, value: cursors.get(request.guid) ?? null });
      case 'cursor-set':
        cursors.set(request.guid, request.eventId);
        return;
      case 'feedback-reserve':
        return post(workerId, { op: 'answer', requestId: request.requestId, value: pending.reserve(workerId, request.entry) });
      case 'feedback-release':
        return pending.release(workerId, request.feedbackIds);
      default:
        options.log.warn({ workerId, op: (request as { op?: unknown }).op }, 'agents hub: unknown request skipped');
    }
  }

  return {
    attach(workerId, send) {
      workers.set(workerId, send);
    },
    detach(workerId) {
      workers.delete(workerId);
      const entry = presence.get(workerId);
      presence.delete(workerId);
      // Its users go offline for the others, as a dead instance's do in Redis.
      for (const field of entry?.fields ?? []) transition(entry!.node, field, false);
      for (const [userId, workerIds] of holders) if (workerIds.delete(workerId) && workerIds.size === 0) holders.delete(userId);
      // Its memory queue died with it.
      pending.releaseOwner(workerId);
    },
    handle(workerId, request) {
      try {
        run(workerId, request);
      } catch (err) {
        // A bad request from one worker must not take the main thread (and every worker) down.
        options.log.error({ err, workerId }, 'agents hub: request failed');
      }
    },
  };
}
