import { describe, it } from 'vitest';
import { expectPromptExit } from './helpers/agents-promises.js';

/**
 * The agents relay in one WORKERS=2 process without Redis: the in-process bus lives in the main
 * thread, each worker thread has its own agents link, and the promises of docs/agents.md hold for
 * the process as a whole, as they do for a single-thread gateway.
 */
describe('agents relay, WORKERS=2 without Redis', () => {
  it('exits 0 within 200 ms of SIGTERM with agents links and a few clients, WORKERS=2 and WORKERS=1; within 1 s when the agents-server hangs', async () => {
    for (const workers of [2, 1]) await expectPromptExit({ workers, nodeId: `exit-${workers}`, withinMs: 200 });
    // A hung agents-server answers no close: the link gives it a moment, then cuts the connection.
    await expectPromptExit({ workers: 2, nodeId: 'exit-stalled', withinMs: 1000, stall: true });
  });
});
