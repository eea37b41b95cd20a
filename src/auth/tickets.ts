import type { Cluster, Redis } from 'ioredis';
import { randomBytes } from 'node:crypto';
import { GatewayError } from '../errors.js';
import { ticketKey, ticketCountKey } from '../redis/keys.js';
import { deserializePrincipal, serializePrincipal, type Principal } from './principal.js';

/**
 * One-time connection tickets: `POST /v1/tickets` trades the long-lived token for a random ticket
 * valid a few seconds, used once as `?ticket=`, so long-lived tokens stay out of URLs (and proxy
 * logs). With Redis a ticket issued by one instance is redeemed on any other (no sticky sessions);
 * GETDEL makes "once" hold across instances.
 */
export interface TicketStore {
  /**
   * A new ticket for the principal. Refused (GatewayError RATE_LIMITED, with retryAfterS) once the
   * user was issued `perUser` tickets within the last TTL, and (UNAVAILABLE) when the store is full:
   * a ticket is never dropped before it expires to make room for another.
   */
  issue(principal: Principal): Promise<string>;
  /** The ticket's principal, or null if it is unknown, used or expired. */
  redeem(ticket: string): Promise<Principal | null>;
  readonly ttlS: number;
}

/** 32 random bytes, base64url: what a ticket looks like (anything else is refused unread). */
export const TICKET_PATTERN = /^[A-Za-z0-9_-]{43}$/;
const newTicket = () => randomBytes(32).toString('base64url');

/** How many tickets each user may be issued per TICKET_TTL_S, and how many the memory store holds. */
export interface TicketLimits {
  readonly ttlS: number;
  readonly perUser: number;
  /** Memory store only: tickets held at most (unexpired ones are never evicted: beyond it, refused). */
  readonly maxTickets?: number;
}

export const ticketLimits = (config: { readonly edge: { readonly ticketTtlS: number; readonly ticketsPerUser: number } }): TicketLimits => ({ ttlS: config.edge.ticketTtlS, perUser: config.edge.ticketsPerUser });

const tooMany = (perUser: number, ttlS: number, retryAfterS: number) =>
  new GatewayError('RATE_LIMITED', `at most ${perUser} tickets per user every ${ttlS} s`, Math.max(1, retryAfterS));

export function createMemoryTicketStore(limits: TicketLimits): TicketStore {
  const { ttlS, perUser } = limits;
  const maxTickets = limits.maxTickets ?? 100_000;
  /** Insertion order is expiry order (one TTL for all): expired ones are at the head. */
  const tickets = new Map<string, { principal: Principal; expiresAt: number }>();
  /** Per user, a window of TTL seconds and the tickets issued in it (as the Redis store counts). */
  const issued = new Map<string, { since: number; n: number }>();
  const sweep = (now: number) => {
    for (const [k, t] of tickets) {
      if (t.expiresAt > now) break;
      tickets.delete(k);
    }
    if (issued.size > maxTickets) for (const [u, w] of issued) if (now - w.since >= ttlS * 1000) issued.delete(u);
  };
  return {
    ttlS,
    async issue(principal) {
      const now = Date.now();
      sweep(now);
      let window = issued.get(principal.userId);
      if (!window || now - window.since >= ttlS * 1000) issued.set(principal.userId, (window = { since: now, n: 0 }));
      if (window.n >= perUser) throw tooMany(perUser, ttlS, Math.ceil((window.since + ttlS * 1000 - now) / 1000));
      if (tickets.size >= maxTickets) throw new GatewayError('UNAVAILABLE', 'ticket store full; retry later', ttlS);
      window.n++;
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

// Counts the tickets a user was issued in a window of the TTL, or refuses: atomic per user, so
// concurrent requests of one user on several instances cannot pass the bound together. One key (the
// user's slot in a Cluster); the ticket is stored after, in its own. KEYS count; ARGV ttl, per-user
// bound. Returns 0, or the seconds until the window ends.
const COUNT_LUA = `
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
if n > tonumber(ARGV[2]) then
  local ttl = redis.call('TTL', KEYS[1])
  if ttl < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) ttl = tonumber(ARGV[1]) end
  return ttl
end
return 0
`;

export function createRedisTicketStore(redis: Redis | Cluster, prefix: string, limits: TicketLimits): TicketStore {
  const { ttlS, perUser } = limits;
  if (!('autocodeCountTicket' in redis)) redis.defineCommand('autocodeCountTicket', { numberOfKeys: 1, lua: COUNT_LUA });
  const count = (redis as unknown as { autocodeCountTicket(key: string, ttlS: number, perUser: number): Promise<number> }).autocodeCountTicket.bind(redis);
  return {
    ttlS,
    async issue(principal) {
      const wait = Number(await count(ticketCountKey(prefix, principal.userId), ttlS, perUser));
      if (wait > 0) throw tooMany(perUser, ttlS, wait);
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
