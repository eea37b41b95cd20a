import { AggregatorRegistry, Gauge, type Registry } from 'prom-client';
import type { MetricJson } from './messages.js';

/**
 * One /metrics for the whole process from every worker's registry: counters, gauges and histograms
 * are summed over workers (connections, deliveries, heap of each thread's isolate...). Two kinds are
 * not sums: process_* values (CPU, RSS, open fds, start time) are the same process read by every
 * thread, so the first is kept; bus_ready is the least ready worker.
 */
export async function aggregateWorkerMetrics(snapshots: MetricJson[][], nodeId: string): Promise<{ text: string }> {
  for (const metrics of snapshots) {
    for (const metric of metrics) {
      if (metric.name.startsWith('process_')) metric.aggregator = 'first';
      else if (metric.name === 'bus_ready') metric.aggregator = 'min';
      else metric.aggregator ??= 'sum';
    }
  }
  const registry = AggregatorRegistry.aggregate(snapshots as Parameters<typeof AggregatorRegistry.aggregate>[0]) as Registry;
  const workers = new Gauge({ name: 'gateway_workers', help: 'Worker threads whose metrics this answer sums', labelNames: ['node'], registers: [registry] });
  workers.set({ node: nodeId }, snapshots.length);
  // Same Prometheus text format as a single gateway's registry (routes.ts sets the content type).
  return { text: await registry.metrics() };
}
