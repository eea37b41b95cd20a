import { createHash } from 'node:crypto';

/**
 * Idempotent publishing, shared by both buses and the producer helper: a publish carrying a key
 * appends once; a repeat of the same key within the window returns the first call's ids and appends
 * nothing. A repeat with a different body is refused (IDEMPOTENCY_KEY_REUSED): that is a producer
 * bug, not a retry.
 */

/** What a producer may choose as a key (also the HTTP `Idempotency-Key` header). */
export const IDEMPOTENCY_KEY_PATTERN = /^[A-Za-z0-9._:-]{1,128}$/;

/** Identifies a request body: the event types and their data JSON, in order. */
export function fingerprintEvents(events: readonly (readonly [type: string, dataJson: string])[]): string {
  const hash = createHash('sha1');
  for (const [type, json] of events) hash.update(type).update('\n').update(json).update('\n');
  return hash.digest('hex');
}
