import type { AppendResult, HistoryCheck, HistoryPage, IdempotentPublish, NewEvent } from '../bus/bus.js';
import type { MessagePort } from 'node:worker_threads';
import type { Principal } from '../auth/principal.js';
import type { EdgeStateMemory } from '../edge/admission.js';
import type { ErrorCode } from '../errors.js';
import type { Config } from '../config.js';
import type { ProjectEvent } from '../protocol/events.js';
import type { AgentsHubMessage, AgentsHubRequest } from './agents-hub.js';
import type { AdminHubMessage, AdminHubRequest } from './admin-hub.js';

/**
 * Messages between the main thread (the pool) and its worker threads, over each Worker's own
 * MessagePort. A port delivers in order, which is what keeps a project's events in order per worker.
 */

/** What a worker thread starts from (workerData). */
export interface WorkerStart {
  readonly workerId: number;
  /** The parsed configuration (workers never read the environment), with the port to share. */
  readonly config: Config;
  /** True: the in-process bus lives in the main thread and this worker reaches it by messages. */
  readonly sharedMemoryBus: boolean;
  /** The process's edge state (caps, rate buckets, penalties), in shared memory every worker opens. */
  readonly edgeState: EdgeStateMemory;
  /** With the in-process bus: the channel a worker's appends are made on synchronously (see sync-calls.ts). */
  readonly appendChannel: SyncChannel | null;
}

/** A MessagePort (transferred to the worker) and the word the main thread flips when its answer is on it. */
export interface SyncChannel {
  readonly port: MessagePort;
  readonly flag: SharedArrayBuffer;
}

/** A synchronous call's answer on a SyncChannel; `requestId` tells a late answer from the current one. */
export type SyncReply = { readonly requestId: number } & (
  | { readonly ok: true; readonly value: MainResult }
  /** code and retryAfterS: a GatewayError's, so a refusal (IDEMPOTENCY_KEYS_EXHAUSTED, OVERLOADED, …) keeps its meaning and its Retry-After. */
  | { readonly ok: false; readonly message: string; readonly code?: ErrorCode | undefined; readonly retryAfterS?: number | undefined }
);

/** Bus calls a worker makes on the main thread's in-process bus. */
export type BusRequest =
  | { readonly op: 'publish'; readonly guid: string; readonly events: readonly NewEvent[]; readonly keyed?: IdempotentPublish | undefined }
  | { readonly op: 'watch'; readonly guid: string }
  | { readonly op: 'range'; readonly guid: string; readonly afterId: string; readonly count: number }
  | { readonly op: 'rangeBack'; readonly guid: string; readonly beforeId: string | null; readonly count: number }
  | { readonly op: 'checkHistory'; readonly guid: string; readonly afterId: string }
  /** Answered at once: its answer comes after every event posted to the worker before it. */
  | { readonly op: 'catchUp' };

/** Ticket calls on the main thread's ticket store (no Redis): a ticket issued by one worker is redeemed on any. */
export type TicketRequest = { readonly op: 'issueTicket'; readonly principal: Principal } | { readonly op: 'redeemTicket'; readonly ticket: string };

/** Everything a worker asks of the main thread and waits for. */
export type MainRequest = BusRequest | TicketRequest;

export type MainResult = AppendResult | string | HistoryPage | HistoryCheck | Principal | null;

/** A metric as prom-client's getMetricsAsJSON() gives it (structured-cloneable). */
export type MetricJson = { name: string; help: string; type: string; aggregator?: string; values: unknown[] };

export type FromWorker =
  | { readonly kind: 'listening'; readonly port: number }
  | { readonly kind: 'start-failed'; readonly message: string }
  | { readonly kind: 'call'; readonly requestId: number; readonly request: MainRequest }
  | { readonly kind: 'bus-unwatch'; readonly guid: string }
  /** A worker answering GET /metrics asks for the whole process's metrics. */
  | { readonly kind: 'metrics-request'; readonly requestId: number }
  /** A worker's own metrics, answering the main thread's collect. */
  | { readonly kind: 'metrics-snapshot'; readonly collectId: number; readonly metrics: MetricJson[] }
  /** Answer to `drain`: this worker stopped accepting and answered its requests in flight. */
  | { readonly kind: 'drained' }
  /** The agents relay's cross-thread parts without Redis (agents-hub.ts). */
  | { readonly kind: 'agents-hub'; readonly request: AgentsHubRequest }
  /** The server API's actions and queries between threads without Redis (admin-hub.ts). */
  | { readonly kind: 'admin'; readonly request: AdminHubRequest }
  | { readonly kind: 'closed' };

export type ToWorker =
  | { readonly kind: 'reply'; readonly requestId: number; readonly ok: true; readonly value: MainResult }
  /** code: a GatewayError's code, so a refusal (IDEMPOTENCY_KEY_REUSED, …) keeps its meaning across the port. */
  | { readonly kind: 'reply'; readonly requestId: number; readonly ok: false; readonly message: string; readonly code?: ErrorCode | undefined; readonly retryAfterS?: number | undefined }
  | { readonly kind: 'bus-events'; readonly guid: string; readonly events: ProjectEvent[] }
  | { readonly kind: 'collect-metrics'; readonly collectId: number }
  /** text null: the main thread could not aggregate (the worker answers 500). */
  | { readonly kind: 'metrics-reply'; readonly requestId: number; readonly text: string | null }
  /** First half of a stop: stop accepting, answer what is in flight, keep the sockets open (see Gateway.drain). */
  | { readonly kind: 'drain' }
  /** Second half, sent once every worker drained: deliver what the bus holds, close the sockets, end. */
  | { readonly kind: 'agents-hub'; readonly message: AgentsHubMessage }
  | { readonly kind: 'admin'; readonly message: AdminHubMessage }
  | { readonly kind: 'shutdown' };
