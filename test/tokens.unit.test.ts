import { describe, expect, it } from 'vitest';
import { createSigner } from 'fast-jwt';
import { hasCanonicalSignature } from '../src/auth/tokens.js';

/** What the check stands for: decoding and re-encoding the signature gives it back unchanged. */
const roundTrips = (token: string) => {
  const signature = token.slice(token.lastIndexOf('.') + 1);
  return Buffer.from(signature, 'base64url').toString('base64url') === signature;
};

describe('hasCanonicalSignature', () => {
  it('accepts a signed token and refuses the other spellings of its signature', () => {
    const token = createSigner({ key: 'k'.repeat(32), algorithm: 'HS256' })({ sub: 'u1' });
    expect(hasCanonicalSignature(token)).toBe(true);
    // 32 bytes: 43 characters, the last carrying 2 spare bits, so 3 other characters decode the same.
    const last = token.at(-1)!;
    const digits = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const value = digits.indexOf(last);
    const others = [...digits].filter((c, i) => c !== last && i >> 2 === value >> 2).map((c) => token.slice(0, -1) + c);
    expect(others).toHaveLength(3);
    for (const other of others) {
      expect(roundTrips(other)).toBe(false);
      expect(hasCanonicalSignature(other)).toBe(false);
    }
  });

  it('agrees with a base64url decode and re-encode on every short string and on random ones', () => {
    // Every string of up to 4 characters over digits of each spare-bit class, padding and non-base64url characters.
    const alphabet = ['A', 'B', 'Q', 'g', 'w', '_', '-', '9', '=', '+', '/', ' ', '.', 'é'];
    let strings: string[] = [''];
    const all: string[] = [''];
    for (let n = 1; n <= 4; n++) {
      strings = strings.flatMap((s) => alphabet.map((c) => s + c));
      all.push(...strings);
    }
    let seed = 7;
    const random = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
    const pool = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    for (let k = 0; k < 20_000; k++) {
      const n = Math.floor(random() * 48);
      let s = '';
      for (let i = 0; i < n; i++) s += random() < 0.02 ? '=+/ .\u00e9\u4e00'[Math.floor(random() * 7)] : pool[Math.floor(random() * 64)];
      all.push(s);
    }
    let canonical = 0;
    for (const signature of all) {
      const token = `h.p.${signature}`;
      expect(hasCanonicalSignature(token), JSON.stringify(signature)).toBe(roundTrips(token));
      if (roundTrips(token)) canonical++;
    }
    // Both answers occur often enough for the comparison to mean something.
    expect(canonical).toBeGreaterThan(1000);
    expect(all.length - canonical).toBeGreaterThan(1000);
  });
});
