// One connect attempt, up to a created (not yet open) WebSocket: a token (the fresh one given, or
// getToken()'s), traded for a one-time ticket unless the client connects with `?token=`, then the
// socket. Each step hands its outcome to the caller's callbacks in the same turn it happens, so a
// token at hand and `?token=` create the socket synchronously.
import { GatewayClientError, type WebSocketLike } from './api.js';
import type { ClientSettings } from './settings.js';
import { requestTicket } from './tickets.js';
import type { WireFormat } from './wire.js';

export interface DialOutcomes {
  /** Checked after every wait: the attempt was overtaken (close(), or a newer attempt) and ends silently. */
  stale(): boolean;
  /** The attempt failed with `error`; the next one should wait `atLeastMs` at least (a server's Retry-After). */
  failed(error: GatewayClientError, atLeastMs?: number): void;
  /** The socket exists, authenticated with `token`. */
  created(sock: WebSocketLike, token: string): void;
}

export async function dial(settings: ClientSettings, wire: WireFormat, freshToken: string | undefined, outcomes: DialOutcomes): Promise<void> {
  let token: string;
  try {
    token = freshToken ?? (await settings.getToken());
  } catch (err) {
    if (outcomes.stale()) return;
    outcomes.failed(new GatewayClientError('TOKEN_ERROR', `getToken failed: ${String(err)}`));
    return;
  }
  if (outcomes.stale()) return;
  const url = new URL(settings.baseUrl);
  if (settings.connectWith === 'ticket') {
    const got = await requestTicket(token, settings.tickets);
    if (outcomes.stale()) return;
    if ('error' in got) {
      // Like a failed connect: report, back off (at least Retry-After), and the next attempt calls getToken() again.
      outcomes.failed(got.error, got.retryAfterMs);
      return;
    }
    url.searchParams.set('ticket', got.ticket);
  } else {
    url.searchParams.set('token', token); // browsers cannot set an Authorization header on WebSockets
  }
  let sock: WebSocketLike;
  try {
    sock = new settings.WebSocketImpl(url.toString(), wire.subprotocol);
  } catch (err) {
    outcomes.failed(new GatewayClientError('CONNECT_ERROR', String(err)));
    return;
  }
  outcomes.created(sock, token);
}
