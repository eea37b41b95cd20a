/**
 * The wire protocol, shipped to browsers as it is (the client library imports it): message type
 * names exactly as in the design document (section 4.2), the envelope, the frames a client may send,
 * subprotocol names, GUIDs. Wire types only: what the server does with events is in events.ts.
 */

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
