import { createRequire } from 'node:module';
import type * as UWS from 'uWebSockets.js';

export type UwsModule = typeof UWS;

/**
 * Loads uWebSockets.js and refuses the package's silent pure-JS fallback: it would serve, but an
 * order of magnitude slower and without the native topics this gateway is built on.
 */
export function loadUws(): UwsModule {
  const require = createRequire(import.meta.url);
  const uws = require('uWebSockets.js') as UwsModule;
  assertNativeUws(uws);
  return uws;
}

export function assertNativeUws(uws: UwsModule): void {
  const native = uws as unknown as Record<string, unknown>;
  if (typeof native.SSLApp !== 'function' || typeof native.getParts !== 'function') {
    throw new Error(
      `uWebSockets.js is running its pure-JS fallback, not the native binary (platform ${process.platform}-${process.arch}, ` +
        `Node ABI ${process.versions.modules}${process.env.UWS_USE_FALLBACK ? ', UWS_USE_FALLBACK is set' : ''}). ` +
        'The gateway refuses to start on it: use Node 20 on linux-x64 with glibc >= 2.36, or rebuild the native addon.',
    );
  }
}

/** The status line uWS wants as text, for every HTTP answer and every refused upgrade. */
const STATUS_TEXT: Record<number, string> = {
  200: 'OK', 202: 'Accepted', 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found',
  405: 'Method Not Allowed', 409: 'Conflict', 413: 'Payload Too Large', 415: 'Unsupported Media Type', 422: 'Unprocessable Content',
  426: 'Upgrade Required', 429: 'Too Many Requests', 500: 'Internal Server Error', 503: 'Service Unavailable',
};

export function statusLine(status: number): string {
  return `${status} ${STATUS_TEXT[status] ?? 'Unknown'}`;
}
