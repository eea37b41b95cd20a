import type { Logger } from 'pino';
import { parseRawData, type DataLimits } from '../protocol/limits.js';
import { isEventType } from '../protocol/messages.js';
import { envelopeJsonOf, type ProjectEvent } from '../protocol/events.js';
import type { RedisClient } from '../redis/client.js';
import { FIELD_DATA, FIELD_ORIGIN, FIELD_TYPE } from '../redis/keys.js';

/** One stream entry as ioredis returns it: the id and the flat field/value list. */
export type StreamEntry = [id: string, fields: string[]];
/** XREAD's reply: per stream key, its entries; null when nothing was new. */
export type XReadReply = [key: string, entries: StreamEntry[]][] | null;

/**
 * A stream's XINFO STREAM answer by field name (Redis answers a flat name, value, name, value list;
 * fields vary with the Redis version), or null when there is no such stream. Other errors are thrown.
 */
export async function readStreamInfo(cmd: RedisClient, key: string): Promise<ReadonlyMap<string, unknown> | null> {
  let reply: unknown[];
  try {
    reply = (await cmd.xinfo('STREAM', key)) as unknown[];
  } catch (err) {
    if (/no such key/i.test((err as Error).message)) return null;
    throw err;
  }
  const info = new Map<string, unknown>();
  for (let i = 0; i + 1 < reply.length; i += 2) info.set(String(reply[i]), reply[i + 1]);
  return info;
}

export interface EntryParserOptions {
  /** Entries whose data is over these are logged and skipped, like malformed ones. */
  dataLimits: DataLimits;
  log: Logger;
  /** Called for every entry skipped (malformed or over the limits). */
  onSkippedEntry?: (() => void) | undefined;
}

/** The entry as an event, or why it is skipped. Anyone can XADD: nothing in an entry is trusted. */
export function toEvent(guid: string, [id, fields]: StreamEntry, dataLimits: DataLimits): ProjectEvent | string {
  let type: string | undefined;
  let raw: string | undefined;
  let origin: string | undefined;
  for (let i = 0; i + 1 < fields.length; i += 2) {
    if (fields[i] === FIELD_TYPE) type = fields[i + 1];
    else if (fields[i] === FIELD_DATA) raw = fields[i + 1];
    else if (fields[i] === FIELD_ORIGIN) origin = fields[i + 1];
  }
  if (!isEventType(type)) return 'type is missing or not an event type';
  if (raw === undefined) return 'data is missing';
  const parsed = parseRawData(raw, dataLimits);
  if ('problem' in parsed) return parsed.problem;
  const timestamp = new Date(Number(id.slice(0, id.indexOf('-')))).toISOString();
  // `raw` parsed as a JSON object within the limits, so it is spliced in as-is: no re-stringify,
  // and the event keeps only that one string (the parsed object was only for the check).
  // `json` in the literal: one allocation, no property array added later (see envelopeJsonOf).
  const json = envelopeJsonOf(type, guid, timestamp, id, raw);
  // One object shape for every event read (origin may be undefined): the fan-out code stays monomorphic.
  return { id, projectGuid: guid, type, timestamp, origin: origin !== undefined && origin.length <= 64 ? origin : undefined, json };
}

/** The entries that are valid events, in order; every other one is logged (with why) and skipped. */
export function toEvents(guid: string, entries: StreamEntry[], options: EntryParserOptions): ProjectEvent[] {
  const events: ProjectEvent[] = [];
  for (const entry of entries) {
    const event = toEvent(guid, entry, options.dataLimits);
    if (typeof event !== 'string') events.push(event);
    else {
      options.onSkippedEntry?.();
      options.log.warn({ projectGuid: guid, id: entry[0], problem: event }, 'skipping malformed stream entry (needs fields type=<event type> and data=<JSON object within the data limits>)');
    }
  }
  return events;
}
