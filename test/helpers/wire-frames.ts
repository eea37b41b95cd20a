// Server WebSocket frames as they cross the wire (server frames are unmasked): their RSV1 bit
// (set when permessage-deflate compressed the message), opcode and payload length. Used by the
// compression tests, which read the raw TCP bytes under a client.

/** A server frame as it crossed the wire. */
export interface WireFrame {
  readonly rsv1: boolean;
  readonly opcode: number;
  /** Payload bytes on the wire (compressed when rsv1). */
  readonly wireBytes: number;
}

/**
 * Appends every complete frame at the start of `pending` to `frames` and returns the bytes left
 * (a frame not complete yet), to be prefixed to the next chunk.
 */
export function takeFrames(pending: Buffer, frames: WireFrame[]): Buffer {
  for (;;) {
    if (pending.length < 2) return pending;
    let len = pending[1]! & 0x7f;
    let header = 2;
    if (len === 126) {
      if (pending.length < 4) return pending;
      len = pending.readUInt16BE(2);
      header = 4;
    } else if (len === 127) {
      if (pending.length < 10) return pending;
      len = Number(pending.readBigUInt64BE(2));
      header = 10;
    }
    if (pending.length < header + len) return pending;
    frames.push({ rsv1: (pending[0]! & 0x40) !== 0, opcode: pending[0]! & 0x0f, wireBytes: len });
    pending = pending.subarray(header + len);
  }
}
