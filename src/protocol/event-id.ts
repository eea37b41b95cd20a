/**
 * Event ids are Redis Stream entry ids, `<ms>-<seq>`, increasing per project. The in-process bus
 * mints ids of the same shape, so clients and resume logic never care which bus is running.
 */
// Canonical form only (no leading zeros, at most 15 digits per part so both parts stay exact as
// numbers): that is what Redis issues, and it lets ids be compared digit by digit without parsing.
const ID_RE = /^(?:0|[1-9]\d{0,14})-(?:0|[1-9]\d{0,14})$/;
export const EVENT_ID_PATTERN = ID_RE.source;

export function isEventId(value: unknown): value is string {
  return typeof value === 'string' && ID_RE.test(value);
}

/**
 * Numeric comparison of two canonical ids: negative, zero or positive. Runs on every event of the
 * hot path, so it compares characters in place instead of slicing and parsing.
 */
export function compareIds(a: string, b: string): number {
  if (a === b) return 0;
  const da = a.indexOf('-');
  const db = b.indexOf('-');
  if (da !== db) return da < db ? -1 : 1;
  for (let i = 0; i < da; i++) {
    const d = a.charCodeAt(i) - b.charCodeAt(i);
    if (d !== 0) return d;
  }
  const la = a.length - da;
  const lb = b.length - db;
  if (la !== lb) return la < lb ? -1 : 1;
  for (let i = 1; i < la; i++) {
    const d = a.charCodeAt(da + i) - b.charCodeAt(db + i);
    if (d !== 0) return d;
  }
  return 0;
}

export const ZERO_ID = '0-0';

/** The next id after `last` that never goes backwards, even if the wall clock does. */
export function nextEventId(last: string): string {
  const now = Date.now();
  const d = last.indexOf('-');
  const lastMs = Number(last.slice(0, d));
  if (now > lastMs) return `${now}-0`;
  return `${lastMs}-${Number(last.slice(d + 1)) + 1}`;
}
