import { pino, type Logger } from 'pino';

export function createLogger(level: string, nodeId: string): Logger {
  return pino({ level, base: { node: nodeId }, timestamp: pino.stdTimeFunctions.isoTime });
}

/**
 * A warning logged at most once per `intervalMs` (what is dropped in between is not counted): for
 * errors that repeat as long as their cause lasts (Redis down, a peer gone), so an outage writes a
 * line a second, not one per attempt. One per source, so one noisy source does not hide another.
 */
export function throttledWarn(log: Logger, intervalMs = 1000): (message: string, err?: unknown, fields?: Record<string, unknown>) => void {
  let last = -Infinity;
  return (message, err, fields) => {
    const now = Date.now();
    if (now - last < intervalMs) return;
    last = now;
    log.warn({ ...fields, ...(err === undefined ? {} : { err: (err as Error)?.message ?? String(err) }) }, message);
  };
}

/**
 * A URL as it may be logged: no userinfo (user:password@) and no query (tokens travel there), e.g.
 * `wss://agents.internal:9000/gateway`. What cannot be parsed is not logged at all.
 */
export function redactUrl(text: string): string {
  try {
    const url = new URL(text);
    return `${url.protocol}//${url.host}${url.pathname}`;
  } catch {
    return '(unparsable URL)';
  }
}
