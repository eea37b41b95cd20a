// The buses under the EventBus contract test (test/bus.contract.test.ts), each behind one shape: the
// bus as its callers see it, a journal of what its sink received (and when calls resolved), and a
// second writer on the same log.
//
//   memory      createMemoryBus in the test's thread.
//   redis       createRedisBus on a real redis-server (standalone or Cluster); the second writer is a
//               producer on its own connection, as another gateway or a backend would be.
//   worker-port the bus host (createBusHost + serveSyncCalls) in the test's thread, the port bus in a
//               real worker thread (port-bus-worker.mjs, on the compiled dist/ modules), driven
//               through a small RPC. The test's thread answers the worker's synchronous appends while
//               it awaits the RPC, as the pool's main thread does. The second writer is another
//               worker, as the host sees it.
import { Worker } from 'node:worker_threads';
import pino from 'pino';
import { createMemoryBus } from '../../src/bus/memory.js';
import { createProducer } from '../../src/bus/producer.js';
import { createRedisBus } from '../../src/bus/redis.js';
import type { AppendResult, EventBus, EventSink, IdempotentPublish, NewEvent } from '../../src/bus/bus.js';
import { GatewayError, type ErrorCode } from '../../src/errors.js';
import type { ProjectEvent } from '../../src/protocol/events.js';
import { DEFAULT_DATA_LIMITS } from '../../src/protocol/limits.js';
import { closeRedisClient, createRedisClient } from '../../src/redis/client.js';
import { eventsKey } from '../../src/redis/keys.js';
import { createBusHost } from '../../src/workers/bus-host.js';
import type { FromWorker, MainResult, ToWorker } from '../../src/workers/messages.js';
import { serveSyncCalls } from '../../src/workers/sync-calls.js';

/** What the sink received, in order, interleaved with the moments calls resolved (in the bus's own thread). */
export type JournalEntry =
  | { readonly kind: 'batch'; readonly guid: string; readonly events: readonly ProjectEvent[] }
  | { readonly kind: 'mark'; readonly method: string; readonly args: readonly unknown[]; readonly value: unknown };

export class Journal {
  readonly entries: JournalEntry[] = [];

  batch(guid: string, events: readonly ProjectEvent[]): void {
    this.entries.push({ kind: 'batch', guid, events });
  }

  /** The batches of one project, from entry `from` on. */
  batches(guid: string, from = 0): ProjectEvent[][] {
    const out: ProjectEvent[][] = [];
    for (const e of this.entries.slice(from)) if (e.kind === 'batch' && e.guid === guid) out.push([...e.events]);
    return out;
  }

  /** The ids the sink received for one project, in order (repeats included), from entry `from` on. */
  ids(guid: string, from = 0): string[] {
    return this.batches(guid, from).flatMap((b) => b.map((e) => e.id));
  }

  /** Every project the sink received a batch for. */
  guids(): Set<string> {
    return new Set(this.entries.flatMap((e) => (e.kind === 'batch' ? [e.guid] : [])));
  }

  /** Index of the last mark of `method` (for `guid` when given), or -1. */
  lastMark(method: string, guid?: string): number {
    for (let i = this.entries.length - 1; i >= 0; i--) {
      const e = this.entries[i]!;
      if (e.kind === 'mark' && e.method === method && (guid === undefined || e.args[0] === guid)) return i;
    }
    return -1;
  }
}

type Method = 'publish' | 'watch' | 'unwatch' | 'range' | 'rangeBack' | 'checkHistory' | 'catchUp' | 'isReady' | 'waitUntilReady' | 'close';
/** One EventBus call: its name and arguments. */
export type Call = { [M in Method]: [M, ...Parameters<EventBus[M]>] }[Method];

export interface BusSubject {
  readonly name: string;
  /** The bus as its callers see it (for worker-port: a proxy whose every call runs in the worker). */
  readonly bus: EventBus;
  readonly journal: Journal;
  /**
   * Runs calls one after another in the bus's own thread, each awaited before the next starts and
   * nothing else run in between (for worker-port: inside one task of the worker's event loop, as a
   * gateway's own code would). Resolves with their values.
   */
  sequence(calls: Call[]): Promise<unknown[]>;
  /** Whether publish() settled within the microtasks of its caller, seen in the bus's own thread. */
  publishSettlesInline(guid: string, events: readonly NewEvent[]): Promise<boolean>;
  /** Appends as another writer on the same log (another gateway, producer or worker thread). */
  peerPublish(guid: string, events: readonly NewEvent[], keyed?: IdempotentPublish): Promise<AppendResult>;
  /** Redis only: appends a raw entry, as any XADD can (e.g. one that is not a valid event). */
  readonly appendRaw?: (guid: string, fields: string[]) => Promise<string>;
  /** Closes everything the subject opened (the bus too, if the test did not). */
  dispose(): Promise<void>;
}

export interface SubjectOptions {
  /** Retention per project: STREAM_MAXLEN (approximate, whole stream nodes, on Redis). */
  readonly maxLen: number;
  /** IDEMPOTENCY_WINDOW_S (default 60), for the bus and its peer writer alike. */
  readonly idempotencyWindowS?: number;
  /** IDEMPOTENCY_KEYS_PER_PRODUCER (default its default), for the bus and its peer writer alike. */
  readonly keysPerProducer?: number;
}

export type OpenSubject = (options: SubjectOptions) => Promise<BusSubject>;

const IDEMPOTENCY_WINDOW_S = 60;

function memoryOptions(options: SubjectOptions) {
  return { maxLen: options.maxLen, maxEvents: 1_000_000, maxBytes: 256 * 1024 * 1024, idempotencyWindowS: options.idempotencyWindowS ?? IDEMPOTENCY_WINDOW_S, keysPerProducer: options.keysPerProducer };
}

function sinkInto(journal: Journal): EventSink {
  return (guid, events) => journal.batch(guid, events);
}

async function publishSettlesInline(bus: EventBus, guid: string, events: readonly NewEvent[]): Promise<boolean> {
  let settled = false;
  const done = bus.publish(guid, events).then(
    () => (settled = true),
    () => (settled = true),
  );
  for (let i = 0; i < 20; i++) await Promise.resolve();
  const inline = settled;
  await done;
  return inline;
}

/** `sequence` for a bus in the test's own thread: marks go into the journal as each call resolves. */
function inThread(bus: EventBus, journal: Journal): Pick<BusSubject, 'sequence' | 'publishSettlesInline'> {
  return {
    async sequence(calls) {
      const values: unknown[] = [];
      for (const [method, ...args] of calls) {
        const value = await (bus[method] as (...a: unknown[]) => unknown)(...args);
        values.push(value);
        journal.entries.push({ kind: 'mark', method, args: method === 'publish' ? [args[0]] : args, value: value ?? null });
      }
      return values;
    },
    publishSettlesInline: (guid, events) => publishSettlesInline(bus, guid, events),
  };
}

/** The bus's methods called through `sequence`, so every call leaves its mark in the journal. */
function journaledBus(bus: EventBus, sequence: BusSubject['sequence'], isReady: () => boolean = () => bus.isReady()): EventBus {
  const one = async <T>(call: Call) => (await sequence([call]))[0] as T;
  return {
    kind: bus.kind,
    appendsInline: bus.appendsInline,
    publish: (guid, events, keyed) => one(keyed === undefined ? ['publish', guid, events] : ['publish', guid, events, keyed]),
    watch: (guid) => one(['watch', guid]),
    unwatch(guid) {
      void sequence([['unwatch', guid]]);
    },
    range: (guid, afterId, count) => one(['range', guid, afterId, count]),
    rangeBack: (guid, beforeId, count) => one(['rangeBack', guid, beforeId, count]),
    checkHistory: (guid, afterId) => one(['checkHistory', guid, afterId]),
    catchUp: (timeoutMs) => one(['catchUp', timeoutMs]),
    isReady,
    waitUntilReady: (timeoutMs) => one(['waitUntilReady', timeoutMs]),
    close: () => one(['close']),
  };
}

// ---- memory ------------------------------------------------------------------------------------

export const openMemory: OpenSubject = async (options) => {
  const journal = new Journal();
  const raw = createMemoryBus(sinkInto(journal), memoryOptions(options));
  const calls = inThread(raw, journal);
  return {
    name: 'memory',
    bus: journaledBus(raw, calls.sequence),
    journal,
    ...calls,
    // One process, one log: another writer appends to this same bus.
    peerPublish: (guid, events, keyed) => raw.publish(guid, events, keyed),
    dispose: () => raw.close(),
  };
};

// ---- Redis -------------------------------------------------------------------------------------

export type RedisTarget = { readonly url: string } | { readonly clusterNodes: readonly { host: string; port: number }[] };

export function openRedis(target: RedisTarget, name = 'redis'): OpenSubject {
  return async (options) => {
    const journal = new Journal();
    const redis = { ...target, prefix: 'autocode' };
    const stream = { maxLen: options.maxLen, ttlS: 0, maxAgeS: 0, historyPageSize: 500 };
    const raw = createRedisBus(sinkInto(journal), {
      redis,
      stream,
      nodeId: `contract-${Math.random().toString(36).slice(2, 8)}`,
      log: pino({ level: 'silent' }),
      dataLimits: DEFAULT_DATA_LIMITS,
      idempotencyWindowS: options.idempotencyWindowS ?? IDEMPOTENCY_WINDOW_S,
      idempotencyKeysPerProducer: options.keysPerProducer,
    });
    const peerClient = createRedisClient(redis, 'contract-peer', 'cmd');
    const peer = createProducer(peerClient, {
      prefix: redis.prefix,
      maxLen: options.maxLen,
      ttlS: 0,
      origin: 'contract-peer',
      idempotencyWindowS: options.idempotencyWindowS ?? IDEMPOTENCY_WINDOW_S,
      idempotencyKeysPerProducer: options.keysPerProducer,
    });
    const calls = inThread(raw, journal);
    let closed = false;
    return {
      name,
      bus: journaledBus(raw, calls.sequence),
      journal,
      ...calls,
      peerPublish: (guid, events, keyed) => peer.append(guid, events as Parameters<typeof peer.append>[1], keyed),
      appendRaw: async (guid, fields) => String(await peerClient.xadd(eventsKey(redis.prefix, guid), '*', ...fields)),
      async dispose() {
        if (closed) return;
        closed = true;
        await Promise.all([raw.close(), closeRedisClient(peerClient)]);
      },
    };
  };
}

// ---- worker-port -------------------------------------------------------------------------------

type FromPortWorker =
  | FromWorker
  | { kind: 'hello'; busKind: EventBus['kind']; appendsInline: boolean; ready: boolean }
  | { kind: 'sink'; guid: string; events: ProjectEvent[] }
  | { kind: 'mark'; method: string; args: unknown[]; value: unknown }
  | { kind: 'rpc-result'; id: number; ok: true; values: unknown[]; ready: boolean }
  | { kind: 'rpc-result'; id: number; ok: false; message: string; code?: ErrorCode; retryAfterS?: number; ready: boolean };

const WORKER_ID = 1;
/** The id the host knows the second writer by: another worker thread of the same process. */
const PEER_WORKER_ID = 2;

export const openWorkerPort: OpenSubject = async (options) => {
  const journal = new Journal();
  const host = createBusHost(memoryOptions(options));
  const appends = serveSyncCalls((request) => host.run(WORKER_ID, request));
  const worker = new Worker(new URL('./port-bus-worker.mjs', import.meta.url), {
    workerData: { dist: new URL('../../dist/', import.meta.url).href, appendChannel: appends.channel },
    transferList: [appends.transfer],
  });
  const send = (message: ToWorker | { kind: 'rpc'; id: number; calls: Call[] }) => worker.postMessage(message);
  host.attach(WORKER_ID, send);

  const pending = new Map<number, { resolve: (values: unknown[]) => void; reject: (err: Error) => void }>();
  let nextId = 1;
  let ready = false;
  let failed: Error | null = null;
  let hello!: (m: Extract<FromPortWorker, { kind: 'hello' }>) => void;
  const started = new Promise<Extract<FromPortWorker, { kind: 'hello' }>>((resolve) => (hello = resolve));

  const fail = (err: Error) => {
    failed = err;
    for (const p of pending.values()) p.reject(err);
    pending.clear();
  };
  worker.on('error', fail);
  const exited = new Promise<void>((resolve) => worker.once('exit', () => (fail(new Error('port bus worker exited')), resolve())));

  // What the pool does for a worker (pool.ts answer()/spawn()), plus this RPC's own messages.
  worker.on('message', (message: FromPortWorker) => {
    switch (message.kind) {
      case 'call': {
        const { requestId, request } = message;
        const result = request.op === 'issueTicket' || request.op === 'redeemTicket' ? Promise.reject(new Error('no ticket store here')) : host.run(WORKER_ID, request);
        result.then(
          (value: MainResult) => send({ kind: 'reply', requestId, ok: true, value }),
          (err: unknown) => send({ kind: 'reply', requestId, ok: false, message: (err as Error).message, code: err instanceof GatewayError ? err.code : undefined }),
        );
        return;
      }
      case 'bus-unwatch':
        return host.unwatch(WORKER_ID, message.guid);
      case 'hello':
        ready = message.ready;
        return hello(message);
      case 'sink':
        return journal.batch(message.guid, message.events);
      case 'mark':
        journal.entries.push({ kind: 'mark', method: message.method, args: message.args, value: message.value });
        return;
      case 'rpc-result': {
        ready = message.ready;
        const p = pending.get(message.id);
        if (!p) return;
        pending.delete(message.id);
        if (message.ok) p.resolve(message.values);
        else p.reject(message.code ? new GatewayError(message.code, message.message, message.retryAfterS) : new Error(message.message));
        return;
      }
      default:
        throw new Error(`unexpected message from the port bus worker: ${message.kind}`);
    }
  });

  const sequence = (calls: Call[]): Promise<unknown[]> =>
    failed
      ? Promise.reject(failed)
      : new Promise((resolve, reject) => {
          const id = nextId++;
          pending.set(id, { resolve, reject });
          send({ kind: 'rpc', id, calls });
        });

  const { busKind, appendsInline } = await started;
  const proxy = journaledBus({ kind: busKind, appendsInline } as EventBus, sequence, () => ready);
  let disposed = false;
  return {
    name: 'worker-port',
    bus: proxy,
    journal,
    sequence,
    publishSettlesInline: async (guid, events) => (await sequence([['publishSettlesInline', guid, events] as unknown as Call]))[0] as boolean,
    peerPublish: (guid, events, keyed) => host.run(PEER_WORKER_ID, { op: 'publish', guid, events, keyed }) as Promise<AppendResult>,
    async dispose() {
      if (disposed) return;
      disposed = true;
      await worker.terminate();
      await exited;
      appends.close();
      await host.close();
    },
  };
};
