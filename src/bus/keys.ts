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
 * An idempotency record: the ids a keyed publish appended, kept for the idempotency window so a
 * retry returns them instead of appending again. Same hash tag as the stream: one Cluster slot,
 * so the check and the append run in one script.
 */
export function idempotencyKey(prefix: string, projectGuid: string, key: string): string {
  return `${prefix}:{${projectGuid}}:idem:${key}`;
}

/** Stream entry field names. */
export const FIELD_TYPE = 'type';
export const FIELD_DATA = 'data';
/** Set by gateways (not required from producers): the node that appended the event. */
export const FIELD_ORIGIN = 'origin';

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
