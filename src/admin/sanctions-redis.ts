import type { Logger } from 'pino';
import type { RedisClient } from '../redis/client.js';
import { sanctionKey, sanctionsIndexKey } from '../redis/keys.js';
import { parseSanctionField, type Sanction, type Sanctions } from '../edge/sanctions.js';

/**
 * Sanctions kept in Redis, so an instance that starts (or restarts) enforces what the others were
 * told before it existed: one key per sanction holding `<at> <expiresAt>` and expiring with it
 * (PXAT), and an index (a sorted set of the fields, scored by their expiry) to find them all
 * without SCAN. Both under the `{admin}` hash tag: one Cluster slot, one script.
 */
export interface SanctionStore {
  save(sanction: Sanction): Promise<void>;
  /** Reads every live sanction into `into`; resolves with how many. */
  loadInto(into: Sanctions): Promise<number>;
}

// KEYS: the sanction's key, the index. ARGV: field, value, expiresAt (ms), now (ms).
// The index forgets expired fields as it goes, so it stays as large as the live sanctions.
const SAVE_LUA = `
redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
local top = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
if top[2] then redis.call('PEXPIREAT', KEYS[2], top[2]) end
return 1
`;

/** Keys read per MGET while loading. */
const LOAD_BATCH = 500;

type WithSave = RedisClient & { autocodeSanctionSave(key: string, index: string, field: string, value: string, expiresAt: string, now: string): Promise<number> };

export function createSanctionStore(redis: RedisClient, prefix: string, log: Logger): SanctionStore {
  if (!('autocodeSanctionSave' in redis)) redis.defineCommand('autocodeSanctionSave', { numberOfKeys: 2, lua: SAVE_LUA });
  const cmd = redis as WithSave;
  const index = sanctionsIndexKey(prefix);
  return {
    async save(s) {
      await cmd.autocodeSanctionSave(sanctionKey(prefix, s.field), index, s.field, `${s.at} ${s.expiresAt}`, String(s.expiresAt), String(Date.now()));
    },
    async loadInto(into) {
      const now = Date.now();
      const fields = await redis.zrangebyscore(index, `(${now}`, '+inf');
      let loaded = 0;
      for (let i = 0; i < fields.length; i += LOAD_BATCH) {
        const batch = fields.slice(i, i + LOAD_BATCH);
        // One key at a time in a Cluster would be correct too; the shared hash tag lets MGET take them together.
        const texts = await redis.mget(...batch.map((f) => sanctionKey(prefix, f)));
        batch.forEach((field, j) => {
          const sanction = parseStored(field, texts[j] ?? null);
          if (!sanction) {
            if (texts[j] !== null) log.warn({ field: field.slice(0, 300) }, 'malformed sanction in Redis skipped');
            return;
          }
          if (sanction.expiresAt > now && into.apply(sanction)) loaded++;
        });
      }
      return loaded;
    },
  };
}

function parseStored(field: string, text: string | null): Sanction | null {
  if (text === null || !parseSanctionField(field)) return null;
  const m = /^(\d{1,15}) (\d{1,15})$/.exec(text);
  return m ? { field, at: Number(m[1]), expiresAt: Number(m[2]) } : null;
}
