import { createVerifier } from 'fast-jwt';
import type { Config } from '../config.js';
import { GatewayError } from '../errors.js';
import { hasExpired, principalFromClaims, type Principal } from './principal.js';

export type TokenVerifier = (token: string) => Principal;

// Small on purpose: it only has to absorb the same token reconnecting, and every cached entry
// (token string plus principal) is memory kept per distinct user.
const PRINCIPAL_CACHE_SIZE = 1024;

/**
 * Builds a synchronous verifier, so the uWS upgrade handler can decide before it returns and never
 * needs onAborted. fast-jwt rejects `alg: none` whenever a key is configured, and `algorithms` pins
 * the accepted algorithms so an RS256 public key can never be used as an HS256 secret.
 */
export function createTokenVerifier(jwt: Config['jwt']): TokenVerifier {
  const verify = createVerifier({
    key: jwt.key,
    algorithms: [...jwt.algorithms],
    ...(jwt.issuer ? { allowedIss: jwt.issuer } : {}),
    ...(jwt.audience ? { allowedAud: jwt.audience } : {}),
    clockTolerance: jwt.clockToleranceMs,
    // fast-jwt checks iss and aud only when the token has them: a configured issuer or audience
    // must also be present, or a token without the claim would pass.
    requiredClaims: ['sub', ...(jwt.issuer ? ['iss'] : []), ...(jwt.audience ? ['aud'] : [])],
  });
  // Reconnect storms present the same tokens again and again, and every tab of one user holds the
  // same token: verified principals are cached by token and shared by their sockets (one object,
  // not one per socket). A cached principal is still refused once its `exp` passes.
  const cache = new Map<string, Principal>();
  return (token) => {
    const cached = cache.get(token);
    if (cached && !hasExpired(cached, Date.now() - jwt.clockToleranceMs)) return cached;
    if (!hasCanonicalSignature(token)) throw new GatewayError('UNAUTHORIZED', 'invalid token: the signature is not in canonical base64url');
    let claims: Record<string, unknown>;
    try {
      claims = verify(token) as Record<string, unknown>;
    } catch (err) {
      throw new GatewayError('UNAUTHORIZED', `invalid token: ${(err as { code?: string }).code ?? 'FAST_JWT_INVALID'}`);
    }
    const principal = principalFromClaims(claims);
    if (cache.size >= PRINCIPAL_CACHE_SIZE) cache.delete(cache.keys().next().value!);
    cache.set(token, principal);
    return principal;
  };
}

/**
 * Base64url of a signature whose byte length is not a multiple of 3 leaves spare bits in its last
 * character, and decoders ignore them: one HS256 signature has four spellings that all verify
 * (fast-jwt accepts them). A token is refused unless its signature is spelled the one canonical way,
 * so no one holds several strings for one token (every per-token key, the cache above included,
 * would count them apart).
 */
export function hasCanonicalSignature(token: string): boolean {
  // The same answer as `Buffer.from(s, 'base64url').toString('base64url') === s` (test/tokens.unit),
  // without decoding and encoding the signature (two buffers and a string on every upgrade).
  const start = token.lastIndexOf('.') + 1;
  const length = token.length - start;
  if (length % 4 === 1) return false;
  let last = 0;
  for (let i = start; i < token.length; i++) {
    last = BASE64URL_VALUE[token.charCodeAt(i)] ?? -1;
    if (last < 0) return false;
  }
  // The last character of 2 (or 3) characters per final group carries 4 (or 2) spare bits: all zero.
  return length % 4 === 2 ? (last & 0xf) === 0 : length % 4 === 3 ? (last & 0x3) === 0 : true;
}

/** Base64url digit values by character code (-1: not a base64url character; padding included). */
const BASE64URL_VALUE: Int8Array = (() => {
  const values = new Int8Array(128).fill(-1);
  const digits = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  for (let i = 0; i < digits.length; i++) values[digits.charCodeAt(i)] = i;
  return values;
})();

/** The token from `Authorization: Bearer`, or null. */
export function bearerToken(authorization: string): string | null {
  const m = /^Bearer\s+(\S+)\s*$/i.exec(authorization);
  return m ? m[1]! : null;
}

export type Credential = { kind: 'token'; token: string } | { kind: 'ticket'; ticket: string } | { kind: 'none' } | { kind: 'ambiguous' };

/**
 * What a WebSocket upgrade authenticates with: `?token=`, `Authorization: Bearer` or `?ticket=`,
 * exactly one of them. Two at once is refused rather than silently preferring one: a proxy or a
 * client library that adds its own is then noticed, not half-trusted.
 */
export function upgradeCredential(queryToken: string, authorization: string, queryTicket: string): Credential {
  const header = authorization ? bearerToken(authorization) : null;
  const given = (queryToken ? 1 : 0) + (header ? 1 : 0) + (queryTicket ? 1 : 0);
  if (given === 0) return { kind: 'none' };
  if (given > 1) return { kind: 'ambiguous' };
  if (queryTicket) return { kind: 'ticket', ticket: queryTicket };
  const token = header ?? queryToken;
  return token ? { kind: 'token', token } : { kind: 'none' };
}
