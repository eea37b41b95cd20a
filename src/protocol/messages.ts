/** Message type names, exactly as in the design document (section 4.2). */

export const CLIENT_TYPES = ['join_project', 'leave_project', 'user_feedback', 'ping', 'auth_refresh'] as const;
export type ClientType = (typeof CLIENT_TYPES)[number];

/** Events that producers publish and rooms receive. */
export const EVENT_TYPES = ['project_stage_update', 'project_message', 'project_status_change', 'agent_message'] as const;
export type EventType = (typeof EVENT_TYPES)[number];

/** Server → agents-server (design 4.2.3). */
export const AGENT_UPSTREAM_TYPES = ['project_update', 'user_feedback', 'project_status_sync'] as const;
export type AgentUpstreamType = (typeof AGENT_UPSTREAM_TYPES)[number];

export type ReplyType = 'join_project' | 'leave_project' | 'user_feedback_response' | 'pong' | 'error' | 'auth_refresh';

export interface Envelope<T extends string = string, D = unknown> {
  type: T;
  projectGuid: string | null;
  data: D;
  timestamp: string;
  id: string | null;
}

export type JoinData = { since?: string };
export type FeedbackData = { content: string; replyTo?: string; meta?: Record<string, unknown> };

/** A client frame after validation: a discriminated union on `type`. */
export type ClientFrame =
  | { type: 'join_project'; projectGuid: string; data: JoinData; id: string | null }
  | { type: 'leave_project'; projectGuid: string; data: Record<string, never>; id: string | null }
  | { type: 'user_feedback'; projectGuid: string; data: FeedbackData; id: string | null }
  | { type: 'ping'; projectGuid: string | null; data: unknown; id: string | null }
  | { type: 'auth_refresh'; projectGuid: null; data: { token: string }; id: string | null };

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

export const GUID_PATTERN = '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$';
const GUID_RE = new RegExp(GUID_PATTERN);
export function isGuid(value: unknown): value is string {
  return typeof value === 'string' && GUID_RE.test(value);
}

export function isEventType(value: unknown): value is EventType {
  return typeof value === 'string' && (EVENT_TYPES as readonly string[]).includes(value);
}

/**
 * Subprotocol names offered in Sec-WebSocket-Protocol, here (not only in codec.ts, which needs
 * msgpackr and Node) so the browser client can import the same constants as the server.
 */
export const SUBPROTOCOLS = { json: 'autocode.v1.json', msgpack: 'autocode.v1.msgpack' } as const;
