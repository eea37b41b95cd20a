import type { TicketStore } from '../auth/tickets.js';
import type { Principal } from '../auth/principal.js';
import { GatewayError } from '../errors.js';
import type { FromWorker, MainRequest, MainResult, ToWorker } from './messages.js';

/**
 * A worker thread's calls on the main thread (the in-process bus, the ticket store): each is a
 * message with a request id, answered by a `reply` on the same port. What the main thread refused
 * with a GatewayError is rejected with the same code here.
 */
export interface MainCaller {
  call(request: MainRequest): Promise<MainResult>;
  /** Feed every `reply` message the worker receives in here. */
  receive(reply: Extract<ToWorker, { kind: 'reply' }>): void;
  /** Rejects what is still waiting and every later call. */
  close(): void;
}

export function createMainCaller(send: (message: FromWorker) => void): MainCaller {
  const pending = new Map<number, { resolve: (value: MainResult) => void; reject: (err: Error) => void }>();
  let nextRequestId = 1;
  let closed = false;
  return {
    call(request) {
      if (closed) return Promise.reject(new Error('main thread calls closed'));
      const requestId = nextRequestId++;
      return new Promise((resolve, reject) => {
        pending.set(requestId, { resolve, reject });
        send({ kind: 'call', requestId, request });
      });
    },
    receive(reply) {
      const waiter = pending.get(reply.requestId);
      if (!waiter) return;
      pending.delete(reply.requestId);
      if (reply.ok) waiter.resolve(reply.value);
      else waiter.reject(reply.code ? new GatewayError(reply.code, reply.message, reply.retryAfterS) : new Error(reply.message));
    },
    close() {
      closed = true;
      for (const { reject } of pending.values()) reject(new Error('main thread calls closed'));
      pending.clear();
    },
  };
}

/** The main thread's ticket store, seen from a worker (no Redis: one store per process, so any worker redeems). */
export function createPortTicketStore(caller: MainCaller, ttlS: number): TicketStore {
  return {
    ttlS,
    issue: async (principal) => (await caller.call({ op: 'issueTicket', principal })) as string,
    redeem: async (ticket) => (await caller.call({ op: 'redeemTicket', ticket })) as Principal | null,
  };
}
