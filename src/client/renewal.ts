// Token renewal: before the token of the open socket expires, a fresh one from getToken() is put
// into effect in band (auth_refresh) so the socket stays up; a gateway that cannot do that gets a
// planned reconnect with the fresh token instead.
import { GatewayClientError } from './api.js';
import type { Emit } from './listeners.js';
import { renewalDelayMs, tokenExpiryMs } from './policy.js';
import type { Requests } from './requests.js';
import type { Link } from './wire.js';

/** A failed getToken() during renewal is retried this often until the token expires. */
const RENEW_RETRY_MS = 5_000;

export interface Renewal {
  /** A socket opened with `token`: renew it before it expires. */
  start(token: string): void;
  /** The socket is gone: the next one starts its own renewal with the token it connects with. */
  stop(): void;
}

export interface RenewalDeps {
  getToken: () => string | Promise<string>;
  /** How long before `exp` to renew (0: never). */
  renewBeforeMs: number;
  link: Link;
  requests: Requests;
  nextId: () => string;
  emit: Emit;
  /** Gives up the current socket and connects again at once with `token`. */
  reconnectWith: (token: string) => void;
}

export function createRenewal(deps: RenewalDeps): Renewal {
  const { link, emit, renewBeforeMs } = deps;
  let socketToken = ''; // the token the current socket authenticates with (its last auth_refresh, or the one it connected with)
  let renewTimer: ReturnType<typeof setTimeout> | undefined;

  function scheduleRenewal(token: string): void {
    clearTimeout(renewTimer);
    renewTimer = undefined;
    if (renewBeforeMs <= 0) return;
    const delay = renewalDelayMs(tokenExpiryMs(token), Date.now(), renewBeforeMs);
    if (delay === null) return;
    renewTimer = setTimeout(() => { void renewSession(); }, delay);
  }

  /** Gets a fresh token before the current one expires and hands it to applyFreshToken(). */
  async function renewSession(): Promise<void> {
    const sock = link.socket;
    let token: string;
    try {
      token = await deps.getToken();
    } catch (err) {
      if (link.socket !== sock || link.closed) return;
      emit('error', new GatewayClientError('TOKEN_ERROR', `token renewal failed: ${String(err)}`));
      // Try again while the old token still works; if it runs out the server closes with 4401
      // and the ordinary reconnect takes over.
      renewTimer = setTimeout(() => { void renewSession(); }, RENEW_RETRY_MS);
      return;
    }
    if (link.socket !== sock || sock === null || link.closed) return; // that socket is gone: its successor fetched its own token
    // getToken() handed back the same token (or one that expires no later): reconnecting would not
    // help, and would repeat ever faster as exp nears. The server ends it with 4401 at expiry.
    const oldExp = tokenExpiryMs(socketToken);
    const newExp = tokenExpiryMs(token);
    if (token === socketToken || (oldExp !== null && newExp !== null && newExp <= oldExp)) return;
    applyFreshToken(token);
  }

  /**
   * Puts a fresh token into effect without dropping the connection: the in-band `auth_refresh`
   * frame. The server checks it as at connect; on success expiry follows the new token. If the
   * server refuses it, it closes with 4401 and the ordinary reconnect fetches a fresh token; a
   * gateway too old to know the frame (UNKNOWN_TYPE) or one that does not answer gets a planned
   * reconnect with the token instead (resuming with `since`, so no event is lost).
   */
  function applyFreshToken(token: string): void {
    if (!link.isOpen()) return; // the next connect fetches its own token
    const sock = link.socket;
    const id = deps.nextId();
    const fallback = () => {
      if (link.socket !== sock || link.closed) return;
      deps.reconnectWith(token);
    };
    deps.requests.track(id, {
      inFlight: true,
      reply: () => {
        if (link.socket !== sock) return;
        socketToken = token;
        scheduleRenewal(token);
      },
      fail: (err) => { if (err.code === 'UNKNOWN_TYPE') fallback(); },
      lost: () => {},
    }, fallback);
    link.send({ type: 'auth_refresh', id, data: { token } });
  }

  return {
    start(token) {
      socketToken = token;
      scheduleRenewal(token);
    },
    stop() {
      clearTimeout(renewTimer);
      renewTimer = undefined;
    },
  };
}
