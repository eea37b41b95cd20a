// The k6 side of lib/auth.ts: k6's HMAC and base64 for minting, open() for TOKENS_FILE (k6 allows it
// only in the init context, which is where this module's top level runs), and the URL a VU connects to.
import { check } from 'k6';
import crypto from 'k6/crypto';
import { SharedArray } from 'k6/data';
import encoding from 'k6/encoding';
import http from 'k6/http';
import { Counter } from 'k6/metrics';
import { tokenSource } from './auth.ts';
import { envString, httpBaseUrl, wsUrlWithToken } from './protocol.ts';

export const tokens = tokenSource(__ENV, {
  hmacSha256: (secret, data) => crypto.hmac('sha256', secret, data, 'base64rawurl'),
  base64url: (text) => encoding.b64encode(text, 'rawurl'),
  readLines: (path) => new SharedArray(`TOKENS_FILE ${path}`, () => open(path).split(/\r?\n/)),
  nowS: () => Date.now() / 1000,
});
// k6 runs the init context once with __VU 0 (to read the options), then once per VU: warn once.
if (__VU === 0 && tokens.warning) console.warn(tokens.warning);

// 'ticket' (default): POST /v1/tickets with the token in a header, connect with ?ticket=, as the
// client library does; 'query-token': the token as ?token= (a gateway without tickets).
const CONNECT_WITH = envString('CONNECT_WITH', 'ticket');
if (CONNECT_WITH !== 'ticket' && CONNECT_WITH !== 'query-token') throw new Error(`CONNECT_WITH must be ticket or query-token (got ${CONNECT_WITH})`);

export const ticketErrors = new Counter('ticket_errors');
let loggedTicketFailures = 0; // per VU

/**
 * The URL this VU opens its next WebSocket with (its own user's token, a fresh ticket per connection),
 * or null when the ticket request failed (counted in ticket_errors and the `ticket issued` check).
 */
export function connectUrl(wsUrl: string): string | null {
  const token = tokens.forVu(__VU);
  if (CONNECT_WITH === 'query-token') return wsUrlWithToken(wsUrl, token);
  const res = http.post(`${httpBaseUrl(wsUrl)}/v1/tickets`, null, {
    headers: { Authorization: `Bearer ${token}` },
    tags: { name: 'POST /v1/tickets' },
  });
  let ticket: unknown;
  try {
    ticket = (res.json() as { ticket?: unknown } | null)?.ticket;
  } catch {
    ticket = undefined; // not JSON, e.g. a proxy's error page
  }
  if (check(res, { 'ticket issued': (r) => r.status === 201 && typeof ticket === 'string' })) {
    return `${wsUrl}${wsUrl.includes('?') ? '&' : '?'}ticket=${encodeURIComponent(ticket as string)}`;
  }
  ticketErrors.add(1);
  if (loggedTicketFailures++ < 3) console.warn(`VU ${__VU}: POST /v1/tickets answered HTTP ${res.status} ${String(res.body)}`);
  return null;
}

let producerToken: string | undefined; // per VU: one token, so one rate-limit bucket, for the whole run

/** The publish token of this (producer) VU. */
export function producerAuth(): string {
  producerToken ??= tokens.producerFor(__VU);
  return `Bearer ${producerToken}`;
}
