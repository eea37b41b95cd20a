import { quotaError, type FeedbackLedger, type PendingQuotas } from './feedback-quotas.js';
import { newRecord, type SendUpstream, type Outbox, type OutboxCommon, type FeedbackRecord } from './outbox.js';

interface QueuedFeedback {
  readonly record: FeedbackRecord;
  sentAt: number | null;
  sends: number;
}

/**
 * Without Redis: a bounded in-memory queue used for feedback only. Same delivery rules as the
 * durable outbox (kept until acked, sent again after a link loss or claimIdleMs without an ack), but
 * a restart of this process loses what it holds; the reply to the user says `durable: false`.
 * The bounds (FEEDBACK_MEMORY_QUEUE and the per-user and per-project quotas) are the ledger's: one
 * per process, shared by every worker thread's queue (feedback-quotas.ts, workers/agents-hub.ts).
 */
export function createMemoryOutbox(options: OutboxCommon & { ledger: FeedbackLedger; quotas: PendingQuotas; maxQueued: number }): Outbox {
  const { metrics } = options;
  const queue = new Map<string, QueuedFeedback>(); // insertion order = acceptance order
  let sendUpstream: SendUpstream | null = null;

  function pump(): void {
    if (!sendUpstream) return;
    const staleBefore = Date.now() - options.claimIdleMs;
    let inflight = 0;
    for (const q of queue.values()) if (q.sentAt !== null && q.sentAt > staleBefore) inflight++;
    for (const q of queue.values()) {
      if (q.sentAt !== null && q.sentAt > staleBefore) continue;
      if (inflight >= options.maxInflight) break;
      const redelivery = q.sends > 0;
      if (!sendUpstream(q.record, redelivery)) break;
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
      const record = newRecord(input, options.nodeId);
      const refusal = await options.ledger.reserve(record);
      if (refusal) throw quotaError(refusal, { ...options.quotas, store: `FEEDBACK_MEMORY_QUEUE ${options.maxQueued}` });
      queue.set(record.feedbackId, { record, sentAt: null, sends: 0 });
      metrics.feedbackAccepted.inc();
      sample();
      // Sent after the user's reply goes out (next tick), in acceptance order.
      setImmediate(pump);
      return { feedbackId: record.feedbackId, durable: false };
    },
    attach(send) {
      sendUpstream = send;
      for (const q of queue.values()) q.sentAt = null;
      pump();
    },
    detach() {
      sendUpstream = null;
    },
    ack(feedbackIds) {
      const acked = [];
      for (const fid of feedbackIds) {
        const q = queue.get(fid);
        if (q && queue.delete(fid)) acked.push(q.record);
      }
      // No longer pending: its user's and project's quotas have room again.
      options.ledger.release(acked);
      metrics.feedbackAcked.inc(acked.length);
      sample();
      pump();
    },
    async close() {
      clearInterval(timer);
      sendUpstream = null;
      options.ledger.release([...queue.values()].map((q) => q.record));
      if (queue.size) options.log.warn({ lost: queue.size }, 'agents relay: shutting down with undelivered feedback in memory (no Redis): it is lost');
    },
  };
}
