import type { Redis } from 'ioredis';
import type { RedisClient } from '../redis/client.js';
import type { XReadReply } from './redis-entries.js';
import type { WatchSet } from './redis-watches.js';

/**
 * Poll mode (REDIS_WAKEUP=poll, or when Redis refuses CONFIG SET; docs/redis-wakeup.md).
 * Standalone: one blocking XREAD carrying every watched key, on the reader's own connection,
 * interrupted with CLIENT UNBLOCK when a project is added. Cluster: one non-blocking XREAD per
 * watched slot per round, sleeping briefly when all were empty (a read cannot block across slots).
 */
export interface PollReads {
  /** One read round. */
  read(): Promise<void>;
  /** A project was added: the round in flight must not wait for its block to end. */
  kick(): void;
  /** The reader's connection failed: its client id is unknown until the next read asks. */
  lost(): void;
}

export function createPollReads(options: {
  watches: WatchSet;
  /** The reader's own connection. */
  reader: RedisClient;
  /** Sends CLIENT UNBLOCK (standalone). */
  cmd: RedisClient;
  clustered: boolean;
  readCount: number;
  /** How long one blocking XREAD waits before it is re-issued (standalone). */
  blockMs: number;
  /** Sleep after a Cluster round that found nothing. */
  clusterPollMs: number;
  /** The reader's sleep (a new watch cuts it short). */
  sleep(ms: number): Promise<void>;
  /** Whether the bus still runs. */
  running(): boolean;
  /** Redis answered a read. */
  answered(): void;
}): PollReads {
  const { watches, reader, readCount } = options;
  let readerClientId: number | null = null;
  /** Bumped whenever the watched set grows; a read issued with an older generation is stale. */
  let generation = 0;
  let inflightGeneration = -1;
  reader.on('close', () => (readerClientId = null));

  async function readStandalone(): Promise<void> {
    const r = reader as Redis;
    if (readerClientId === null) readerClientId = Number(await r.client('ID'));
    const ws = [...watches.values()];
    const byKey = new Map(ws.map((w) => [w.key, w]));
    inflightGeneration = generation;
    try {
      const reply = (await r.xread('COUNT', readCount, 'BLOCK', options.blockMs, 'STREAMS', ...ws.map((w) => w.key), ...ws.map((w) => w.lastId))) as XReadReply;
      options.answered();
      watches.deliver(reply, byKey);
    } finally {
      inflightGeneration = -1;
    }
  }

  async function readCluster(): Promise<void> {
    const seenGeneration = generation;
    const { returned } = await watches.readEach([...watches.values()], reader);
    options.answered();
    if (returned === 0 && seenGeneration === generation) await options.sleep(options.clusterPollMs);
  }

  return {
    read: () => (options.clustered ? readCluster() : readStandalone()),
    kick() {
      generation++;
      if (options.clustered) return;
      const target = generation;
      const unblock = () => {
        if (!options.running() || inflightGeneration === -1 || inflightGeneration >= target || readerClientId === null) return;
        (options.cmd as Redis).client('UNBLOCK', readerClientId).then(
          // 0: the XREAD had not reached Redis yet; try again shortly.
          (n) => {
            if (Number(n) === 0) setTimeout(unblock, 2);
          },
          () => {},
        );
      };
      unblock();
    },
    lost() {
      readerClientId = null;
    },
  };
}
