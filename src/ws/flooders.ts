import type { WebSocket } from 'uWebSockets.js';
import type { Connection, SocketData } from '../connections/connection.js';
import type { EdgeState } from '../edge/admission.js';
import { CloseCodes } from '../errors.js';

/**
 * Longest a flooder's close waits for its penalty to reach the other instances. Redis answers a
 * PUBLISH after it has written the message to every subscriber, so closing after the answer means
 * the other instances have the penalty on the wire before the client even sees its 4429; without
 * the wait a client reconnecting through a load balancer within a millisecond or two reached an
 * instance that had not heard yet and was let in. Redis being away must not keep a flooder open.
 */
const PENALTY_SHARE_WAIT_MS = 250;

/**
 * Closes sockets that keep flooding past their rate limit with 4429, after penalizing their user
 * and address for RATE_LIMIT_PENALTY_S on every instance. Between the decision and the close the
 * socket's frames are ignored (`isClosing`), so a flood in that window is neither served nor
 * penalized again.
 */
export function createFlooderCloser(edgeState: EdgeState, penaltyS: number) {
  const closing = new Set<Connection>();

  function end(ws: WebSocket<SocketData>, conn: Connection): void {
    closing.delete(conn);
    if (!conn.closed) ws.end(CloseCodes.RATE_LIMITED, 'rate limit exceeded');
  }

  return {
    /** True while `conn`'s close waits for its penalty to be shared (cheap while nobody floods). */
    isClosing(conn: Connection): boolean {
      return closing.size !== 0 && closing.has(conn);
    },
    close(ws: WebSocket<SocketData>, conn: Connection): void {
      const shared = penaltyS > 0 ? edgeState.penalize(conn.principal.userId, conn.addressKey, penaltyS) : undefined;
      if (!shared) return end(ws, conn);
      closing.add(conn);
      let timer: NodeJS.Timeout | undefined;
      const waited = new Promise<void>((resolve) => (timer = setTimeout(resolve, PENALTY_SHARE_WAIT_MS)));
      // Shared or not (a failed PUBLISH is logged where it is made), the socket is closed.
      void Promise.race([shared.then(noop, noop), waited]).then(() => {
        clearTimeout(timer);
        end(ws, conn);
      });
    },
  };
}

function noop(): void {}
