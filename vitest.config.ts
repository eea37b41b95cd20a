import { basename } from 'node:path';
import { defineConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

/**
 * The longest files, longest first (durations in a full run on 2 quiet cores, 2026-12-03: shutdown 87 s,
 * edge.api 45 s, edge 34 s, install 28 s, workers-promises 26 s, startup 25 s, admin.redis 23 s,
 * redis-wakeup 22 s, overload 22 s). Without vitest's results cache (a fresh clone, CI) files run
 * largest-first by size, and shutdown.test, short in lines and the longest in time, started last and
 * ran alone for a minute while the other worker idled. With a cache, the order is the same.
 */
const LONGEST_FIRST = ['shutdown', 'edge.api', 'edge', 'install', 'workers-promises', 'startup', 'admin.redis', 'redis-wakeup', 'overload'];

class LongestFirst extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const rank = (file: TestSpecification) => {
      const i = LONGEST_FIRST.indexOf(basename(file.moduleId).replace(/\.test\.ts$/, ''));
      return i < 0 ? LONGEST_FIRST.length : i;
    };
    const order = await super.sort(files);
    return order.map((file, i) => ({ file, i })).sort((a, b) => rank(a.file) - rank(b.file) || a.i - b.i).map(({ file }) => file);
  }
}

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Two cores: more parallel files only make the Redis and multi-process tests slower and flakier.
    maxWorkers: 2,
    sequence: { sequencer: LongestFirst },
  },
});
