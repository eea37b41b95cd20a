import { GatewayError } from '../errors.js';
import { isGuid } from '../protocol/messages.js';

// What the gateway knows of who is on the other end, from a verified token (auth/tokens.ts) or a
// stored ticket (auth/tickets.ts). Apart from the verifier so that what only handles principals (the
// worker pool's ticket store, the main thread) does not load the JWT library.

/** What a verified token lets its holder do. */
export interface Principal {
  readonly userId: string;
  /** Lower-cased project GUIDs, or 'all' for the `"*"` claim. */
  readonly projects: ReadonlySet<string> | 'all';
  readonly scopes: ReadonlySet<string>;
  /**
   * Epoch SECONDS (the token's `exp`, floored) after which it is no longer valid, or null if it never
   * expires. Seconds fit a small integer stored inside the object; epoch milliseconds would be a
   * 16-byte heap number for every distinct principal (bench/results/conn-heap-gateway.md).
   */
  readonly expiresAtS: number | null;
  /** Epoch SECONDS of the token's `iat`, or null without one: a revocation refuses tokens issued before it (edge/sanctions.ts). */
  readonly issuedAtS?: number | null;
}

export const PUBLISH_SCOPE = 'events:publish';
/** The server API (src/http/admin.ts): disconnect, revoke, block, presence, history, info. */
export const ADMIN_SCOPE = 'gateway:admin';
const NO_SCOPES: ReadonlySet<string> = new Set();

/** A verified token's claims as the principal the gateway keeps (`sub` required, 1-256 characters). */
export function principalFromClaims(claims: Record<string, unknown>): Principal {
  const sub = claims.sub;
  if (typeof sub !== 'string' || sub.length === 0 || sub.length > 256) throw new GatewayError('UNAUTHORIZED', 'invalid token: sub must be a non-empty string');
  return {
    userId: sub,
    projects: parseProjects(claims.projects),
    scopes: scopesOf(claims.scope),
    expiresAtS: typeof claims.exp === 'number' ? Math.floor(claims.exp) : null,
    issuedAtS: typeof claims.iat === 'number' && Number.isFinite(claims.iat) ? Math.floor(claims.iat) : null,
  };
}

function parseProjects(claim: unknown): ReadonlySet<string> | 'all' {
  if (claim === '*') return 'all';
  if (!Array.isArray(claim)) return new Set();
  if (claim.includes('*')) return 'all';
  return new Set(claim.filter(isGuid).map((g) => g.toLowerCase()));
}

function scopesOf(claim: unknown): ReadonlySet<string> {
  const scopes = typeof claim === 'string' ? claim.split(' ').filter(Boolean) : Array.isArray(claim) ? claim.filter((s): s is string => typeof s === 'string') : [];
  // Browser tokens carry no scope: they share one empty set instead of one each.
  return scopes.length ? new Set(scopes) : NO_SCOPES;
}

/** Whether the principal's token had expired at epoch ms `at` (pass the clock tolerance in). */
export function hasExpired(principal: Principal, at: number): boolean {
  return principal.expiresAtS !== null && at > principal.expiresAtS * 1000;
}

/** Epoch ms of the principal's expiry, as the protocol states it (auth_refresh), or null. */
export function expiryMs(principal: Principal): number | null {
  return principal.expiresAtS === null ? null : principal.expiresAtS * 1000;
}

export function canAccessProject(principal: Principal, projectGuid: string): boolean {
  return principal.projects === 'all' || principal.projects.has(projectGuid);
}

/** A principal in a form that can be stored (tickets) and restored; `e` is epoch ms. */
export function serializePrincipal(p: Principal): string {
  return JSON.stringify({ u: p.userId, p: p.projects === 'all' ? '*' : [...p.projects], s: [...p.scopes], e: expiryMs(p), i: p.issuedAtS ?? null });
}

export function deserializePrincipal(text: string): Principal {
  const o = JSON.parse(text) as { u: string; p: '*' | string[]; s: string[]; e: number | null; i?: number | null };
  return { userId: o.u, projects: parseProjects(o.p), scopes: scopesOf(o.s), expiresAtS: o.e === null ? null : Math.floor(o.e / 1000), issuedAtS: typeof o.i === 'number' ? o.i : null };
}
