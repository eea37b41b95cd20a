import type { CodecName } from '../protocol/codec.js';

/** The only place uWS topic strings are built: one topic per project per wire encoding. */
export function roomTopic(projectGuid: string, codec: CodecName): string {
  return `project/${projectGuid}/${codec}`;
}
