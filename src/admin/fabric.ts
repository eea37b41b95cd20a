import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { isGuid } from '../protocol/messages.js';
import type { RedisClient } from '../redis/client.js';
import { adminActionsChannel, adminRepliesChannel } from '../redis/keys.js';
import type { PubSub } from '../redis/pubsub.js';

/**
 * How the server API reaches every gateway: every instance (Redis pub/sub) and every worker thread
 * of a process (each thread is a gateway: with Redis it has its own subscriber; without, the main
 * thread relays, src/workers/admin-hub.ts). An action is applied by the gateway that took the
 * request and sent to all the others; a query is answered by each gateway for its own sockets.
 */
export type AdminAction =
  | { readonly op: 'disconnect'; readonly userId: string; readonly reason: string }
  | { readonly op: 'block'; readonly userId: string; readonly until: number; readonly reason: string }
  | { readonly op: 'revoke'; readonly userId: string; readonly projectGuid: string; readonly at: number; readonly expiresAt: number };

export type AdminQuery = { readonly op: 'info' } | { readonly op: 'presence'; readonly projectGuid: string };

/** One gateway's answer to a query: its own sockets. */
export interface NodeReport {
  readonly node: string;
  readonly connections: number;
  /** Projects with at least one joined socket here. */
  readonly rooms: number;
  /** For a presence query: [userId, joined sockets] in that project here. */
  readonly users?: readonly (readonly [string, number])[];
}

/** What a gateway does with what arrives (applies an action, answers a query). */
export interface AdminLocal {
  apply(action: AdminAction): void;
  report(query: AdminQuery): NodeReport;
}

export interface AdminFabric {
  /** Sends the action to every other gateway (the caller applied it here already). Rejects when it could not be sent. */
  broadcast(action: AdminAction): Promise<void>;
  /** Every other gateway's report, gathered within the gather window. */
  gather(query: AdminQuery): Promise<NodeReport[]>;
  close(): Promise<void>;
}

/** How long a start waits for the admin channels' subscription before going on without it. */
const SUBSCRIBE_WAIT_MS = 2000;
/** How long a query waits for the other gateways' answers at most. */
export const GATHER_MS = 1000;

/** One gateway alone (no Redis, one thread): nobody else to tell or ask. */
export const ALONE: AdminFabric = { broadcast: async () => {}, gather: async () => [], close: async () => {} };

const MAX_ID = 256;
const isUserId = (u: unknown): u is string => typeof u === 'string' && u.length > 0 && u.length <= MAX_ID;
const isTime = (t: unknown): t is number => typeof t === 'number' && Number.isFinite(t) && t >= 0 && t < 1e15;

/** An action from the channel or a port: applied only if well formed (anyone who can reach Redis can publish). */
export function checkAction(a: unknown): AdminAction | null {
  const o = a as Record<string, unknown> | null;
  if (!o || typeof o !== 'object' || !isUserId(o.userId)) return null;
  const reason = typeof o.reason === 'string' ? o.reason.slice(0, 120) : '';
  if (o.op === 'disconnect') return { op: 'disconnect', userId: o.userId, reason };
  if (o.op === 'block' && isTime(o.until)) return { op: 'block', userId: o.userId, until: o.until, reason };
  if (o.op === 'revoke' && isGuid(o.projectGuid) && isTime(o.at) && isTime(o.expiresAt)) {
    return { op: 'revoke', userId: o.userId, projectGuid: o.projectGuid.toLowerCase(), at: o.at, expiresAt: o.expiresAt };
  }
  return null;
}

export function checkQuery(q: unknown): AdminQuery | null {
  const o = q as Record<string, unknown> | null;
  if (!o || typeof o !== 'object') return null;
  if (o.op === 'info') return { op: 'info' };
  if (o.op === 'presence' && isGuid(o.projectGuid)) return { op: 'presence', projectGuid: o.projectGuid.toLowerCase() };
  return null;
}

export function checkReport(r: unknown): NodeReport | null {
  const o = r as Record<string, unknown> | null;
  if (!o || typeof o !== 'object' || typeof o.node !== 'string' || !Number.isSafeInteger(o.connections) || !Number.isSafeInteger(o.rooms)) return null;
  if (o.users !== undefined && !(Array.isArray(o.users) && o.users.every((e) => Array.isArray(e) && isUserId(e[0]) && Number.isSafeInteger(e[1])))) return null;
  return o as unknown as NodeReport;
}

/**
 * Collects answers by request id until `expected` came or the window ends. Shared by the Redis
 * fabric and the main thread's hub.
 */
export function createGatherings<T>() {
  const open = new Map<string, { got: T[]; expected: number; done: () => void }>();
  return {
    wait(id: string, expected: number, ms: number): Promise<T[]> {
      if (expected <= 0) return Promise.resolve([]);
      return new Promise((resolve) => {
        const got: T[] = [];
        const finish = () => {
          clearTimeout(timer);
          open.delete(id);
          resolve(got);
        };
        const timer = setTimeout(finish, ms);
        open.set(id, { got, expected, done: finish });
      });
    },
    /** Call before the request goes out with an expected count not known yet (Infinity), then set it. */
    expect(id: string, expected: number): void {
      const g = open.get(id);
      if (!g) return;
      (g as { expected: number }).expected = expected;
      if (g.got.length >= expected) g.done();
    },
    answer(id: string, value: T): void {
      const g = open.get(id);
      if (!g) return;
      g.got.push(value);
      if (g.got.length >= g.expected) g.done();
    },
  };
}

/**
 * Over Redis: one channel every gateway subscribes to for actions and queries, and one per gateway
 * for the answers to its queries. A query is answered by as many gateways as PUBLISH reached (minus
 * this one); a Cluster's PUBLISH counts only its node's subscribers, so there the window decides.
 */
export async function createRedisFabric(options: {
  publisher: RedisClient;
  pubsub: PubSub;
  prefix: string;
  instanceId: string;
  local: AdminLocal;
  log: Logger;
}): Promise<AdminFabric> {
  const { publisher, pubsub, prefix, instanceId, local, log } = options;
  const actions = adminActionsChannel(prefix);
  const gatherings = createGatherings<NodeReport>();
  const send = (channel: string, message: object) => publisher.publish(channel, JSON.stringify(message));

  const onAction = (text: string) => {
    let m: { o?: unknown; a?: unknown; q?: { id?: unknown; query?: unknown } };
    try {
      m = JSON.parse(text) as typeof m;
    } catch {
      return void log.warn({ channel: actions }, 'malformed admin message skipped');
    }
    if (typeof m?.o !== 'string' || m.o === instanceId || m.o.length > MAX_ID) return;
    if (m.a !== undefined) {
      const action = checkAction(m.a);
      return action ? local.apply(action) : void log.warn({ channel: actions }, 'malformed admin action skipped');
    }
    const query = checkQuery(m.q?.query);
    if (!query || typeof m.q?.id !== 'string') return void log.warn({ channel: actions }, 'malformed admin query skipped');
    send(adminRepliesChannel(prefix, m.o), { id: m.q.id, r: local.report(query) }).catch((err: unknown) => log.warn({ err: (err as Error).message }, 'admin query not answered (Redis unavailable)'));
  };
  const onReply = (text: string) => {
    try {
      const m = JSON.parse(text) as { id?: unknown; r?: unknown };
      const report = checkReport(m.r);
      if (typeof m.id === 'string' && report) gatherings.answer(m.id, report);
    } catch {
      log.warn('malformed admin reply skipped');
    }
  };
  // A subscribe waits for Redis (the subscriber is a blocking connection): a start while Redis is
  // away must not hang on it, so it is awaited for a bounded time; ioredis subscribes when Redis is back.
  const subscribed = Promise.all([pubsub.subscribe(actions, onAction), pubsub.subscribe(adminRepliesChannel(prefix, instanceId), onReply)]).then(
    () => true,
    (err: unknown) => (log.warn({ err: (err as Error).message }, 'admin channels not subscribed'), false),
  );
  let timer: NodeJS.Timeout | undefined;
  const ok = await Promise.race([subscribed, new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), SUBSCRIBE_WAIT_MS)))]);
  clearTimeout(timer);
  if (!ok) log.warn('admin channels not subscribed yet (Redis unreachable): server API actions from other instances reach this one once it is');

  return {
    async broadcast(action) {
      await send(actions, { o: instanceId, a: action });
    },
    async gather(query) {
      const id = randomBytes(8).toString('hex');
      const answers = gatherings.wait(id, Infinity, GATHER_MS);
      const reached = await send(actions, { o: instanceId, q: { id, query } });
      if (!publisher.isCluster) gatherings.expect(id, reached - 1);
      return answers;
    },
    async close() {
      await Promise.all([pubsub.unsubscribe(actions), pubsub.unsubscribe(adminRepliesChannel(prefix, instanceId))]).catch(() => {});
    },
  };
}
