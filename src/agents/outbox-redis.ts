import { GatewayError } from '../errors.js';
import { throttledWarn } from '../logger.js';
import type { RedisClient } from '../redis/client.js';
import { quotaError, type FeedbackLedger, type PendingEntry, type PendingQuotas } from './feedback-quotas.js';
import { createFeedbackStreams, recordOf, type Entry, type FeedbackStreams } from './feedback-streams.js';
import { newRecord, type SendUpstream, type Outbox, type OutboxCommon } from './outbox.js';

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

type LogError = (msg: string, err: unknown) => void;
type RedisOutboxOptions = OutboxCommon & {
  cmd: RedisClient;
  reader: RedisClient;
  clustered: boolean;
  prefix: string;
  shards: number;
  streamMax: number;
  /** The per-user and per-project quotas, counted in Redis (feedback-quotas-redis.ts). */
  ledger: FeedbackLedger;
  quotas: PendingQuotas;
};

/**
 * The durable outbox: `FEEDBACK_STREAM_SHARDS` streams, a project's feedback always on the same one
 * (so it stays in order), one consumer group read by every instance that holds a link (consumer name
 * = NODE_ID). An entry leaves the stream (XACK + XDEL) only when the agents-server acks its feedback
 * id. Entries that stay unacked for `claimIdleMs` (their instance died, its link is down, or the ack
 * got lost) are taken over with XAUTOCLAIM by whichever instance has a live link, and sent again.
 */
export function createRedisOutbox(options: RedisOutboxOptions): Outbox {
  const { cmd, reader, metrics, nodeId } = options;
  const warn = throttledWarn(options.log);
  const logError: LogError = (msg, err) => warn(msg, err, { command: (err as { command?: { name: string } } | null)?.command?.name });
  const streams = createFeedbackStreams({ cmd, reader, prefix: options.prefix, shards: options.shards, streamMax: options.streamMax, nodeId, claimIdleMs: options.claimIdleMs });
  const readyWithin = readinessWaiter(cmd);
  const sender = createSender(options, streams);
  const reading = startReading(options, streams, sender, logError);

  // Sampled, not per entry: the oldest unacked entry's age and the number waiting (acked entries are deleted).
  const sampleTimer = setInterval(() => {
    if (cmd.status !== 'ready') return;
    streams.sample().then(
      ({ pending, oldestMs }) => {
        metrics.feedbackPending.set(pending);
        metrics.feedbackOldestAge.set(oldestMs === Infinity ? 0 : Math.max(0, (Date.now() - oldestMs) / 1000));
      },
      (err: unknown) => logError('agents relay: could not sample the feedback streams', err),
    );
  }, 2000);
  sampleTimer.unref();

  return {
    durable: true,
    async accept(input) {
      // While Redis is away, answer within a short wait (the connection may just be coming up, e.g.
      // right after this instance started) rather than after ioredis's reconnect attempts; the user retries.
      if (cmd.status !== 'ready' && !(await readyWithin(ACCEPT_WAIT_MS))) {
        throw new GatewayError('UNAVAILABLE', 'feedback store (Redis) unavailable; not accepted, retry later');
      }
      const record = newRecord(input, nodeId);
      const unavailable = (err: unknown) => {
        logError('agents relay: could not store feedback', err);
        return new GatewayError('UNAVAILABLE', 'feedback store (Redis) unavailable; not accepted, retry later');
      };
      const refusal = await options.ledger.reserve(record).catch((err: unknown) => {
        throw unavailable(err);
      });
      if (refusal) throw quotaError(refusal, { ...options.quotas, store: `FEEDBACK_STREAM_MAX ${options.streamMax}` });
      let entryId: string | null;
      try {
        entryId = await streams.append(record);
      } catch (err) {
        // Perhaps appended after all (a stalled reply): it then goes uncounted (one over the quota
        // per such failure, never a count that stays).
        options.ledger.release([record]);
        throw unavailable(err);
      }
      if (entryId === null) {
        options.ledger.release([record]);
        throw quotaError('store', { ...options.quotas, store: `FEEDBACK_STREAM_MAX ${options.streamMax}` });
      }
      metrics.feedbackAccepted.inc();
      return { feedbackId: record.feedbackId, durable: true };
    },
    attach(send) {
      sender.attach(send);
      reading.wake();
    },
    detach: () => sender.detach(),
    ack: (feedbackIds) => sender.ack(feedbackIds, logError),
    async close() {
      clearInterval(sampleTimer);
      sender.detach();
      await reading.stop();
      await streams.releaseOwnPending().catch((err: unknown) => logError('agents relay: could not hand over unacked feedback on shutdown (claimed after the idle time instead)', err));
    },
  };
}

/** What was sent over this instance's link and not acked yet, and the link to send over. */
interface Sender {
  /** Bumped by attach() and detach(): a read started for one link ends with it. */
  session(): number;
  /** Whether a link is attached. */
  linked(): boolean;
  attach(send: SendUpstream): void;
  detach(): void;
  /** Sends entries read from `key`; false if the link went away meanwhile (the rest stays pending, sent on the next link). */
  sendEntries(key: string, entries: Entry[], redelivery: boolean, session: number): Promise<boolean>;
  ack(feedbackIds: readonly string[], logError: LogError): void;
  inflight(): number;
  /** Forgets sends older than twice the claim idle time: by then they were claimed and sent again. */
  forgetStale(): void;
}

function createSender(options: RedisOutboxOptions, streams: FeedbackStreams): Sender {
  const { metrics, log } = options;
  /** Feedback id → where it is stored, when it was sent, and whose it is (to release its quotas on ack). */
  const inflight = new Map<string, { key: string; entryId: string; sentAt: number; userId: string; projectGuid: string }>();
  let sendUpstream: SendUpstream | null = null;
  let session = 0;

  return {
    session: () => session,
    linked: () => sendUpstream !== null,
    attach(send) {
      sendUpstream = send;
      session++;
      // What this consumer still owns is read again from its pending list and resent.
      inflight.clear();
    },
    detach() {
      sendUpstream = null;
      session++;
    },
    async sendEntries(key, entries, redelivery, mySession) {
      const poison: string[] = [];
      let ok = true;
      for (const [entryId, fields] of entries) {
        if (!fields) continue; // XAUTOCLAIM on Redis < 7 returns deleted entries as nil
        const record = recordOf(fields);
        if (!record) {
          // A poison entry (not written by a gateway) must not block the stream: logged and removed.
          log.warn({ key, entryId }, 'agents relay: malformed feedback entry removed (needs fields fid and body, as written by the gateway)');
          poison.push(entryId);
          continue;
        }
        if (!sendUpstream || session !== mySession || !sendUpstream(record, redelivery)) {
          ok = false;
          break;
        }
        inflight.set(record.feedbackId, { key, entryId, sentAt: Date.now(), userId: record.userId, projectGuid: record.projectGuid });
        metrics.feedbackSent.inc();
        if (redelivery) metrics.feedbackRedeliveries.inc();
      }
      metrics.feedbackInflight.set(inflight.size);
      await streams.remove(key, poison);
      return ok;
    },
    ack(feedbackIds, logError) {
      const byKey = new Map<string, { entryIds: string[]; pending: PendingEntry[] }>();
      for (const fid of feedbackIds) {
        const at = inflight.get(fid);
        if (!at) continue;
        inflight.delete(fid);
        let group = byKey.get(at.key);
        if (!group) byKey.set(at.key, (group = { entryIds: [], pending: [] }));
        group.entryIds.push(at.entryId);
        group.pending.push({ feedbackId: fid, userId: at.userId, projectGuid: at.projectGuid });
      }
      metrics.feedbackInflight.set(inflight.size);
      for (const [key, { entryIds: ids, pending }] of byKey) {
        streams.remove(key, ids).then(
          () => {
            metrics.feedbackAcked.inc(ids.length);
            // Gone from the stream: no longer pending (if this instance dies right here, the counts heal by age).
            options.ledger.release(pending);
          },
          // Still pending in the group: claimed and sent again after claimIdleMs; the agents-server dedupes.
          (err: unknown) => logError('agents relay: XACK failed; the feedback will be sent again', err),
        );
      }
    },
    inflight: () => inflight.size,
    forgetStale() {
      const before = Date.now() - 2 * options.claimIdleMs;
      for (const [fid, at] of inflight) if (at.sentAt < before) inflight.delete(fid);
      metrics.feedbackInflight.set(inflight.size);
    },
  };
}

/**
 * The read loop while a link is attached: first what this consumer read and nobody acked, then, in
 * turns, claims of stale entries (any consumer's) and reads of new ones, at most `maxInflight`
 * unacked at a time. Between links it waits for wake().
 */
function startReading(options: RedisOutboxOptions, streams: FeedbackStreams, sender: Sender, logError: LogError) {
  const { log } = options;
  let running = true;
  let wakeReader: (() => void) | null = null;
  let nextCleanupAt = 0;

  /** After a (re)connect: everything this consumer read and nobody acked goes out again first. */
  async function resendOwnPending(mySession: number): Promise<void> {
    for (const key of streams.keys) {
      let after = '0';
      for (;;) {
        const entries = (await streams.readGroup([key], [after], 200))[0]?.[1] ?? [];
        if (!entries.length) break;
        if (!(await sender.sendEntries(key, entries, true, mySession))) return;
        after = entries[entries.length - 1]![0];
      }
    }
  }

  /** Takes over entries idle for claimIdleMs (any consumer's, this one's included) and sends them again. */
  async function claimStale(mySession: number): Promise<void> {
    for (const key of streams.keys) {
      let cursor = '0-0';
      for (let round = 0; round < 50; round++) {
        const [next, entries] = await streams.claim(key, cursor);
        if (entries.length) log.info({ key, count: entries.length }, 'agents relay: claimed unacked feedback for redelivery');
        if (entries.length && !(await sender.sendEntries(key, entries, true, mySession))) return;
        if (next === '0-0') break;
        cursor = next;
      }
    }
  }

  async function readNew(mySession: number): Promise<void> {
    const count = Math.max(1, Math.min(200, options.maxInflight - sender.inflight()));
    const keys = streams.keys;
    if (!options.clustered) {
      // One blocking read over every shard, on the reader's own connection.
      for (const [key, entries] of await streams.readGroup(keys, keys.map(() => '>'), count, 1000)) if (!(await sender.sendEntries(key, entries, false, mySession))) return;
      return;
    }
    // Cluster: the shards live in different slots, and XREADGROUP cannot span slots.
    let any = false;
    for (const key of keys) {
      const entries = (await streams.readGroup([key], ['>'], count))[0]?.[1] ?? [];
      if (entries.length) any = true;
      if (!(await sender.sendEntries(key, entries, false, mySession))) return;
    }
    if (!any) await sleep(50);
  }

  /** One link's session: own pending first, then claims and new reads in turns until the link goes. */
  async function serve(mySession: number): Promise<void> {
    await streams.ensureGroups();
    await resendOwnPending(mySession);
    let nextClaimAt = 0;
    while (running && sender.session() === mySession) {
      if (Date.now() >= nextClaimAt) {
        nextClaimAt = Date.now() + Math.max(100, options.claimIdleMs / 2);
        sender.forgetStale();
        await claimStale(mySession);
        if (Date.now() >= nextCleanupAt) {
          nextCleanupAt = Date.now() + 60_000;
          await streams.removeGoneConsumers();
        }
      }
      if (sender.inflight() >= options.maxInflight) {
        sender.forgetStale();
        await sleep(20);
        continue;
      }
      await readNew(mySession);
    }
  }

  async function run(): Promise<void> {
    while (running) {
      if (!sender.linked()) {
        await new Promise<void>((resolve) => (wakeReader = resolve));
        wakeReader = null;
        continue;
      }
      const mySession = sender.session();
      try {
        await serve(mySession);
      } catch (err) {
        if (!running) return;
        // NOGROUP: Redis lost the group (restarted without persistence); create it again.
        if (String((err as Error).message).includes('NOGROUP')) streams.forgetGroups();
        logError('agents relay: feedback read failed; retrying', err);
        await sleep(500);
      }
    }
  }
  const loop = run();

  return {
    /** A link was attached: read for it. */
    wake() {
      wakeReader?.();
    },
    /** Ends the loop; the reader's connection is closed to cut a blocking read short. */
    async stop() {
      running = false;
      wakeReader?.();
      options.reader.disconnect();
      await loop.catch(() => {});
    },
  };
}
