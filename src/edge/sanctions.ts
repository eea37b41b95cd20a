import type { Principal } from '../auth/principal.js';
import { createSharedTableMemory, openSharedTable, type SharedTableMemory } from './shared-table.js';

/**
 * What the server API holds against users (blocks, project revocations), once per process whatever
 * WORKERS is: a shared-memory table (edge/shared-table.ts) every worker thread opens, so a block
 * set through one thread refuses upgrades on all, and every decision stays synchronous (the uWS
 * upgrade handler decides before it returns). With Redis the sanctions are also kept there
 * (sanctions-redis.ts) and every instance loads them at start; this table is then each process's copy.
 */

/** A sanction's name, as Redis keys and messages carry it: `b <userId>` or `r <projectGuid> <userId>` (a GUID has no space). */
export type SanctionField = string;

export interface Sanction {
  readonly field: SanctionField;
  /** Block: when it ends. Revocation: when it was made (tokens issued before are refused). Epoch ms. */
  readonly at: number;
  /** Epoch ms after which it is forgotten (a block: its end; a revocation: REVOCATION_TTL_S after it). */
  readonly expiresAt: number;
}

export const blockField = (userId: string): SanctionField => `b ${userId}`;
export const revocationField = (userId: string, projectGuid: string): SanctionField => `r ${projectGuid} ${userId}`;

export interface Sanctions {
  /** Records a sanction; false when the table is full of live ones (the caller answers 503). */
  apply(sanction: Sanction): boolean;
  /** Epoch ms the user's block ends, or 0 when not blocked at `now`. */
  blockedUntil(userId: string, now?: number): number;
  /** Whether the principal's access to the project was revoked after its token was issued. */
  isRevoked(principal: Principal, projectGuid: string, now?: number): boolean;
}

/** Live sanctions kept at most per process (a record is 24 bytes; expired ones make room). */
const MAX_SANCTIONS = 1 << 20;
const BLOCK = 1;
const REVOCATION = 2;
const AT = 0;
const EXPIRES_AT = 1;

export function createSanctionsMemory(): SharedTableMemory {
  return createSharedTableMemory({ valueSlots: 2, maxCapacity: MAX_SANCTIONS, initialCapacity: 64 });
}

/** Parses a field back into its kind and key; null for anything else (a hostile Redis entry). */
export function parseSanctionField(field: string): { space: number; key: string } | null {
  if (field.startsWith('b ') && field.length > 2 && field.length <= 258) return { space: BLOCK, key: field.slice(2) };
  const m = /^r ([0-9a-f-]{36}) (.{1,256})$/s.exec(field);
  return m ? { space: REVOCATION, key: `${m[1]} ${m[2]}` } : null;
}

export function openSanctions(memory: SharedTableMemory): Sanctions {
  const table = openSharedTable(memory);
  const { values } = table;

  /** The record's slot `k` for the key, or 0 when absent or expired at `now`. */
  function read(space: number, key: string, k: number, now: number): number {
    // Most processes hold no sanction at all: every upgrade and join then skips the hash and the lock.
    if (table.isEmpty()) return 0;
    table.hash(space, key);
    table.lock();
    const r = table.find();
    const expiresAt = r < 0 ? 0 : values[table.valueIndex(r, EXPIRES_AT)]!;
    const value = r < 0 || expiresAt <= now ? 0 : values[table.valueIndex(r, k)]!;
    table.unlock();
    return value;
  }

  return {
    apply(sanction) {
      const parsed = parseSanctionField(sanction.field);
      if (!parsed) return false;
      const now = Date.now();
      table.hash(parsed.space, parsed.key);
      table.lock();
      const r = table.findOrInsert((record) => values[table.valueIndex(record, EXPIRES_AT)]! <= now);
      if (r >= 0) {
        const at = table.valueIndex(r, AT);
        const expiresAt = table.valueIndex(r, EXPIRES_AT);
        // A block is replaced (a later call may shorten or lift it); a revocation only moves forward
        // (the same revocation arriving from Redis and from the channel, in either order, ends the same).
        if (parsed.space === BLOCK || table.created) {
          values[at] = sanction.at;
          values[expiresAt] = sanction.expiresAt;
        } else {
          values[at] = Math.max(values[at]!, sanction.at);
          values[expiresAt] = Math.max(values[expiresAt]!, sanction.expiresAt);
        }
      }
      table.unlock();
      return r >= 0;
    },
    blockedUntil(userId, now = Date.now()) {
      const until = read(BLOCK, userId, AT, now);
      return until > now ? until : 0;
    },
    isRevoked(principal, projectGuid, now = Date.now()) {
      if (table.isEmpty()) return false;
      const revokedAt = read(REVOCATION, `${projectGuid} ${principal.userId}`, AT, now);
      if (revokedAt === 0) return false;
      // A token without `iat` cannot show it came later: refused while the revocation lasts.
      // Seconds against milliseconds: a token issued in the second of the revocation is refused too.
      return principal.issuedAtS === null || principal.issuedAtS === undefined || principal.issuedAtS * 1000 <= revokedAt;
    },
  };
}
