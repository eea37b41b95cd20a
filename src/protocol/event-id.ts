/**
 * Event ids are Redis Stream entry ids, `<ms>-<seq>`, increasing per project. The in-process bus
 * mints ids of the same shape, so clients and resume logic never care which bus is running.
 */
const ID_RE = /^(\d{1,16})-(\d{1,16})$/;

export function isEventId(value: unknown): value is string {
  return typeof value === 'string' && ID_RE.test(value);
}

/** Numeric comparison of two valid ids: negative, zero or positive. */
export function compareIds(a: string, b: string): number {
  const da = a.indexOf('-');
  const db = b.indexOf('-');
  const ma = Number(a.slice(0, da));
  const mb = Number(b.slice(0, db));
  if (ma !== mb) return ma < mb ? -1 : 1;
  const sa = Number(a.slice(da + 1));
  const sb = Number(b.slice(db + 1));
  return sa === sb ? 0 : sa < sb ? -1 : 1;
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
