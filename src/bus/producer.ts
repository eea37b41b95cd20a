import type { Cluster, Redis } from 'ioredis';
import { GatewayError } from '../errors.js';
import { DEFAULT_DATA_LIMITS, DEFAULT_KEYS_PER_PRODUCER, type DataLimits } from '../protocol/limits.js';
import type { EventType } from '../protocol/messages.js';
import type { AppendResult, IdempotentPublish, NewEvent } from './bus.js';
import { checkProducerName, DEFAULT_EXPORTED_PRODUCER, fingerprintEvents, keysExhausted } from './idempotency.js';
import { checkEvents } from './ingress.js';
import { eventsKey, FIELD_DATA, FIELD_ORIGIN, FIELD_TYPE, idempotencyKeys } from '../redis/keys.js';

export interface ProducerOptions {
  /** Key prefix, REDIS_PREFIX on the gateways (default 'autocode'). */
  prefix?: string;
  /** Approximate number of events kept per project (MAXLEN ~). */
  maxLen?: number;
  /** Seconds after the last append before an idle project's stream expires; 0 keeps it. */
  ttlS?: number;
  /** Events older than this many seconds are trimmed on each append (XTRIM MINID ~); 0 keeps them. */
  maxAgeS?: number;
  /** Recorded in the entry's `origin` field. */
  origin?: string;
  /** Data the gateways would skip is refused here instead (set these to the gateways' MAX_EVENT_DATA_BYTES / MAX_DATA_DEPTH). */
  limits?: DataLimits;
  /** How long an idempotency key is remembered (IDEMPOTENCY_WINDOW_S on the gateways). */
  idempotencyWindowS?: number;
  /**
   * Who this producer is: its idempotency keys are its own (another producer's same key is another
   * request). 1–128 of A-Z a-z 0-9 . _ -; default 'producer', shared by every producer that names
   * none: give each service its own.
   */
  producer?: string;
  /**
   * Unexpired idempotency keys one producer may hold per project (IDEMPOTENCY_KEYS_PER_PRODUCER on
   * the gateways, default 100000); past it a publish with a new key is refused with a GatewayError
   * IDEMPOTENCY_KEYS_EXHAUSTED (retryAfterS: until the producer's oldest key there expires).
   */
  idempotencyKeysPerProducer?: number;
}

export interface ProducerEvent {
  type: EventType;
  data: object;
}

// Check the record, check the producer's bound, append, trim, expire and record, as one atomic step:
// a retry that reaches Redis while (or after) the first attempt runs sees the record and appends
// nothing. KEYS: the stream, the producer's record of this key, the producer's index of its keys on
// this project (a sorted set: key -> when it expires, ms of the server's clock). ARGV: maxLen,
// windowS, fingerprint, ttlS, minId ('' = none), origin ('' = none), the key, the bound, then
// type/data pairs. Replies {0, ids} appended, {1, ids} replayed, {2, ms until the producer's oldest
// key here expires} refused at the bound (nothing appended).
//
// Index entries of expired keys go at most 100 a call (a whole window's keys expiring at once must
// not be one long command); those left are known by score and not counted.
const APPEND_ONCE_LUA = `
local rec = redis.call('GET', KEYS[2])
if rec then
  local sep = string.find(rec, '|', 1, true)
  if string.sub(rec, 1, sep - 1) ~= ARGV[3] then return redis.error_reply('IDEMPOTENCY_MISMATCH') end
  return {1, string.sub(rec, sep + 1)}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stale = redis.call('ZCOUNT', KEYS[3], '-inf', now)
if stale > 0 then
  local n = math.min(stale, 100)
  redis.call('ZREMRANGEBYRANK', KEYS[3], 0, n - 1)
  stale = stale - n
end
if redis.call('ZCARD', KEYS[3]) - stale >= tonumber(ARGV[8]) then
  local oldest = redis.call('ZRANGE', KEYS[3], stale, stale, 'WITHSCORES')
  return {2, tonumber(oldest[2]) - now}
end
local ids = {}
for i = 9, #ARGV, 2 do
  if ARGV[6] ~= '' then
    ids[#ids + 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', '${FIELD_TYPE}', ARGV[i], '${FIELD_DATA}', ARGV[i + 1], '${FIELD_ORIGIN}', ARGV[6])
  else
    ids[#ids + 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', '${FIELD_TYPE}', ARGV[i], '${FIELD_DATA}', ARGV[i + 1])
  end
end
if ARGV[5] ~= '' then redis.call('XTRIM', KEYS[1], 'MINID', '~', ARGV[5]) end
if ARGV[4] ~= '0' then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
local joined = table.concat(ids, ',')
redis.call('SET', KEYS[2], ARGV[3] .. '|' .. joined, 'EX', ARGV[2])
local windowMs = tonumber(ARGV[2]) * 1000
redis.call('ZADD', KEYS[3], now + windowMs, ARGV[7])
redis.call('PEXPIRE', KEYS[3], windowMs)
return {0, joined}
`;

type AppendOnce = (stream: string, record: string, index: string, ...args: (string | number)[]) => Promise<[number, string | number]>;

/**
 * The producer side of the contract, for TypeScript backends: appends project events to the stream
 * every gateway instance reads. Events of one call are appended in order in one round trip.
 *
 *   const producer = createProducer(new Redis(url), { producer: 'billing' });
 *   const [id] = await producer.publish(guid, [{ type: 'project_message', data: { text: 'hi' } }], { idempotencyKey: requestId });
 *
 * With an idempotency key, a call retried after a timeout or an error never appends twice within
 * the idempotency window: the retry returns the ids of the first append. Keys are this producer's
 * own (options.producer): see bus/idempotency.ts.
 */
export function createProducer(redis: Redis | Cluster, options: ProducerOptions = {}) {
  const prefix = options.prefix ?? 'autocode';
  const maxLen = options.maxLen ?? 10000;
  const ttlS = options.ttlS ?? 86400;
  const maxAgeS = options.maxAgeS ?? 0;
  const limits = options.limits ?? DEFAULT_DATA_LIMITS;
  const windowS = options.idempotencyWindowS ?? 3600;
  const producerName = checkProducerName(options.producer ?? DEFAULT_EXPORTED_PRODUCER);
  const keysPerProducer = options.idempotencyKeysPerProducer ?? DEFAULT_KEYS_PER_PRODUCER;
  // Refreshing the TTL on every append doubles the commands per publish; once per tenth of the TTL
  // per key keeps an active stream alive just the same.
  const ttlRefreshedAt = new Map<string, number>();
  const refreshEveryMs = (ttlS * 1000) / 10;
  if (!('autocodeAppendOnce' in redis)) redis.defineCommand('autocodeAppendOnce', { numberOfKeys: 3, lua: APPEND_ONCE_LUA });
  const appendOnce = (redis as unknown as { autocodeAppendOnce: AppendOnce }).autocodeAppendOnce.bind(redis);


  async function appendKeyed(key: string, guid: string, encoded: [EventType, string][], keyed: IdempotentPublish): Promise<AppendResult> {
    const minId = maxAgeS > 0 ? `${Date.now() - maxAgeS * 1000}-0` : '';
    const args: (string | number)[] = [maxLen, windowS, fingerprintEvents(encoded), ttlS, minId, options.origin ?? '', keyed.idempotencyKey, keysPerProducer];
    for (const [type, json] of encoded) args.push(type, json);
    const { record, index } = idempotencyKeys(prefix, guid, keyed.producer, keyed.idempotencyKey);
    let reply: [number, string | number];
    try {
      reply = await appendOnce(key, record, index, ...args);
    } catch (err) {
      if ((err as Error).message?.includes('IDEMPOTENCY_MISMATCH')) throw new GatewayError('IDEMPOTENCY_KEY_REUSED');
      throw err;
    }
    const [outcome, value] = [Number(reply[0]), String(reply[1])];
    if (outcome === 2) throw keysExhausted(keysPerProducer, Number(value));
    return { ids: value === '' ? [] : value.split(','), replayed: outcome === 1 };
  }

  /**
   * Appends events that went through checkEvents (bus/ingress.ts): the gateway's own appends, whose
   * data is encoded already, keyed for the producer they name. Anyone else calls publish(), which
   * checks first and keys for this producer (options.producer).
   */
  async function append(guid: string, events: readonly NewEvent[], keyed?: IdempotentPublish): Promise<AppendResult> {
    const key = eventsKey(prefix, guid);
    const encoded = events.map((e): [EventType, string] => [e.type, e.dataJson ?? JSON.stringify(e.data)]);
    if (keyed !== undefined) return appendKeyed(key, guid, encoded, keyed);
    const pipeline = redis.pipeline();
    for (const [type, json] of encoded) {
      const fields = [FIELD_TYPE, type, FIELD_DATA, json];
      if (options.origin) fields.push(FIELD_ORIGIN, options.origin);
      pipeline.xadd(key, 'MAXLEN', '~', maxLen, '*', ...fields);
    }
    // XADD takes one trim strategy; age-based trimming is a second, equally approximate, command.
    if (maxAgeS > 0) pipeline.xtrim(key, 'MINID', '~', `${Date.now() - maxAgeS * 1000}-0`);
    if (ttlS > 0) {
      const now = Date.now();
      if (now - (ttlRefreshedAt.get(key) ?? 0) >= refreshEveryMs) {
        if (ttlRefreshedAt.size > 100000) ttlRefreshedAt.clear();
        ttlRefreshedAt.set(key, now);
        pipeline.expire(key, ttlS);
      }
    }
    const results = (await pipeline.exec()) ?? [];
    const ids: string[] = [];
    for (let i = 0; i < encoded.length; i++) {
      const [err, id] = results[i] ?? [new Error('no reply')];
      if (err) throw err;
      ids.push(id as string);
    }
    return { ids, replayed: false };
  }

  return {
    append,
    /**
     * Appends in order and resolves with the ids (the first call's ids for an idempotency key this
     * producer repeated). The events pass the gateways' own check first (a GatewayError names what
     * is wrong), so nothing is appended that the gateways would skip.
     */
    async publish(projectGuid: string, events: readonly ProducerEvent[], opts: { idempotencyKey?: string } = {}): Promise<string[]> {
      const checked = checkEvents(projectGuid, events, limits, opts.idempotencyKey);
      const keyed = opts.idempotencyKey === undefined ? undefined : { idempotencyKey: opts.idempotencyKey, producer: producerName };
      return (await append(checked.guid, checked.events, keyed)).ids;
    },
  };
}

export type Producer = ReturnType<typeof createProducer>;
