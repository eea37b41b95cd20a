import type { CodecName } from '../protocol/codec.js';

/**
 * The only place uWS topic strings are built: per project and wire encoding, the room topic (every
 * member listens there while the room has no backlog) and one topic per shard (members listen on
 * their shard's while a backlog is sliced over turns; fanout.ts).
 */
export function roomTopic(projectGuid: string, codec: CodecName): string {
  return `project/${projectGuid}/${codec}`;
}

export function shardTopic(projectGuid: string, codec: CodecName, shard: number): string {
  return `project/${projectGuid}/${codec}/${shard}`;
}
