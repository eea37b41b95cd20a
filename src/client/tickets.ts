// Tickets: before each (re)connect the client trades its token for a one-time ticket, so that the
// long-lived token never appears in a URL (docs/client.md, Tickets).
import { GatewayClientError, type FetchLike } from './api.js';

/** `/v1/tickets` on the gateway's host: http for ws, https for wss. */
export function defaultTicketsUrl(wsUrl: string): string {
  const url = new URL('/v1/tickets', wsUrl);
  url.protocol = url.protocol === 'wss:' || url.protocol === 'https:' ? 'https:' : 'http:';
  return url.toString();
}

/** Where and how tickets are requested. */
export interface TicketEndpoint {
  readonly url: string;
  readonly fetch: FetchLike;
  /** A request that takes longer is aborted (and reported like a failed connect). */
  readonly timeoutMs: number;
}

export type TicketResult = { ticket: string } | { error: GatewayClientError; retryAfterMs: number };

/**
 * Trades the token for a one-time ticket (POST, token in the Authorization header: a header is
 * not written to access logs the way a URL is). A failure carries the error to report and the
 * server's Retry-After, if any.
 */
export async function requestTicket(token: string, endpoint: TicketEndpoint): Promise<TicketResult> {
  const abort = new AbortController();
  // A request that hangs (black-holed network) is given up like a connect that hangs.
  const timer = setTimeout(() => abort.abort(), endpoint.timeoutMs);
  try {
    const res = await endpoint.fetch(endpoint.url, { method: 'POST', headers: { authorization: `Bearer ${token}` }, signal: abort.signal });
    const body = (await res.json().catch(() => null)) as { ticket?: unknown; error?: { code?: unknown; message?: unknown } } | null;
    if (res.status === 201 && typeof body?.ticket === 'string') return { ticket: body.ticket };
    const code = typeof body?.error?.code === 'string' ? body.error.code : 'CONNECT_ERROR';
    const detail = typeof body?.error?.message === 'string' ? `: ${body.error.message}` : '';
    const retryAfterS = Number(res.headers.get('retry-after')); // seconds; an HTTP-date is NaN and ignored
    return {
      error: new GatewayClientError(code, `ticket request answered HTTP ${res.status}${detail}`),
      retryAfterMs: Number.isFinite(retryAfterS) && retryAfterS > 0 ? retryAfterS * 1000 : 0,
    };
  } catch (err) {
    return { error: new GatewayClientError('CONNECT_ERROR', `ticket request failed: ${String(err)}`), retryAfterMs: 0 };
  } finally {
    clearTimeout(timer);
  }
}
