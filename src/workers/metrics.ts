import { AggregatorRegistry, Gauge, type Registry } from 'prom-client';
import type { MetricJson } from './messages.js';

/**
 * One /metrics for the whole process from every worker's registry: counters, gauges and histograms
 * are summed over workers (connections, deliveries, heap of each thread's isolate...). Two kinds are
 * not sums: process_* values (CPU, RSS, open fds, start time) are the same process read by every
 * thread, so the first is kept; bus_ready is the least ready worker; the feedback backlog sampled
 * from Redis is one figure every worker reads, kept once, and the oldest feedback's age is the oldest.
 */
export async function aggregateWorkerMetrics(snapshots: MetricJson[][], nodeId: string, options: { sharedFeedbackStore: boolean }): Promise<{ text: string }> {
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
