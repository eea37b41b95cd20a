// Frames on the wire, as the client writes and reads them: their ids, the subprotocol offered, and
// encoding (JSON, or MessagePack with the app's codec).
import { SUBPROTOCOLS } from '../protocol/messages.js';
import type { MessagePackCodec, WebSocketLike } from './api.js';

/** A frame the client sends. */
export type Outgoing = { type: string; projectGuid?: string; id: string; data?: Record<string, unknown> };

/** The connection as the parts that send on it see it (the transport keeps it). */
export interface Link {
  /** The socket in use, null between sockets: compared by identity to tell whether it is still the same one. */
  readonly socket: WebSocketLike | null;
  /** close() was called: nothing is (re)sent, re-joined or reconnected any more. */
  readonly closed: boolean;
  /** A socket is open (and its open event has been handled). */
  isOpen(): boolean;
  /** Sends on the open socket; check isOpen() first. */
  send(frame: Outgoing): void;
}

/** Returns a function that hands out the ids of the client's frames, a new one per call. */
export function createIdSource(): () => string {
  // A random prefix keeps ids unique across tabs/clients in server logs; the counter keeps them short.
  const idPrefix = Array.from(crypto.getRandomValues(new Uint8Array(6)), (b) => b.toString(36).padStart(2, '0')).join('');
  let counter = 0;
  return () => `${idPrefix}-${(++counter).toString(36)}`;
}

export interface WireFormat {
  /** The subprotocol to offer when connecting. */
  readonly subprotocol: string;
  encode(frame: Outgoing): string | Uint8Array;
  /** A text frame is JSON, a binary one MessagePack; throws on a frame that does not decode. */
  decode(raw: unknown): unknown;
}

/** `useMsgpack` picks what is sent; binary frames are read whenever the app gave a codec. */
export function wireFormat(useMsgpack: boolean, msgpack: MessagePackCodec | undefined): WireFormat {
  return {
    subprotocol: useMsgpack ? SUBPROTOCOLS.msgpack : SUBPROTOCOLS.json,
    encode: (frame) => (useMsgpack ? msgpack!.encode(frame) : JSON.stringify(frame)),
    decode(raw) {
      if (typeof raw === 'string') return JSON.parse(raw);
      if (!msgpack) throw new Error('binary frame on a JSON connection');
      if (raw instanceof ArrayBuffer) return msgpack.decode(new Uint8Array(raw));
      if (ArrayBuffer.isView(raw)) return msgpack.decode(new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength));
      throw new Error('unexpected frame type');
    },
  };
}
