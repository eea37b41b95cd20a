import { createHash } from 'node:crypto';
import { GatewayError } from '../errors.js';

/**
 * Idempotent publishing, shared by both buses and the producer helper: a publish carrying a key
 * appends once; a repeat of the same key by the same producer within the window returns the first
 * call's ids and appends nothing. A repeat with a different body is refused (IDEMPOTENCY_KEY_REUSED):
 * that is a producer bug, not a retry.
 *
 * Keys are scoped to (project, producer, key): another producer sending the same key is simply
 * another request (it appends, and learns nothing of the first producer's use of the key), so no
 * producer can replay, read or block another's keys. Each producer holds a bounded number of
 * unexpired keys (IDEMPOTENCY_KEYS_PER_PRODUCER): per project on Redis (the bound is counted in the
 * project's Cluster slot, by the script that appends), over all projects on the in-process bus (one
 * process's memory). At the bound, a new keyed publish is refused (IDEMPOTENCY_KEYS_EXHAUSTED, with
 * the time until the producer's oldest key expires); no record is ever dropped before it expires.
 * A replay of a key still held is answered as ever, full or not.
 */

/** What a producer may choose as a key (also the HTTP `Idempotency-Key` header). */
export const IDEMPOTENCY_KEY_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * What an in-process caller or an exported producer may call itself. No `:`, so no such name is
 * ever an HTTP principal's producer identity (httpProducer), whatever the token's `sub`.
 */
export const PRODUCER_NAME_PATTERN = /^[A-Za-z0-9._-]{1,128}$/;

/** The producer of gateway.publish / publishMany when the caller names none. */
export const DEFAULT_IN_PROCESS_PRODUCER = 'gateway';
/** The producer of createProducer(...) when its options name none. */
export const DEFAULT_EXPORTED_PRODUCER = 'producer';

/** The producer identity of an HTTP API caller: its token's `sub` (the principal the rate limits key on too). */
export function httpProducer(sub: string): string {
  return `http:${sub}`;
}

/** Throws unless `name` is a producer name an in-process caller or an exported producer may use. */
export function checkProducerName(name: string): string {
  if (!PRODUCER_NAME_PATTERN.test(name)) throw new GatewayError('INVALID_FRAME', `producer must match ${PRODUCER_NAME_PATTERN.source}`);
  return name;
}

/** The refusal of a keyed publish by a producer at its bound; `retryAfterMs`: until its oldest key expires. */
export function keysExhausted(limit: number, retryAfterMs: number): GatewayError {
  return new GatewayError(
    'IDEMPOTENCY_KEYS_EXHAUSTED',
    `this producer holds ${limit} unexpired Idempotency-Keys (IDEMPOTENCY_KEYS_PER_PRODUCER); nothing appended, retry after Retry-After or publish without a key`,
    Math.max(1, Math.ceil(retryAfterMs / 1000)),
  );
}

/** Identifies a request body: the event types and their data JSON, in order. */
export function fingerprintEvents(events: readonly (readonly [type: string, dataJson: string])[]): string {
  const hash = createHash('sha1');
  for (const [type, json] of events) hash.update(type).update('\n').update(json).update('\n');
  return hash.digest('hex');
}
