import { Packr } from 'msgpackr';
import { GatewayError } from '../errors.js';
import { eventEnvelope, eventJson, type Envelope, type ProjectEvent } from './messages.js';

/** Subprotocol names offered in Sec-WebSocket-Protocol. JSON is the default. */
export const SUBPROTOCOLS = { json: 'autocode.v1.json', msgpack: 'autocode.v1.msgpack' } as const;
export type CodecName = keyof typeof SUBPROTOCOLS;
export const CODEC_NAMES = Object.keys(SUBPROTOCOLS) as CodecName[];

/** Picks the first subprotocol the client offers that we speak; JSON when it offers none. */
export function negotiateSubprotocol(header: string): { codec: CodecName; protocol: string } | null {
  if (!header.trim()) return { codec: 'json', protocol: '' };
  for (const offered of header.split(',')) {
    const name = offered.trim();
    if (name === SUBPROTOCOLS.json) return { codec: 'json', protocol: name };
    if (name === SUBPROTOCOLS.msgpack) return { codec: 'msgpack', protocol: name };
  }
  return null;
}

// Plain maps only: records and structured clones are msgpackr extensions other languages cannot read.
const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false, encodeUndefinedAsNil: true });

export interface Codec {
  readonly name: CodecName;
  readonly binary: boolean;
  decode(message: ArrayBuffer, isBinary: boolean): unknown;
  encode(envelope: Envelope): string | Uint8Array;
  /** Encoded size of one event envelope (cached), used to split large batches. */
  eventSize(event: ProjectEvent): number;
  /** One frame for a run of events of one room, built from per-event cached encodings. */
  encodeEvents(events: readonly ProjectEvent[]): string | Uint8Array;
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
  eventSize: (e) => eventJson(e).length,
  encodeEvents(events) {
    if (events.length === 1) return eventJson(events[0]!);
    let out = '[';
    for (let i = 0; i < events.length; i++) out += (i ? ',' : '') + eventJson(events[i]!);
    return out + ']';
  },
};

type PackedEvent = ProjectEvent & { msgpack?: Uint8Array };
function packedEvent(e: PackedEvent): Uint8Array {
  return (e.msgpack ??= packr.pack(eventEnvelope(e)));
}

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
  eventSize: (e) => packedEvent(e).length,
  encodeEvents(events) {
    if (events.length === 1) return packedEvent(events[0]!);
    const parts = events.map(packedEvent);
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
