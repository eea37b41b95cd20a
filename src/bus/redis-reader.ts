import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { BusErrorKind } from '../metrics.js';
import { redisRetryStrategy, type RedisClient } from '../redis/client.js';
import { isEventId, ZERO_ID } from '../protocol/event-id.js';
import { readStreamInfo, type StreamEntry } from './redis-entries.js';
import { createNotifyReads, type NotifyReads } from './redis-notify.js';
import { createPollReads, type PollReads } from './redis-poll.js';
import { startResync } from './redis-resync.js';
import { createWatchSet, type WatchSet } from './redis-watches.js';

export interface StreamReaderOptions {
  redis: NonNullable<Config['redis']>;
  nodeId: string;
  /** Short commands: a new watch's head, CLIENT UNBLOCK, the catch-up reads, the resync. */
  cmd: RedisClient;
  /** The reader's own connection: blocking reads never delay publishes or history reads. */
  reader: RedisClient;
  log: Logger;
  /** Counts the error by kind and logs it (throttled). */
  reportError(kind: BusErrorKind, message: string, err: unknown): void;
  /** New entries of a watched project, in id order, each once. */
  onEntries(guid: string, entries: StreamEntry[]): void;
  /** As in RedisBusOptions (with their defaults filled in). */
  readCount: number; blockMs: number; clusterPollMs: number; resyncMs: number; topologyRefreshMs: number; healthTimeoutMs: number;
}

export interface StreamReader {
  /** Reads the project's stream from its head on; resolves with that head ('0-0' if none). Rejects (Redis's error) if the head could not be read. */
  watch(guid: string): Promise<string>;
  unwatch(guid: string): void;
  /** Reads every watched stream to its end now, on the command connection (see EventBus.catchUp). */
  catchUp(timeoutMs: number): Promise<void>;
  /** The reader's share of readiness: its last read went through, and it is not stuck (the watchdog). */
  healthy(): boolean;
  close(): void;
}

/**
 * Reads the streams of the watched projects from the last id delivered, in one loop, woken by
 * keyspace notifications (redis-notify.ts) or reading in rounds (redis-poll.ts); falls back from
 * the first to the second when Redis refuses to publish notifications. docs/redis-wakeup.md.
 *
 * This function builds the parts and the loop's state; the loop and its steps are the functions
 * below it, each over that one state object (ReadLoop).
 */
export function createStreamReader(options: StreamReaderOptions): StreamReader {
  const { cmd, reader, log, reportError } = options;
  const clustered = !!options.redis.clusterNodes;
  /** A read that has not finished in this long counts as a stuck reader. */
  const readStallMs = options.blockMs + 10000;
  const watches = createWatchSet({ prefix: options.redis.prefix, clustered, readCount: options.readCount, onEntries: options.onEntries });
  const state: ReadLoopState = {
    mode: options.redis.wakeup === 'poll' ? 'poll' : 'notify',
    running: true,
    readerHealthy: false,
    lastReadAt: Date.now(),
    passFailure: null,
    failures: 0,
  };
  const nap = createNap();

  reader.on('error', (err) => reportError('connection', 'redis reader connection error', err));
  reader.on('close', () => (state.readerHealthy = false));
  reader.on('ready', () => (state.readerHealthy = true));

  // A refusal comes with a Redis answer, so after `loop` below exists.
  const fallBackToPolling = (node: string, reason: string) => pollFromNowOn(loop, node, reason);
  const notify = createNotifyReads({ redis: options.redis, nodeId: options.nodeId, cmd, reader, watches, subscribe: state.mode === 'notify', wake: nap.wake, onRefused: fallBackToPolling, reportError });
  const poll = createPollReads({
    watches,
    reader,
    cmd,
    clustered,
    readCount: options.readCount,
    blockMs: options.blockMs,
    clusterPollMs: options.clusterPollMs,
    sleep: nap.sleep,
    running: () => state.running,
    answered: () => (state.readerHealthy = true),
  });
  const resync = startResync({
    cmd,
    reader,
    clustered,
    wakeup: notify.wakeup,
    watching: () => watches.size > 0,
    lastIdOf: (key) => watches.byKey(key)?.lastId,
    markDirty: (key) => notify.markDirty(watches.byKey(key)),
    fallBackToPolling,
    log,
    reportError,
    healthTimeoutMs: options.healthTimeoutMs,
    resyncMs: options.resyncMs,
    topologyRefreshMs: options.topologyRefreshMs,
  });

  const loop: ReadLoop = { state, watches, notify, poll, nap, clustered, log, reportError, passEnded: (err?: unknown) => passEnded(loop, err) };
  void runReadLoop(loop);

  return {
    watch: (guid) => watchFromHead(loop, cmd, guid),
    unwatch(guid) {
      const w = watches.get(guid);
      if (!w) return;
      watches.forget(w);
      notify.remove(w);
    },
    async catchUp(timeoutMs) {
      // On the command connection: the reader may be blocked in a 2 s XREAD.
      const deadline = Date.now() + timeoutMs;
      while (state.running && watches.size > 0 && cmd.status === 'ready' && Date.now() < deadline) {
        if ((await notify.readEach([...watches.values()], cmd)) === 0) return;
      }
    },
    /**
     * With the watchdog (AnyCable #275: a reader that silently stops). Polling: a read round must
     * complete every block plus slack. Notifications: a read pass must not hang, and every
     * subscriber connection that has keys must be connected and subscribed.
     */
    healthy() {
      if (!state.readerHealthy) return false;
      if (state.mode === 'poll') return watches.size === 0 || Date.now() - state.lastReadAt < readStallMs;
      return notify.alive(readStallMs, options.healthTimeoutMs);
    },
    close() {
      state.running = false;
      resync.close();
      notify.stop();
      nap.wake();
      watches.clear();
    },
  };
}

/** What the read loop's steps share: owned by one createStreamReader, changed only by the functions below and its connection events. */
interface ReadLoopState {
  /** 'notify': woken by keyspace notifications; 'poll': read rounds. Starts as notify unless configured otherwise. */
  mode: 'notify' | 'poll';
  running: boolean;
  /** The reader's last read went through and its connection is up: its share of readiness. */
  readerHealthy: boolean;
  /** When a read round last completed: a reader stuck longer than a block plus slack is unhealthy (AnyCable #275). */
  lastReadAt: number;
  /** A notify-mode pass that failed, thrown by the next step (so the loop backs off as for a poll round). */
  passFailure: { err: unknown } | null;
  /** Reads that failed in a row: the back-off grows with it. */
  failures: number;
}

/** The loop's state and the parts its steps drive. */
interface ReadLoop {
  readonly state: ReadLoopState;
  readonly watches: WatchSet;
  readonly notify: NotifyReads;
  readonly poll: PollReads;
  readonly nap: Nap;
  readonly clustered: boolean;
  readonly log: Logger;
  reportError(kind: BusErrorKind, message: string, err: unknown): void;
  /** Told when a notify-mode pass is over: passEnded over this loop, one function for every pass. */
  passEnded(err?: unknown): void;
}

/** The loop's sleep, which a new watch, a notification, an ended pass or close() cuts short. */
interface Nap {
  sleep(ms: number): Promise<void>;
  wake(): void;
}

function createNap(): Nap {
  let wake: (() => void) | null = null;
  return {
    sleep: (ms) =>
      new Promise<void>((resolve) => {
        const t = setTimeout(() => ((wake = null), resolve()), ms);
        wake = () => (clearTimeout(t), (wake = null), resolve());
      }),
    wake: () => wake?.(),
  };
}

async function runReadLoop(loop: ReadLoop): Promise<void> {
  const { state } = loop;
  while (state.running) {
    if (loop.watches.size === 0 && !loop.notify.hasDirty()) {
      await loop.nap.sleep(60000);
      state.lastReadAt = Date.now();
      continue;
    }
    try {
      await readStep(loop);
      state.lastReadAt = Date.now();
      // Notify mode: a started pass has not succeeded yet (passEnded says when it has).
      if (state.mode === 'poll') state.failures = 0;
    } catch (err) {
      if (!state.running) break;
      state.readerHealthy = false;
      loop.poll.lost();
      loop.reportError('read', 'stream read failed; retrying from the last delivered ids', err);
      await loop.nap.sleep(redisRetryStrategy(++state.failures));
    }
  }
}

/**
 * One step of the loop: a read round (poll), or starting a read pass (notify: passes overlap,
 * see startPass), or a sleep until there is something to read or a pass ended.
 */
async function readStep(loop: ReadLoop): Promise<void> {
  const { state, notify } = loop;
  if (state.mode === 'poll') return loop.poll.read();
  if (state.passFailure) {
    const { err } = state.passFailure;
    state.passFailure = null;
    throw err;
  }
  if (notify.canStart()) return notify.startPass(loop.passEnded);
  if (!notify.reading()) state.lastReadAt = Date.now();
  return loop.nap.sleep(60000);
}

/** A notify-mode pass is over: a success resets the back-off, a failure is thrown by the next step. */
function passEnded(loop: ReadLoop, err?: unknown): void {
  const { state } = loop;
  if (err === undefined) {
    state.readerHealthy = true;
    state.failures = 0;
  } else state.passFailure ??= { err };
  loop.nap.wake();
}

/** Redis refused to enable keyspace notifications: the loop reads in rounds from now on. */
function pollFromNowOn(loop: ReadLoop, node: string, reason: string): void {
  if (loop.state.mode === 'poll') return;
  loop.state.mode = 'poll';
  // The one line an operator needs: why, and what it costs (docs/redis-wakeup.md).
  loop.log.warn(
    { node, reason, cost: loop.clustered ? 'one XREAD per watched slot every 5 ms while idle' : 'one XREAD carrying every watched key per read round' },
    'redis keyspace notifications cannot be enabled (CONFIG SET refused); falling back to polling every watched stream',
  );
  loop.notify.stop();
  loop.nap.wake();
}

/**
 * The newest id the stream ever issued (0-0 when there is no stream): the head a room starts from.
 * Not its last entry's id: once the newest entries were deleted or the whole stream trimmed (XTRIM
 * MAXLEN 0), that is older than ids clients have seen, and a client resuming from one of those would
 * wait for this instance to "catch up" with an id it will never read, refused UNAVAILABLE until the
 * next event. Nothing can be appended between the two ids, so reading from either misses nothing.
 */
async function lastGeneratedId(cmd: RedisClient, key: string): Promise<string> {
  const id = (await readStreamInfo(cmd, key))?.get('last-generated-id');
  return typeof id === 'string' && isEventId(id) ? id : ZERO_ID;
}

/** Starts reading the project's stream from its head (see StreamReader.watch). */
async function watchFromHead(loop: ReadLoop, cmd: RedisClient, guid: string): Promise<string> {
  const { watches, notify } = loop;
  const w = watches.add(guid);
  try {
    w.lastId = await lastGeneratedId(cmd, w.key);
  } catch (err) {
    watches.forget(w);
    throw err;
  }
  // Only now that lastId is the head: the read that follows the subscription starts there.
  if (watches.current(w)) {
    if (notify.wakeup()) notify.add(w);
    else {
      loop.poll.kick();
      loop.nap.wake();
    }
  }
  return w.lastId;
}
