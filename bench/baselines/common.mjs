// @ts-check
/** Shared pieces of the baseline servers: producer body parsing and envelopes (same shape as the gateway's). */

export const EVENT_TYPES = new Set(['project_stage_update', 'project_message', 'project_status_change', 'agent_message']);
export const GUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
export const PUBLISH_RE = /^\/v1\/projects\/([0-9a-fA-F-]{36})\/events$/;

let lastMs = 0;
let seq = 0;
/** Stream-like event id `<ms>-<seq>`. */
export function nextId() {
  const ms = Date.now();
  if (ms === lastMs) seq++; else { lastMs = ms; seq = 0; }
  return `${ms}-${seq}`;
}

/**
 * Parse a producer body: `{type,data}` or `{events:[{type,data},...]}` (<= 1000).
 * @param {string} text
 * @returns {{type: string, data: any}[] & {batch?: boolean} | null}
 */
export function parseEvents(text) {
  let body;
  try { body = JSON.parse(text); } catch { return null; }
  if (!body || typeof body !== 'object') return null;
  const batch = Array.isArray(body.events);
  /** @type {any} */
  const list = batch ? body.events : [body];
  list.batch = batch;
  if (list.length === 0 || list.length > 1000) return null;
  for (const e of list) {
    if (!e || typeof e !== 'object' || !EVENT_TYPES.has(e.type) || !e.data || typeof e.data !== 'object') return null;
  }
  return list;
}

/**
 * @param {string} guid @param {{type: string, data: any}} e
 */
export function envelope(guid, e) {
  return { type: e.type, projectGuid: guid, data: e.data, timestamp: new Date().toISOString(), id: nextId() };
}

/** @param {number} ms */
export function lifetime(ms) {
  // every baseline exits by itself eventually (bounded); the runner stops it long before
  setTimeout(() => process.exit(0), ms).unref();
}
