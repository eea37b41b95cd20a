import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Metrics } from '../metrics.js';

// The feedback outbox: what the relay asks of it, and the record it stores and sends upstream. Two
// implementations: outbox-redis.ts (durable: feedback streams read through a consumer group) and
// outbox-memory.ts (no Redis: a bounded queue in this process).

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

/** Sends one feedback upstream, over the link to the agents-server; false when the link is not open (the outbox keeps it). */
export type SendUpstream = (record: FeedbackRecord, redelivery: boolean) => boolean;

export interface Outbox {
  /** True with Redis: accepted feedback survives restarts of every gateway. */
  readonly durable: boolean;
  /**
   * Stores the feedback; resolves once it is stored (appended to a feedback stream with Redis).
   * Throws FEEDBACK_QUEUE_FULL when the store is at its bound, UNAVAILABLE when Redis does not answer:
   * in both cases nothing was stored.
   */
  accept(input: FeedbackInput): Promise<{ feedbackId: string; durable: boolean }>;
  /** The link is open: start sending upstream through `sendUpstream` (own unacked feedback first). */
  attach(sendUpstream: SendUpstream): void;
  /** The link is gone: stop sending; everything unacked stays and is sent again later. */
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

/** A new record of accepted feedback: its id, when and where it was accepted. */
export function newRecord(input: FeedbackInput, nodeId: string): FeedbackRecord {
  return { ...input, feedbackId: randomUUID(), acceptedAt: new Date().toISOString(), origin: nodeId };
}
