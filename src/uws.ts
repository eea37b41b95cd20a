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
