import type { Registry } from 'prom-client';
import type { MetricJson, ToWorker } from './messages.js';

/** How long a /metrics answer waits for a worker's numbers before it sums the ones it has. */
const METRICS_COLLECT_TIMEOUT_MS = 2000;

/**
 * One /metrics for the whole process from every worker's registry: counters, gauges and histograms
 * are summed over workers (connections, deliveries, heap of each thread's isolate...). Two kinds are
 * not sums: process_* values (CPU, RSS, open fds, start time) are the same process read by every
 * thread, so the first is kept; bus_ready is the least ready worker; the feedback backlog sampled
 * from Redis is one figure every worker reads, kept once, and the oldest feedback's age is the oldest.
 */
export async function aggregateWorkerMetrics(snapshots: MetricJson[][], nodeId: string, options: { sharedFeedbackStore: boolean }): Promise<{ text: string }> {
  // Loaded at the first scrape, not when the pool starts: the main thread needs prom-client for nothing
  // else, and every start of a WORKERS>1 process paid for loading it (its threads have their own).
  const { AggregatorRegistry, Gauge } = await import('prom-client');
  for (const metrics of snapshots) {
    for (const metric of metrics) {
      if (metric.name.startsWith('process_')) metric.aggregator = 'first';
      else if (metric.name === 'bus_ready') metric.aggregator = 'min';
      // Sampled from the feedback streams every worker reads (Redis): each reports the same figure.
      // Without Redis each worker's queue is its own, and the pending figures add up.
      else if (metric.name === 'feedback_pending') metric.aggregator = options.sharedFeedbackStore ? 'max' : 'sum';
      else if (metric.name === 'feedback_oldest_undelivered_age_seconds' || metric.name === 'fanout_queue_delay_seconds') metric.aggregator = 'max';
      else metric.aggregator ??= 'sum';
    }
  }
  const registry = AggregatorRegistry.aggregate(snapshots as Parameters<typeof AggregatorRegistry.aggregate>[0]) as Registry;
  const workers = new Gauge({ name: 'gateway_workers', help: 'Worker threads whose metrics this answer sums', labelNames: ['node'], registers: [registry] });
  workers.set({ node: nodeId }, snapshots.length);
  // Same Prometheus text format as a single gateway's registry (routes.ts sets the content type).
  return { text: await registry.metrics() };
}

/**
 * /metrics of a worker pool: one collect round per request, sent to the workers serving then,
 * answered with whatever arrived within METRICS_COLLECT_TIMEOUT_MS, summed.
 */
export function createMetricsCollector(serving: () => ((message: ToWorker) => void)[], nodeId: string, options: { sharedFeedbackStore: boolean }) {
  const collects = new Map<number, { snapshots: MetricJson[][]; expected: number; done: () => void }>();
  let nextCollect = 1;
  return {
    async collect(): Promise<{ text: string }> {
      const collectId = nextCollect++;
      const snapshots: MetricJson[][] = [];
      const targets = serving();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, METRICS_COLLECT_TIMEOUT_MS);
        collects.set(collectId, { snapshots, expected: targets.length, done: () => (clearTimeout(timer), resolve()) });
        for (const send of targets) send({ kind: 'collect-metrics', collectId });
        if (targets.length === 0) resolve();
      });
      collects.delete(collectId);
      return aggregateWorkerMetrics(snapshots.filter((s) => s.length > 0), nodeId, options);
    },
    /** A worker's snapshot for a collect round (late ones are dropped). */
    received(collectId: number, metrics: MetricJson[]): void {
      const collect = collects.get(collectId);
      if (!collect) return;
      collect.snapshots.push(metrics);
      if (collect.snapshots.length >= collect.expected) collect.done();
    },
  };
}
