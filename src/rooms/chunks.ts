import type { Metrics } from '../metrics.js';
import { CODECS, type CodecName } from '../protocol/codec.js';
import { retainedSize, type ProjectEvent } from '../protocol/events.js';

/**
 * A room's outbox (fanout.ts publishes it): pending events cut into chunks of at most one frame,
 * released once every shard has published them, and encoded into frames once per wire encoding.
 */

/** Frames above this are split, so one burst cannot produce a multi-megabyte frame. */
export const MAX_FRAME_BYTES = 256 * 1024;

export type Frame = string | Uint8Array;

/** Events queued for fan-out, at most one frame's worth; encoded once per wire encoding, when first needed. */
export interface Chunk {
  readonly events: ProjectEvent[];
  readonly lastId: string;
  readonly bytes: number;
  readonly queuedAt: number;
  frames: Partial<Record<CodecName, Frame[]>>;
}

/** What of a room record the outbox keeps (fanout.ts's FanoutRoom extends it). */
export interface Outbox {
  /** Where each shard is: the sequence number of the next chunk it publishes. */
  readonly shards: readonly { readonly next: number }[];
  /** Newest event moved into the outbox (every shard will publish everything up to it). */
  queuedId: string;
  pending: ProjectEvent[];
  pendingSince: number;
  /** Chunks not yet published to every shard; outbox[0] has sequence number outboxBase. */
  outbox: Chunk[];
  outboxBase: number;
  outboxBytes: number;
  /** Bytes of every chunk published to all shards so far (a running total: how fast the room drains). */
  releasedBytes: number;
}

/** Moves pending events into the outbox as chunks of at most MAX_FRAME_BYTES (of JSON). */
export function queueChunks(room: Outbox): void {
  const queuedAt = room.pendingSince;
  let events: ProjectEvent[] = [];
  let bytes = 0;
  const push = () => {
    room.outbox.push({ events, lastId: events[events.length - 1]!.id, bytes, queuedAt, frames: {} });
    room.outboxBytes += bytes;
  };
  for (const e of room.pending) {
    const size = retainedSize(e);
    if (events.length && bytes + size > MAX_FRAME_BYTES) {
      push();
      events = [];
      bytes = 0;
    }
    events.push(e);
    bytes += size;
  }
  if (events.length) push();
  room.queuedId = room.pending[room.pending.length - 1]!.id;
  room.pending = [];
}

/** Drops the chunks every shard has published. */
export function releaseChunks(room: Outbox, metrics: Pick<Metrics, 'eventsDelivered' | 'deliveryLag'>): void {
  let min = Infinity;
  for (const shard of room.shards) if (shard.next < min) min = shard.next;
  const done = min - room.outboxBase;
  if (done <= 0) return;
  const now = performance.now();
  for (let i = 0; i < done; i++) {
    const chunk = room.outbox[i]!;
    room.outboxBytes -= chunk.bytes;
    room.releasedBytes += chunk.bytes;
    metrics.eventsDelivered.inc(chunk.events.length);
    metrics.deliveryLag.observe((now - chunk.queuedAt) / 1000);
  }
  room.outbox.splice(0, done);
  room.outboxBase = min;
}

/**
 * Frames for a run of one room's events in one encoding, each under MAX_FRAME_BYTES unless a
 * single event is larger. An event the encoder cannot carry is left out (and reported): every entry
 * point checks data against the limits, so this only catches what slipped past them.
 */
export function encodeFrames(name: CodecName, events: readonly ProjectEvent[], skipped: (e: ProjectEvent, codec: CodecName) => void): Frame[] {
  const codec = CODECS[name];
  const out: Frame[] = [];
  let batch: Frame[] = [];
  let bytes = 0;
  for (const e of events) {
    const part = codec.encodeEvent(e);
    if (part === null) {
      skipped(e, name);
      continue;
    }
    if (batch.length && bytes + part.length > MAX_FRAME_BYTES) {
      out.push(codec.joinEvents(batch));
      batch = [];
      bytes = 0;
    }
    batch.push(part);
    bytes += part.length;
  }
  if (batch.length) out.push(codec.joinEvents(batch));
  return out;
}
