import type { Cluster, Redis } from 'ioredis';
import { randomBytes } from 'node:crypto';
import { ticketKey } from '../redis/keys.js';
import { deserializePrincipal, serializePrincipal, type Principal } from './tokens.js';

/**
 * One-time connection tickets: `POST /v1/tickets` trades the long-lived token for a random ticket
 * valid a few seconds, used once as `?ticket=`, so long-lived tokens stay out of URLs (and proxy
 * logs). With Redis a ticket issued by one instance is redeemed on any other (no sticky sessions);
 * GETDEL makes "once" hold across instances.
 */
export interface TicketStore {
  issue(principal: Principal): Promise<string>;
  /** The ticket's principal, or null if it is unknown, used or expired. */
  redeem(ticket: string): Promise<Principal | null>;
  readonly ttlS: number;
}

/** 32 random bytes, base64url: what a ticket looks like (anything else is refused unread). */
export const TICKET_PATTERN = /^[A-Za-z0-9_-]{43}$/;
const newTicket = () => randomBytes(32).toString('base64url');

export function createMemoryTicketStore(ttlS: number, maxTickets = 100_000): TicketStore {
  const tickets = new Map<string, { principal: Principal; expiresAt: number }>();
  return {
    ttlS,
    async issue(principal) {
      const now = Date.now();
      // Oldest first: drop expired ones (and the oldest, past the bound) from the head.
      for (const [k, t] of tickets) {
        if (t.expiresAt > now && tickets.size < maxTickets) break;
        tickets.delete(k);
      }
      const ticket = newTicket();
      tickets.set(ticket, { principal, expiresAt: now + ttlS * 1000 });
      return ticket;
    },
    async redeem(ticket) {
      const t = tickets.get(ticket);
      if (!t) return null;
      tickets.delete(ticket);
      return t.expiresAt > Date.now() ? t.principal : null;
    },
  };
}

export function createRedisTicketStore(redis: Redis | Cluster, prefix: string, ttlS: number): TicketStore {
  return {
    ttlS,
    async issue(principal) {
      const ticket = newTicket();
      await redis.set(ticketKey(prefix, ticket), serializePrincipal(principal), 'EX', ttlS);
      return ticket;
    },
    async redeem(ticket) {
      const text = await redis.getdel(ticketKey(prefix, ticket));
      return text === null ? null : deserializePrincipal(text);
    },
  };
}
