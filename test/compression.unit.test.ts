// The WS_COMPRESSION mapping (src/connections/compression.ts) against the loaded uWS module's own constants.
import { describe, expect, it } from 'vitest';
import { COMPRESSION_MODES, parseConfig } from '../src/config.js';
import { compressionFilter, dedicatedCollapse, uwsCompression } from '../src/connections/compression.js';
import { loadUws } from '../src/uws.js';

const uws = loadUws();

describe('uwsCompression', () => {
  it('maps off to DISABLED, and every other mode to its compressor with the shared decompressor', () => {
    expect(uwsCompression('off', uws)).toBe(uws.DISABLED);
    expect(uwsCompression('shared', uws)).toBe(uws.SHARED_COMPRESSOR | uws.SHARED_DECOMPRESSOR);
    expect(uwsCompression('dedicated-3kb', uws)).toBe(uws.DEDICATED_COMPRESSOR_3KB | uws.SHARED_DECOMPRESSOR);
    expect(uwsCompression('dedicated-256kb', uws)).toBe(uws.DEDICATED_COMPRESSOR_256KB | uws.SHARED_DECOMPRESSOR);
    // Every mode is a distinct, defined option.
    const values = COMPRESSION_MODES.map((m) => uwsCompression(m, uws));
    expect(values.every((v) => Number.isInteger(v))).toBe(true);
    expect(new Set(values).size).toBe(COMPRESSION_MODES.length);
  });

  it('warns for the dedicated sizes this uWS turns into 3 KB, and for nothing else', () => {
    expect(dedicatedCollapse('off')).toBeNull();
    expect(dedicatedCollapse('shared')).toBeNull();
    expect(dedicatedCollapse('dedicated-3kb')).toBeNull();
    expect(dedicatedCollapse('dedicated-32kb')).toMatch(/dedicated-3kb/);
  });
});

describe('compressionFilter and the config', () => {
  it('compresses frames from WS_COMPRESSION_MIN_BYTES up, never with off', () => {
    const filter = compressionFilter({ mode: 'shared', minBytes: 100 });
    expect(filter('x'.repeat(99))).toBe(false);
    expect(filter('x'.repeat(100))).toBe(true);
    expect(filter(new Uint8Array(100))).toBe(true);
    expect(compressionFilter({ mode: 'off', minBytes: 1 })('x'.repeat(10_000))).toBe(false);
  });

  it('defaults to shared from 1024 bytes, and refuses an unknown mode', () => {
    const base = { JWT_SECRET: 'test-secret-0123456789' };
    expect(parseConfig(base).compression).toEqual({ mode: 'shared', minBytes: 1024 });
    expect(parseConfig({ ...base, WS_COMPRESSION: 'dedicated-8kb', WS_COMPRESSION_MIN_BYTES: '1' }).compression).toEqual({ mode: 'dedicated-8kb', minBytes: 1 });
    expect(() => parseConfig({ ...base, WS_COMPRESSION: 'dedicated-5kb' })).toThrow(/WS_COMPRESSION/);
    expect(() => parseConfig({ ...base, WS_COMPRESSION_MIN_BYTES: '0' })).toThrow(/WS_COMPRESSION_MIN_BYTES/);
  });
});
