import type { CodecName } from '../protocol/codec.js';

/**
 * The only place uWS topic strings are built: one topic per project per wire encoding per shard
 * (shard 0, the only one of a room up to SHARD_SIZE sockets, has the plain name).
 */
export function roomTopic(projectGuid: string, codec: CodecName, shard = 0): string {
  return shard === 0 ? `project/${projectGuid}/${codec}` : `project/${projectGuid}/${codec}/${shard}`;
}
