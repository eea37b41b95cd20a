import { createHash } from 'node:crypto';

/**
 * The only module that builds Redis key names. One stream per project; the `{guid}` hash tag keeps
 * every key of one project in one Cluster slot, and spreads projects over all masters.
 *
 * Producer contract (any language, or redis-cli):
 *   XADD <prefix>:{<projectGuid>}:events MAXLEN ~ <n> * type <event type> data <JSON object>
 */
export function eventsKey(prefix: string, projectGuid: string): string {
  return `${prefix}:{${projectGuid}}:events`;
}

/**
 * A producer's idempotency records on one project (see bus/idempotency.ts): `record` holds the ids a
 * keyed publish appended, kept for the idempotency window so the producer's retry returns them
 * instead of appending again; `index` is a sorted set of the producer's unexpired keys on the
 * project (score: when each expires, ms), which bounds how many it holds. Same hash tag as the
 * stream: one Cluster slot, so the check, the bound and the append run in one script.
 *
 * The producer is named by a hash of its identity (an HTTP principal's `sub` may be long or hold any
 * character): 32 hex digits, no `:`, so `<producer>:<key>` is read one way only.
 */
export function idempotencyKeys(prefix: string, projectGuid: string, producer: string, key: string): { record: string; index: string } {
  const tag = createHash('sha256').update(producer).digest('hex').slice(0, 32);
  return { record: `${prefix}:{${projectGuid}}:idem:${tag}:${key}`, index: `${prefix}:{${projectGuid}}:idem-keys:${tag}` };
}

/** A one-time connection ticket (src/auth/tickets.ts); expires by itself. */
export function ticketKey(prefix: string, ticket: string): string {
  return `${prefix}:ticket:${ticket}`;
}

/** How many tickets a user was issued in the current TICKET_TTL_S window (expires with it). */
export function ticketCountKey(prefix: string, userId: string): string {
  return `${prefix}:{user:${userId}}:tickets`;
}

/** Pub/sub channel of the edge's penalties (src/edge/shared-penalties.ts): every instance applies them. */
export function penaltiesChannel(prefix: string): string {
  return `${prefix}:{edge}:penalties`;
}

/** Pub/sub channel of fan-out past the overload bound (src/edge/shared-overload.ts): every instance's ingress refuses that project. */
export function overloadChannel(prefix: string): string {
  return `${prefix}:{edge}:overload`;
}

/**
 * The server API across instances (src/admin/): `actions` carries disconnects, revocations, blocks
 * and queries (presence, info) to every gateway; each answers a query on the asker's `replies`
 * channel. Sanctions (blocks, revocations) are kept as one key each, with its expiry, plus an index
 * (a sorted set scored by expiry) a starting instance reads them all from. One hash tag: one slot.
 */
export function adminActionsChannel(prefix: string): string {
  return `${prefix}:{admin}:actions`;
}
export function adminRepliesChannel(prefix: string, instanceId: string): string {
  return `${prefix}:{admin}:replies:${instanceId}`;
}
export function sanctionsIndexKey(prefix: string): string {
  return `${prefix}:{admin}:sanctions`;
}
/** `field` is a sanction's name (edge/sanctions.ts: `b <userId>` or `r <projectGuid> <userId>`). */
export function sanctionKey(prefix: string, field: string): string {
  return `${prefix}:{admin}:sanction:${field}`;
}

/** Stream entry field names. */
export const FIELD_TYPE = 'type';
export const FIELD_DATA = 'data';
/** Set by gateways (not required from producers): the node that appended the event. */
export const FIELD_ORIGIN = 'origin';

// ---------------------------------------------------------------------------------------------
// Agents-server relay (src/agents/). See docs/agents.md for what each key holds.
// ---------------------------------------------------------------------------------------------

/**
 * One of FEEDBACK_STREAM_SHARDS feedback streams (the outbox). A project's feedback always goes to
 * the same shard (hash of its GUID), so it stays in order; several shards with distinct hash tags
 * spread the feedback load over Cluster masters instead of one hot slot.
 */
export function feedbackStreamKey(prefix: string, shard: number): string {
  return `${prefix}:{feedback:${shard}}:stream`;
}
/** The consumer group every gateway reads the feedback streams through (consumer name = NODE_ID). */
export const FEEDBACK_GROUP = 'agents-relay';
/** Stream entry fields of a feedback entry: the feedback id, and the whole record as JSON. */
export const FIELD_FEEDBACK_ID = 'fid';
export const FIELD_FEEDBACK_BODY = 'body';

/**
 * Pending feedback (accepted, not acked by the agents-server) of one user and of one project, for
 * FEEDBACK_PENDING_PER_USER / _PER_PROJECT: sorted sets of feedback ids scored by when each was
 * counted (agents/feedback-quotas-redis.ts). In the user's and the project's slots.
 */
export function feedbackPendingUserKey(prefix: string, userId: string): string {
  return `${prefix}:{user:${userId}}:feedback-pending`;
}
export function feedbackPendingProjectKey(prefix: string, projectGuid: string): string {
  return `${prefix}:{${projectGuid}}:feedback-pending`;
}

/** Replies for a user who had no live connection anywhere when the agents-server sent them. */
export function userInboxKey(prefix: string, userId: string): string {
  return `${prefix}:{user:${userId}}:inbox`;
}
/** Pub/sub channel of one user's targeted replies; an instance subscribes while it holds a connection of that user. */
export function userRepliesChannel(prefix: string, userId: string): string {
  return `${prefix}:{user:${userId}}:replies`;
}

/**
 * Presence keys share one hash tag (one Cluster slot) so a change and its sequence number are one
 * atomic script: presence changes are joins and leaves, orders of magnitude rarer than events.
 */
export function presenceNodesKey(prefix: string): string {
  return `${prefix}:{presence}:nodes`;
}
export function presenceNodeKey(prefix: string, nodeId: string): string {
  return `${prefix}:{presence}:node:${nodeId}`;
}
export function presenceSeqKey(prefix: string): string {
  return `${prefix}:{presence}:seq`;
}
export function presenceChannel(prefix: string): string {
  return `${prefix}:{presence}:changes`;
}

/** The last project_update event id the agents-server confirmed, per project (a hash). */
export function agentsCursorsKey(prefix: string): string {
  return `${prefix}:{agents}:cursors`;
}

/**
 * The keyspace-notification channel Redis publishes a key's events on (`K` in notify-keyspace-events):
 * `__keyspace@<db>__:<key>`. In a Cluster it is published only on the node holding the key.
 */
export function keyspaceChannel(db: number, key: string): string {
  return `${keyspaceChannelPrefix(db)}${key}`;
}

/** What every keyspace channel of a database starts with; the key follows it. */
export function keyspaceChannelPrefix(db: number): string {
  return `__keyspace@${db}__:`;
}
