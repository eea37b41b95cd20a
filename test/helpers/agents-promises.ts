// What the agents relay promises (docs/agents.md), written once and checked against a gateway
// process of any shape: WORKERS=1 or 2, with or without Redis (test/agents.workers*.test.ts).
import { expect } from 'vitest';
import { randomGuid } from './gateway.js';
import { startAgentsGateway, type AgentsGatewayOptions } from './agents-gateway.js';

/**
 * SIGTERM with a few clients (on every worker) and every agents link up: the process exits 0
 * within `withinMs`, every client got 1001. Measured from the signal to the child's 'close' event
 * (it exited and its output ended), so the exit itself came no later. `stall`: the agents-server
 * stops reading first (it answers neither pings nor the link's close).
 */
export async function expectPromptExit(options: AgentsGatewayOptions & { withinMs: number; stall?: boolean }): Promise<number> {
  const fx = await startAgentsGateway(options);
  try {
    const guid = randomGuid();
    const clients = [];
    for (let w = 0; w < fx.workers; w++) {
      for (const n of [0, 1]) clients.push(fx.workers > 1 ? await fx.userOn(w, `exit-${w}-${n}`) : (await fx.user(`exit-${w}-${n}`)).client);
    }
    await Promise.all(clients.map((c) => c.join(guid)));
    if (options.stall) fx.standIn.stall();
    const started = performance.now();
    const code = await fx.gateway.stop('SIGTERM');
    const ms = performance.now() - started;
    const shape = `WORKERS=${options.workers}${options.redisUrl ? ', Redis' : ''}${options.stall ? ', stalled agents-server' : ''}`;
    expect(code, `${shape}: exit code\n${fx.gateway.output()}`).toBe(0);
    expect(ms, `${shape}: ms from SIGTERM to exit`).toBeLessThan(options.withinMs);
    expect((await Promise.all(clients.map((c) => c.closed))).map((c) => c.code)).toEqual(clients.map(() => 1001));
    expect(fx.gateway.output()).not.toMatch(/open handles|Assertion failed|shutdown timed out/);
    return ms;
  } finally {
    await fx.stop();
  }
}
