import { Counter } from 'k6/metrics';
// Shared helpers for the k6 scenarios: env parsing and the gateway wire protocol (docs/protocol.md).

export const EVENT_TYPES = [
  'project_stage_update',
  'project_message',
  'project_status_change',
  'agent_message',
] as const;
export type EventType = (typeof EVENT_TYPES)[number];

export interface Envelope {
  type: string;
  projectGuid: string | null;
  data: Record<string, unknown> | null;
  timestamp: string;
  id: string | null;
}

/** Required env var, or throw with a hint. */
export function requireEnv(name: string): string {
  const value = __ENV[name];
  if (value === undefined || value === '') {
    throw new Error(`missing env ${name}: pass it with  k6 run -e ${name}=...  (see k6/README.md)`);
  }
  return value;
}

export function envString(name: string, fallback: string): string {
  const value = __ENV[name];
  return value === undefined || value === '' ? fallback : value;
}

export function envNumber(name: string, fallback: number): number {
  const value = __ENV[name];
  if (value === undefined || value === '') return fallback;
  const n = Number(value);
  if (!Number.isFinite(n)) throw new Error(`env ${name} must be a number (got ${JSON.stringify(value)})`);
  return n;
}

/** `${WS_URL}?token=${TOKEN}` (appends with & if WS_URL already has a query). */
export function wsUrlWithToken(wsUrl: string, token: string): string {
  return `${wsUrl}${wsUrl.includes('?') ? '&' : '?'}token=${encodeURIComponent(token)}`;
}

/** HTTP base URL: HTTP_URL if set, else derived from WS_URL (ws→http, wss→https, path dropped). */
export function httpBaseUrl(wsUrl: string): string {
  const explicit = __ENV['HTTP_URL'];
  if (explicit) return explicit.replace(/\/+$/, '');
  const match = /^(wss?):\/\/([^/?#]+)/.exec(wsUrl);
  if (!match) throw new Error(`cannot derive HTTP_URL from WS_URL ${wsUrl}: set -e HTTP_URL=...`);
  return `${match[1] === 'wss' ? 'https' : 'http'}://${match[2]}`;
}

/**
 * Deterministic canonical project GUID number `n` (8-4-4-4-12 lower-case hex), so every VU and the
 * producer agree on room names without coordination. PROJECT_GUID_PREFIX (8 hex digits) lets several
 * runs use disjoint rooms.
 */
export function projectGuid(n: number): string {
  const prefix = envString('PROJECT_GUID_PREFIX', 'a0c0de00').toLowerCase();
  if (!/^[0-9a-f]{8}$/.test(prefix)) throw new Error('PROJECT_GUID_PREFIX must be 8 hex digits');
  const tail = Math.floor(n).toString(16).padStart(12, '0').slice(-12);
  return `${prefix}-0000-4000-8000-${tail}`;
}

/** A frame is one envelope or an array of envelopes (batched events); always returns a list. */
export function parseFrame(data: unknown): Envelope[] {
  if (typeof data !== 'string') return []; // JSON subprotocol: text frames only
  const parsed: unknown = JSON.parse(data);
  const list = Array.isArray(parsed) ? parsed : [parsed];
  return list.filter(isEnvelope);
}

function isEnvelope(value: unknown): value is Envelope {
  return typeof value === 'object' && value !== null && typeof (value as { type?: unknown }).type === 'string';
}

export function isEvent(env: Envelope): boolean {
  return (EVENT_TYPES as readonly string[]).includes(env.type);
}

/** Compare Redis stream ids `<ms>-<seq>`: negative if a < b. */
export function compareEventIds(a: string, b: string): number {
  const [am = '0', as = '0'] = a.split('-');
  const [bm = '0', bs = '0'] = b.split('-');
  const dm = Number(am) - Number(bm);
  return dm !== 0 ? dm : Number(as) - Number(bs);
}

export function frame(type: string, projectGuidValue: string | null, data: Record<string, unknown>, id?: string): string {
  const msg: Record<string, unknown> = { type, data };
  if (projectGuidValue !== null) msg['projectGuid'] = projectGuidValue;
  if (id !== undefined) msg['id'] = id;
  return JSON.stringify(msg);
}

// Connection-health counters every scenario reports under the same names (declared once, in the
// init context of whichever script imports this module).
export const wsErrors = new Counter('ws_errors');
export const protocolErrors = new Counter('protocol_errors');
export const unexpectedCloses = new Counter('unexpected_closes');
