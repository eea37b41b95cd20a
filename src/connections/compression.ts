import type { CompressionMode, Config } from '../config.js';
import type { UwsModule } from '../uws.js';

/**
 * permessage-deflate (RFC 7692): what WS_COMPRESSION asks uWS for, and which frames are worth it.
 *
 * uWS negotiates per connection, at upgrade, from the client's Sec-WebSocket-Extensions offer (the
 * upgrade handler hands it over): a client that offers nothing, or a gateway with 'off', gets plain
 * frames. A frame is compressed only when it is sent with `compress` set AND its socket negotiated;
 * for the others uWS clears the flag, so one publish serves both kinds of subscriber.
 *
 * Cost, read from the uWebSockets source (the same at tags v20.30 to v20.71; uWS.js 20.30 bundles one
 * of them): App::publish keeps the message once, and the topic tree's drain calls WebSocket::send for
 * each subscriber, which deflates there. So a compressed publish is deflated once PER SUBSCRIBER
 * that negotiated, with the shared compressor too (it resets per message: the same output each time,
 * recomputed). Deflating once per publish arrived with App::publishPrepared in uWebSockets v20.72
 * (Jan 2025), a build this glibc cannot run. What is left to us: compress only the frames where it
 * pays (WS_COMPRESSION_MIN_BYTES), and the per-tick batching, which makes one frame (one deflate per
 * socket) carry every event of a room's turn.
 */

/**
 * What a dedicated mode really gets in this uWS, said once at startup. Its negotiation
 * (HttpResponse.h, the same from v20.30 to the newest tag) ends with
 * `if (compression & DEDICATED_COMPRESSOR_3KB) compressOptions = DEDICATED_COMPRESSOR_3KB`, meant to
 * turn 4 KB into 3 KB, but true for every dedicated size (each shares a bit with 0x91): every socket gets
 * the 3 KB compressor (512-byte window, memLevel 1), whatever size was asked for. Measured
 * (bench/compression.mjs): fewer bytes saved than `shared` and more CPU per event.
 */
export function dedicatedCollapse(mode: CompressionMode): string | null {
  if (!mode.startsWith('dedicated-') || mode === 'dedicated-3kb') return null;
  return `WS_COMPRESSION=${mode} runs as dedicated-3kb in this uWS (its negotiation maps every dedicated size to the 3 KB compressor); shared compresses better here`;
}

/** uWS's export for each dedicated size (named by its memory per socket; see dedicatedCollapse for what it becomes). */
const DEDICATED = {
  'dedicated-3kb': 'DEDICATED_COMPRESSOR_3KB',
  'dedicated-4kb': 'DEDICATED_COMPRESSOR_4KB',
  'dedicated-8kb': 'DEDICATED_COMPRESSOR_8KB',
  'dedicated-16kb': 'DEDICATED_COMPRESSOR_16KB',
  'dedicated-32kb': 'DEDICATED_COMPRESSOR_32KB',
  'dedicated-64kb': 'DEDICATED_COMPRESSOR_64KB',
  'dedicated-128kb': 'DEDICATED_COMPRESSOR_128KB',
  'dedicated-256kb': 'DEDICATED_COMPRESSOR_256KB',
} as const satisfies Record<Exclude<CompressionMode, 'off' | 'shared'>, keyof UwsModule>;

/**
 * The `compression` option of the uWS behavior. Client-to-server frames are inflated with the shared
 * decompressor (uWS answers client_no_context_takeover): clients send a few small frames, not worth a
 * per-socket window; uWS bounds what one inflates to by maxPayloadLength.
 */
export function uwsCompression(mode: CompressionMode, uws: UwsModule): number {
  if (mode === 'off') return uws.DISABLED;
  const compressor = mode === 'shared' ? uws.SHARED_COMPRESSOR : uws[DEDICATED[mode]];
  return compressor | uws.SHARED_DECOMPRESSOR;
}

/**
 * The `compress` argument for a frame of send/publish. A string is measured by its length, a lower
 * bound of its UTF-8 bytes (measuring the bytes would cost a pass over every frame).
 */
export function compressionFilter(config: Config['compression']): (frame: string | Uint8Array) => boolean {
  if (config.mode === 'off') return () => false;
  const { minBytes } = config;
  return (frame) => frame.length >= minBytes;
}
