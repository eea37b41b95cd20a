import type { Envelope, EventType } from './messages.js';

/**
 * The server's event model: a project event as the bus, the rooms and the agents relay hold it, and
 * its envelope's JSON. Not shipped to browsers (clients see only the envelope, messages.ts).
 */

/**
 * A project event as it travels through the gateway. Retained events (room windows, the in-process
 * bus) are old-generation heap the GC must trace on every major collection, so an event that came
 * through a checked entry point keeps only its encodings: `json` is the envelope serialized once
 * and shared by every recipient and every batch; `data` is then absent and eventData() rebuilds it
 * on the rare path that needs an object (MessagePack encoding, the agents-server). `msgpack` is
 * built lazily, once. `null` records that an encoder failed, so a broken event is skipped without
 * being retried on every flush.
 */
export interface ProjectEvent {
  readonly id: string;
  readonly projectGuid: string;
  readonly type: EventType;
  readonly timestamp: string;
  /** The data object, only for events built without their JSON (see above). */
  readonly data?: unknown;
  /** NODE_ID of the gateway that appended it (a stream entry's `origin` field); absent for producers' own XADDs. */
  readonly origin?: string;
  json?: string | null;
  msgpack?: Uint8Array | null;
}

/** The event's data: the object it was built with, or parsed back out of its JSON envelope. */
export function eventData(e: ProjectEvent): unknown {
  if (e.data !== undefined || typeof e.json !== 'string') return e.data;
  const start = ENVELOPE_PREFIX + e.type.length + e.projectGuid.length;
  const end = e.json.length - (ENVELOPE_SUFFIX + e.timestamp.length + e.id.length);
  return JSON.parse(e.json.slice(start, end));
}

// The envelope is built by envelopeJson() below: data sits between a prefix and a suffix whose
// fixed parts are measured here, once, from the template itself.
const EMPTY_ENVELOPE = envelopeJson({ type: '' as EventType, projectGuid: '', timestamp: '', id: '' }, '');
const ENVELOPE_PREFIX = EMPTY_ENVELOPE.indexOf('"data":') + '"data":'.length;
const ENVELOPE_SUFFIX = EMPTY_ENVELOPE.length - ENVELOPE_PREFIX;

export function eventEnvelope(e: ProjectEvent): Envelope<EventType> {
  return { type: e.type, projectGuid: e.projectGuid, data: eventData(e), timestamp: e.timestamp, id: e.id };
}

/**
 * What an event costs to keep, for byte-bounded retention: its JSON envelope when built (it is for
 * every event that came through a checked entry point), else an estimate.
 */
export function retainedSize(e: ProjectEvent): number {
  return (e.json?.length ?? 256) + 64;
}

/**
 * The envelope as JSON. Only `data` goes through JSON.stringify: the other fields are an enum
 * value, a validated GUID, an ISO date and a canonical id, none of which needs escaping, so no
 * intermediate envelope object is allocated on the hot path. Throws if `data` cannot be encoded.
 */
export function eventJson(e: ProjectEvent): string {
  return envelopeJson(e, JSON.stringify(eventData(e)) ?? 'null');
}

/** `dataJson` must be valid JSON (a producer's raw `data` field once it has parsed). */
export function envelopeJson(e: Omit<ProjectEvent, 'data' | 'json' | 'msgpack'>, dataJson: string): string {
  return envelopeJsonOf(e.type, e.projectGuid, e.timestamp, e.id, dataJson);
}

/**
 * The same, from the fields. Built with Array.join, not a template literal: a template literal leaves
 * a tree of ~10 cons strings (32 B each on the heap) that a retained event keeps until something
 * flattens it; join writes one flat string (bench/issue11.mjs, 100,000 retained events of 150 B data:
 * 758 → 462 B of heap per event).
 */
export function envelopeJsonOf(type: EventType, projectGuid: string, timestamp: string, id: string, dataJson: string): string {
  return ['{"type":"', type, '","projectGuid":"', projectGuid, '","data":', dataJson, ',"timestamp":"', timestamp, '","id":"', id, '"}'].join('');
}
