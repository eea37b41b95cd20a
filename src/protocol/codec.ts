import { Packr } from 'msgpackr';
import { GatewayError } from '../errors.js';
import { SUBPROTOCOLS, type Envelope } from './messages.js';
import { eventEnvelope, eventJson, type ProjectEvent } from './events.js';

// Subprotocol names live in messages.ts, which the browser client imports too: one copy.
export { SUBPROTOCOLS } from './messages.js';
export type CodecName = keyof typeof SUBPROTOCOLS;
export const CODEC_NAMES = Object.keys(SUBPROTOCOLS) as CodecName[];

/** Picks the first subprotocol the client offers that we speak; JSON when it offers none. */
export function negotiateSubprotocol(header: string): Negotiated | null {
  // One subprotocol offered, spelled as ours: every upgrade from our client library (no split, no allocation).
  if (header === SUBPROTOCOLS.json) return JSON_OFFERED;
  if (header === SUBPROTOCOLS.msgpack) return MSGPACK_OFFERED;
  if (!header.trim()) return JSON_DEFAULT;
  for (const offered of header.split(',')) {
    const name = offered.trim();
    if (name === SUBPROTOCOLS.json) return JSON_OFFERED;
    if (name === SUBPROTOCOLS.msgpack) return MSGPACK_OFFERED;
  }
  return null;
}

export interface Negotiated {
  readonly codec: CodecName;
  /** What the 101 answer names ('' when the client offered none). */
  readonly protocol: string;
}
const JSON_DEFAULT: Negotiated = { codec: 'json', protocol: '' };
const JSON_OFFERED: Negotiated = { codec: 'json', protocol: SUBPROTOCOLS.json };
const MSGPACK_OFFERED: Negotiated = { codec: 'msgpack', protocol: SUBPROTOCOLS.msgpack };

// Plain maps only: records and structured clones are msgpackr extensions other languages cannot read.
const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false, encodeUndefinedAsNil: true });

export interface Codec {
  readonly name: CodecName;
  readonly binary: boolean;
  decode(message: ArrayBuffer, isBinary: boolean): unknown;
  encode(envelope: Envelope): string | Uint8Array;
  /**
   * One event's envelope, encoded once and cached on the event; null if this encoder cannot carry
   * it (the caller skips it: one bad event must never stop a room's fan-out).
   */
  encodeEvent(event: ProjectEvent): string | Uint8Array | null;
  /** One frame from encoded events of one room: a bare envelope for one, an array for several. */
  joinEvents(parts: readonly (string | Uint8Array)[]): string | Uint8Array;
}

const decoder = new TextDecoder('utf-8', { fatal: true });

const jsonCodec: Codec = {
  name: 'json',
  binary: false,
  decode(message) {
    let text: string;
    try {
      text = decoder.decode(message);
      return JSON.parse(text);
    } catch {
      throw new GatewayError('BAD_JSON');
    }
  },
  encode: (envelope) => JSON.stringify(envelope),
  encodeEvent(e) {
    if (e.json === undefined) {
      try {
        e.json = eventJson(e);
      } catch {
        e.json = null;
      }
    }
    return e.json;
  },
  joinEvents(parts) {
    if (parts.length === 1) return parts[0]!;
    let out = '[';
    for (let i = 0; i < parts.length; i++) out += (i ? ',' : '') + (parts[i] as string);
    return out + ']';
  },
};

const msgpackCodec: Codec = {
  name: 'msgpack',
  binary: true,
  decode(message) {
    try {
      return packr.unpack(new Uint8Array(message));
    } catch {
      throw new GatewayError('BAD_MSGPACK');
    }
  },
  encode: (envelope) => packr.pack(envelope),
  encodeEvent(e) {
    if (e.msgpack === undefined) {
      try {
        e.msgpack = packr.pack(eventEnvelope(e));
      } catch {
        e.msgpack = null;
      }
    }
    return e.msgpack;
  },
  joinEvents(list) {
    const parts = list as readonly Uint8Array[];
    if (parts.length === 1) return parts[0]!;
    const n = parts.length;
    const headerLen = n < 16 ? 1 : n < 0x10000 ? 3 : 5;
    let total = headerLen;
    for (const p of parts) total += p.length;
    const out = new Uint8Array(total);
    // MessagePack array header (fixarray / array16 / array32), then the already-packed elements.
    if (n < 16) out[0] = 0x90 | n;
    else if (n < 0x10000) (out[0] = 0xdc), (out[1] = n >> 8), (out[2] = n & 0xff);
    else (out[0] = 0xdd), new DataView(out.buffer).setUint32(1, n);
    let offset = headerLen;
    for (const p of parts) out.set(p, offset), (offset += p.length);
    return out;
  },
};

export const CODECS: Record<CodecName, Codec> = { json: jsonCodec, msgpack: msgpackCodec };
