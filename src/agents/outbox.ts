import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { feedbackStreamKey, FEEDBACK_GROUP, FIELD_FEEDBACK_BODY, FIELD_FEEDBACK_ID } from '../redis/keys.js';
import { GatewayError } from '../errors.js';
import type { Metrics } from '../metrics.js';
import type { RedisClient } from '../redis/client.js';

/** One user_feedback as stored in the outbox and sent upstream (docs/agents.md, `user_feedback`). */
export interface FeedbackRecord {
  /** The dedupe key: assigned once at acceptance, identical on every redelivery. */
  readonly feedbackId: string;
  readonly projectGuid: string;
  readonly userId: string;
  /** The `id` of the user's frame (null if it had none). */
  readonly requestId: string | null;
  readonly content: string;
  readonly replyTo?: string;
  readonly meta?: Record<string, unknown>;
  /** When the gateway accepted it (ISO 8601). */
  readonly acceptedAt: string;
  /** NODE_ID of the instance that accepted it. */
  readonly origin: string;
}

export type FeedbackInput = Omit<FeedbackRecord, 'feedbackId' | 'acceptedAt' | 'origin'>;

/** Sends one feedback upstream; false when the link is not open (the outbox keeps it). */
export type DeliverFeedback = (record: FeedbackRecord, redelivery: boolean) => boolean;

export interface Outbox {
  /** True with Redis: accepted feedback survives restarts of every gateway. */
  readonly durable: boolean;
  /**
   * Stores the feedback; resolves once it is stored (appended to a feedback stream with Redis).
   * Throws FEEDBACK_QUEUE_FULL when the store is at its bound, UNAVAILABLE when Redis does not answer:
   * in both cases nothing was stored.
   */
  accept(input: FeedbackInput): Promise<{ feedbackId: string; durable: boolean }>;
  /** The link is open: start delivering through `deliver` (own unacked feedback first). */
  attach(deliver: DeliverFeedback): void;
  /** The link is gone: stop delivering; everything unacked stays and is sent again later. */
  detach(): void;
  /** The agents-server confirmed these: remove them for good. Unknown ids are ignored (already acked, or owned elsewhere). */
  ack(feedbackIds: readonly string[]): void;
  close(): Promise<void>;
}

export interface OutboxCommon {
  nodeId: string;
  log: Logger;
  metrics: Metrics;
  /** Sent and unacked this long: sent again. */
  claimIdleMs: number;
  maxInflight: number;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** How long a feedback waits for the Redis connection to be ready before it is refused. */
const ACCEPT_WAIT_MS = 1000;

/**
 * True once the client is ready, false after `ms`. Callers waiting at the same time share one wait
 * (one listener), so a burst of feedback during an outage does not pile up listeners.
 */
function readinessWaiter(client: RedisClient): (ms: number) => Promise<boolean> {
  let waiting: Promise<boolean> | null = null;
  return (ms) => {
    if (client.status === 'ready') return Promise.resolve(true);
    return (waiting ??= new Promise<boolean>((resolve) => {
      const done = (ready: boolean) => {
        clearTimeout(timer);
        client.off('ready', onReady);
        waiting = null;
        resolve(ready);
      };
      const onReady = () => done(true);
      const timer = setTimeout(() => done(false), ms);
      client.once('ready', onReady);
    }));
  };
}

/** Parses a stored record; anyone can XADD to the stream, so nothing in it is trusted. */
function parseRecord(fid: string | undefined, body: string | undefined): FeedbackRecord | null {
  if (!fid || !body) return null;
  try {
    const r = JSON.parse(body) as Partial<FeedbackRecord> | null;
    if (!r || typeof r !== 'object' || r.feedbackId !== fid) return null;
    if (typeof r.projectGuid !== 'string' || typeof r.userId !== 'string' || typeof r.content !== 'string' || typeof r.acceptedAt !== 'string' || typeof r.origin !== 'string') return null;
    return r as FeedbackRecord;
  } catch {
    return null;
  }
}

function newRecord(input: FeedbackInput, nodeId: string): FeedbackRecord {
  return { ...input, feedbackId: randomUUID(), acceptedAt: new Date().toISOString(), origin: nodeId };
}

// ---------------------------------------------------------------------------------------------
// Redis: feedback streams read through a consumer group
// ---------------------------------------------------------------------------------------------

// Append unless the stream already holds `max` entries (acked entries are deleted, so its length is
// the number of undelivered ones). KEYS[1] stream; ARGV max, feedback id, body. Returns the entry id or false.
const APPEND_LUA = `
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return false end
return redis.call('XADD', KEYS[1], '*', '${FIELD_FEEDBACK_ID}', ARGV[2], '${FIELD_FEEDBACK_BODY}', ARGV[3])
`;

type Entry = [id: string, fields: string[]];
type GroupReply = [key: string, entries: Entry[]][];

/** A field/value reply (RESP2 flat list, or RESP3 map as a flat list or an object) as an object. */
function fieldsOf(row: unknown): Record<string, unknown> {
  if (Array.isArray(row)) {
    const out: Record<string, unknown> = {};
    for (let i = 0; i + 1 < row.length; i += 2) out[String(row[i])] = row[i + 1];
    return out;
  }
  return row && typeof row === 'object' ? (row as Record<string, unknown>) : {};
}

/**
 * XREADGROUP's reply as [key, entries] pairs. Over RESP2 it is a list of pairs; over RESP3 (a map)
 * ioredis flattens it to [key, entries, key, entries, …]. Both are accepted.
 */
function streamsOf(reply: unknown): GroupReply {
  if (!Array.isArray(reply) || reply.length === 0) return [];
  if (Array.isArray(reply[0])) return reply as GroupReply;
  const pairs: GroupReply = [];
  for (let i = 0; i + 1 < reply.length; i += 2) pairs.push([reply[i] as string, reply[i + 1] as Entry[]]);
  return pairs;
}

/**
 * The durable outbox: `FEEDBACK_STREAM_SHARDS` streams, a project's feedback always on the same one
 * (so it stays in order), one consumer group read by every instance that holds a link (consumer name
 * = NODE_ID). An entry leaves the stream (XACK + XDEL) only when the agents-server acks its feedback
 * id. Entries that stay unacked for `claimIdleMs` (their instance died, its link is down, or the ack
 * got lost) are taken over with XAUTOCLAIM by whichever instance has a live link, and sent again.
 */
export function createRedisOutbox(
  options: OutboxCommon & { cmd: RedisClient; reader: RedisClient; clustered: boolean; prefix: string; shards: number; streamMax: number },
): Outbox {
  const { cmd, reader, log, metrics, nodeId } = options;
  const keys = Array.from({ length: options.shards }, (_, i) => feedbackStreamKey(options.prefix, i));
  if (!('autocodeFeedbackAppend' in cmd)) cmd.defineCommand('autocodeFeedbackAppend', { numberOfKeys: 1, lua: APPEND_LUA });
  const readyWithin = readinessWaiter(cmd);
  const append = (cmd as unknown as { autocodeFeedbackAppend(key: string, max: number, fid: string, body: string): Promise<string | null> }).autocodeFeedbackAppend.bind(cmd);

  /**
   * Sent over this instance's link and not acked yet: feedback id → where it is stored and when it
   * was sent. Entries older than twice the claim idle time are forgotten: by then another instance
   * (or this one) has claimed and resent them, so the ack will come for that delivery.
   */
  const inflight = new Map<string, { key: string; entryId: string; sentAt: number }>();
  let deliver: DeliverFeedback | null = null;
  let session = 0;
  let running = true;
  let groupsReady = false;
  let wakeReader: (() => void) | null = null;
  let nextCleanupAt = 0;
  let lastErrorLog = 0;

  const logError = (msg: string, err: unknown) => {
    if (Date.now() - lastErrorLog < 1000) return;
    lastErrorLog = Date.now();
    log.warn({ err: (err as Error)?.message ?? String(err), command: (err as { command?: { name: string } }).command?.name }, msg);
  };

  /** A project's shard: a stable string hash of its GUID. */
  function shardOf(projectGuid: string): string {
    let h = 0;
    for (let i = 0; i < projectGuid.length; i++) h = (h * 31 + projectGuid.charCodeAt(i)) | 0;
    return keys[Math.abs(h) % keys.length]!;
  }

  async function ensureGroups(): Promise<void> {
    if (groupsReady) return;
    for (const key of keys) {
      try {
        // From the beginning ('0'), not '$': feedback appended before the group existed must be read too.
        await cmd.call('XGROUP', 'CREATE', key, FEEDBACK_GROUP, '0', 'MKSTREAM');
      } catch (err) {
        if (!String((err as Error).message).includes('BUSYGROUP')) throw err;
      }
    }
    groupsReady = true;
  }

  async function removeEntries(key: string, ids: string[]): Promise<void> {
    if (!ids.length) return;
    await cmd.multi().call('XACK', key, FEEDBACK_GROUP, ...ids).call('XDEL', key, ...ids).exec();
  }

  /** Sends what was read; false if the link went away meanwhile (the rest stays pending here, sent on the next link). */
  async function sendEntries(key: string, entries: Entry[], redelivery: boolean, mySession: number): Promise<boolean> {
    const poison: string[] = [];
    let ok = true;
    for (const [entryId, fields] of entries) {
      if (!fields) continue; // XAUTOCLAIM on Redis < 7 returns deleted entries as nil
      let fid: string | undefined;
      let body: string | undefined;
      for (let i = 0; i + 1 < fields.length; i += 2) {
        if (fields[i] === FIELD_FEEDBACK_ID) fid = fields[i + 1];
        else if (fields[i] === FIELD_FEEDBACK_BODY) body = fields[i + 1];
      }
      const record = parseRecord(fid, body);
      if (!record) {
        // A poison entry (not written by a gateway) must not block the stream: logged and removed.
        log.warn({ key, entryId }, 'agents relay: malformed feedback entry removed (needs fields fid and body, as written by the gateway)');
        poison.push(entryId);
        continue;
      }
      if (!deliver || session !== mySession || !deliver(record, redelivery)) {
        ok = false;
        break;
      }
      inflight.set(record.feedbackId, { key, entryId, sentAt: Date.now() });
      metrics.feedbackSent.inc();
      if (redelivery) metrics.feedbackRedeliveries.inc();
    }
    metrics.feedbackInflight.set(inflight.size);
    await removeEntries(key, poison);
    return ok;
  }

  /** After a (re)connect: everything this consumer read and nobody acked goes out again first. */
  async function resendOwnPending(mySession: number): Promise<void> {
    for (const key of keys) {
      let after = '0';
      for (;;) {
        const reply = streamsOf(await reader.call('XREADGROUP', 'GROUP', FEEDBACK_GROUP, nodeId, 'COUNT', 200, 'STREAMS', key, after));
        const entries = reply[0]?.[1] ?? [];
        if (!entries.length) break;
        if (!(await sendEntries(key, entries, true, mySession))) return;
        after = entries[entries.length - 1]![0];
      }
    }
  }

  /** Takes over entries idle for claimIdleMs (any consumer's, this one's included) and sends them again. */
  async function claimStale(mySession: number): Promise<void> {
    for (const key of keys) {
      let cursor = '0-0';
      for (let round = 0; round < 50; round++) {
        const [next, entries] = (await cmd.call('XAUTOCLAIM', key, FEEDBACK_GROUP, nodeId, options.claimIdleMs, cursor, 'COUNT', 100)) as [string, Entry[]];
        if (entries.length) log.info({ key, count: entries.length }, 'agents relay: claimed unacked feedback for redelivery');
        if (entries.length && !(await sendEntries(key, entries, true, mySession))) return;
        if (next === '0-0') break;
        cursor = next;
      }
    }
  }

  function forgetStale(): void {
    const before = Date.now() - 2 * options.claimIdleMs;
    for (const [fid, at] of inflight) if (at.sentAt < before) inflight.delete(fid);
    metrics.feedbackInflight.set(inflight.size);
  }

  /**
   * Consumers are never removed by Redis. One with nothing pending and silent for a long time is an
   * instance that is gone (a live one touches the group every second): removed so XINFO stays readable.
   * A consumer with pending entries is never removed (that would make them unclaimable).
   */
  async function removeGoneConsumers(): Promise<void> {
    const goneAfterMs = Math.max(10 * options.claimIdleMs, 600_000);
    for (const key of keys) {
      const rows = (await cmd.call('XINFO', 'CONSUMERS', key, FEEDBACK_GROUP)) as unknown[];
      for (const row of rows) {
        const info = fieldsOf(row);
        const name = typeof info.name === 'string' ? info.name : null;
        if (name && name !== nodeId && Number(info.pending) === 0 && Number(info.idle) > goneAfterMs) {
          await cmd.call('XGROUP', 'DELCONSUMER', key, FEEDBACK_GROUP, name);
        }
      }
    }
  }

  async function readNew(mySession: number): Promise<void> {
    const count = Math.max(1, Math.min(200, options.maxInflight - inflight.size));
    if (!options.clustered) {
      // One blocking read over every shard, on the reader's own connection.
      const reply = streamsOf(await reader.call('XREADGROUP', 'GROUP', FEEDBACK_GROUP, nodeId, 'COUNT', count, 'BLOCK', 1000, 'STREAMS', ...keys, ...keys.map(() => '>')));
      for (const [key, entries] of reply) if (!(await sendEntries(key, entries, false, mySession))) return;
      return;
    }
    // Cluster: the shards live in different slots, and XREADGROUP cannot span slots.
    let any = false;
    for (const key of keys) {
      const reply = streamsOf(await reader.call('XREADGROUP', 'GROUP', FEEDBACK_GROUP, nodeId, 'COUNT', count, 'STREAMS', key, '>'));
      const entries = reply[0]?.[1] ?? [];
      if (entries.length) any = true;
      if (!(await sendEntries(key, entries, false, mySession))) return;
    }
    if (!any) await sleep(50);
  }

  async function run(): Promise<void> {
    while (running) {
      if (!deliver) {
        await new Promise<void>((resolve) => (wakeReader = resolve));
        wakeReader = null;
        continue;
      }
      const mySession = session;
      try {
        await ensureGroups();
        await resendOwnPending(mySession);
        let nextClaimAt = 0;
        // attach() and detach() both bump the session, so this ends when the link does.
        while (running && session === mySession) {
          if (Date.now() >= nextClaimAt) {
            nextClaimAt = Date.now() + Math.max(100, options.claimIdleMs / 2);
            forgetStale();
            await claimStale(mySession);
            if (Date.now() >= nextCleanupAt) {
              nextCleanupAt = Date.now() + 60_000;
              await removeGoneConsumers();
            }
          }
          if (inflight.size >= options.maxInflight) {
            forgetStale();
            await sleep(20);
            continue;
          }
          await readNew(mySession);
        }
      } catch (err) {
        if (!running) return;
        // NOGROUP: Redis lost the group (restarted without persistence); create it again.
        if (String((err as Error).message).includes('NOGROUP')) groupsReady = false;
        logError('agents relay: feedback read failed; retrying', err);
        await sleep(500);
      }
    }
  }

  // Sampled, not per entry: the oldest unacked entry's age and the number waiting (acked entries are deleted).
  const sampleTimer = setInterval(() => {
    if (cmd.status !== 'ready') return;
    Promise.all(keys.map(async (key) => [await cmd.call('XLEN', key), await cmd.call('XRANGE', key, '-', '+', 'COUNT', 1)] as [number, Entry[]])).then(
      (rows) => {
        let pending = 0;
        let oldest = Infinity;
        for (const [len, first] of rows) {
          pending += len;
          const id = first[0]?.[0];
          if (id) oldest = Math.min(oldest, Number(id.slice(0, id.indexOf('-'))));
        }
        metrics.feedbackPending.set(pending);
        metrics.feedbackOldestAge.set(oldest === Infinity ? 0 : Math.max(0, (Date.now() - oldest) / 1000));
      },
      (err: unknown) => logError('agents relay: could not sample the feedback streams', err),
    );
  }, 2000);
  sampleTimer.unref();

  const loop = run();

  return {
    durable: true,
    async accept(input) {
      // While Redis is away, answer within a short wait (the connection may just be coming up, e.g.
      // right after this instance started) rather than after ioredis's reconnect attempts; the user retries.
      if (cmd.status !== 'ready' && !(await readyWithin(ACCEPT_WAIT_MS))) {
        throw new GatewayError('UNAVAILABLE', 'feedback store (Redis) unavailable; not accepted, retry later');
      }
      const record = newRecord(input, nodeId);
      let entryId: string | null;
      try {
        entryId = await append(shardOf(record.projectGuid), options.streamMax, record.feedbackId, JSON.stringify(record));
      } catch (err) {
        logError('agents relay: could not store feedback', err);
        throw new GatewayError('UNAVAILABLE', 'feedback store (Redis) unavailable; not accepted, retry later');
      }
      if (entryId === null) throw new GatewayError('FEEDBACK_QUEUE_FULL');
      metrics.feedbackAccepted.inc();
      return { feedbackId: record.feedbackId, durable: true };
    },
    attach(d) {
      deliver = d;
      session++;
      // What this consumer still owns is read again from its pending list and resent.
      inflight.clear();
      wakeReader?.();
    },
    detach() {
      deliver = null;
      session++;
    },
    ack(feedbackIds) {
      const byKey = new Map<string, string[]>();
      for (const fid of feedbackIds) {
        const at = inflight.get(fid);
        if (!at) continue;
        inflight.delete(fid);
        byKey.set(at.key, [...(byKey.get(at.key) ?? []), at.entryId]);
      }
      metrics.feedbackInflight.set(inflight.size);
      for (const [key, ids] of byKey) {
        removeEntries(key, ids).then(
          () => metrics.feedbackAcked.inc(ids.length),
          // Still pending in the group: claimed and sent again after claimIdleMs; the agents-server dedupes.
          (err: unknown) => logError('agents relay: XACK failed; the feedback will be sent again', err),
        );
      }
    },
    async close() {
      running = false;
      deliver = null;
      clearInterval(sampleTimer);
      wakeReader?.();
      reader.disconnect();
      await loop.catch(() => {});
      await releaseOwnPending().catch((err: unknown) => logError('agents relay: could not hand over unacked feedback on shutdown (claimed after the idle time instead)', err));
    },
  };

  /**
   * On a graceful shutdown: marks this consumer's unacked entries as idle for the full claim time
   * (XCLAIM … IDLE), so the next claim round of any other instance takes them over at once instead of
   * after FEEDBACK_CLAIM_IDLE_MS. They stay pending (nothing is lost if nobody is there to take them).
   */
  async function releaseOwnPending(): Promise<void> {
    if (cmd.status !== 'ready') return;
    for (const key of keys) {
      const rows = (await cmd.call('XPENDING', key, FEEDBACK_GROUP, '-', '+', 10000, nodeId)) as [string, ...unknown[]][];
      const ids = rows.map((r) => r[0]);
      for (let i = 0; i < ids.length; i += 500) {
        await cmd.call('XCLAIM', key, FEEDBACK_GROUP, nodeId, 0, ...ids.slice(i, i + 500), 'IDLE', options.claimIdleMs, 'JUSTID');
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// No Redis: a bounded queue in this process (NOT durable across restarts)
// ---------------------------------------------------------------------------------------------

interface QueuedFeedback {
  readonly record: FeedbackRecord;
  sentAt: number | null;
  sends: number;
}

/**
 * Without Redis: a bounded in-memory queue used for feedback only. Same delivery rules as the
 * durable outbox (kept until acked, sent again after a link loss or claimIdleMs without an ack), but
 * a restart of this process loses what it holds; the reply to the user says `durable: false`.
 */
export function createMemoryOutbox(options: OutboxCommon & { maxQueued: number }): Outbox {
  const { metrics } = options;
  const queue = new Map<string, QueuedFeedback>(); // insertion order = acceptance order
  let deliver: DeliverFeedback | null = null;

  function pump(): void {
    if (!deliver) return;
    const staleBefore = Date.now() - options.claimIdleMs;
    let inflight = 0;
    for (const q of queue.values()) if (q.sentAt !== null && q.sentAt > staleBefore) inflight++;
    for (const q of queue.values()) {
      if (q.sentAt !== null && q.sentAt > staleBefore) continue;
      if (inflight >= options.maxInflight) break;
      const redelivery = q.sends > 0;
      if (!deliver(q.record, redelivery)) break;
      q.sentAt = Date.now();
      q.sends++;
      inflight++;
      metrics.feedbackSent.inc();
      if (redelivery) metrics.feedbackRedeliveries.inc();
    }
    metrics.feedbackInflight.set(inflight);
  }

  function sample(): void {
    metrics.feedbackPending.set(queue.size);
    const first = queue.values().next().value as QueuedFeedback | undefined;
    metrics.feedbackOldestAge.set(first ? (Date.now() - Date.parse(first.record.acceptedAt)) / 1000 : 0);
  }

  const timer = setInterval(() => {
    pump();
    sample();
  }, Math.max(100, Math.min(1000, options.claimIdleMs / 2)));
  timer.unref();

  return {
    durable: false,
    async accept(input) {
      if (queue.size >= options.maxQueued) throw new GatewayError('FEEDBACK_QUEUE_FULL');
      const record = newRecord(input, options.nodeId);
      queue.set(record.feedbackId, { record, sentAt: null, sends: 0 });
      metrics.feedbackAccepted.inc();
      sample();
      // Sent after the user's reply goes out (next tick), in acceptance order.
      setImmediate(pump);
      return { feedbackId: record.feedbackId, durable: false };
    },
    attach(d) {
      deliver = d;
      for (const q of queue.values()) q.sentAt = null;
      pump();
    },
    detach() {
      deliver = null;
    },
    ack(feedbackIds) {
      let acked = 0;
      for (const fid of feedbackIds) if (queue.delete(fid)) acked++;
      metrics.feedbackAcked.inc(acked);
      sample();
      pump();
    },
    async close() {
      clearInterval(timer);
      deliver = null;
      if (queue.size) options.log.warn({ lost: queue.size }, 'agents relay: shutting down with undelivered feedback in memory (no Redis): it is lost');
    },
  };
}
