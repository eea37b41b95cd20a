import type { CodecName } from '../protocol/codec.js';

/**
 * The only place uWS topic strings are built: one topic per project per wire encoding per shard
 * (shard 0, the only one of a room up to SHARD_SIZE sockets, has the plain name), and the guard below.
 */
export function roomTopic(projectGuid: string, codec: CodecName, shard = 0): string {
  return shard === 0 ? `project/${projectGuid}/${codec}` : `project/${projectGuid}/${codec}/${shard}`;
}

/**
 * A topic nothing is ever published on. uWS v20.30 (the newest build this Debian's glibc can run)
 * has a fast path for large sends to sockets that subscribe to no topic (16 KiB or more, nothing
 * buffered or corked yet) that loses the payload when the kernel takes fewer bytes than the frame
 * header, corrupting the stream (fixed upstream in uWebSockets #1662, Sep 2023; seen here as
 * "invalid UTF-8" in replays to slow clients). A subscribed socket never takes that path.
 */
export const LARGE_SEND_GUARD_TOPIC = 'gateway/large-send-guard';
/** The smallest send that can take that path, in bytes. */
export const UWS_LARGE_SEND_BYTES = 16 * 1024;
