// The overload bound's parts on their own: the process-wide table of how far behind each project's
// fan-out is (src/edge/fanout-delay.ts) and the ingress refusing past FANOUT_MAX_DELAY_MS
// (src/bus/ingress.ts). The HTTP answer is in overload.test.ts; the load that causes it in bench/.
import { describe, expect, it } from 'vitest';
import { createIngress } from '../src/bus/ingress.js';
import { createMemoryBus } from '../src/bus/memory.js';
import { createFanoutDelayMemory, openFanoutDelays } from '../src/edge/fanout-delay.js';
import { GatewayError } from '../src/errors.js';
import { DEFAULT_DATA_LIMITS } from '../src/protocol/limits.js';

describe('fan-out delay table', () => {
  it('keeps the longest fresh report of any thread per project, forgets a report after 100 ms, and knows nothing of other projects', () => {
    const memory = createFanoutDelayMemory();
    // Two threads' views of one table (threads open the same SharedArrayBuffers).
    const a = openFanoutDelays(memory);
    const b = openFanoutDelays(memory);
    const p = crypto.randomUUID();
    const q = crypto.randomUUID();
    a.report(new Map([[p, 40]]), 1000);
    b.report(new Map([[p, 700], [q, 5]]), 1010);
    a.report(new Map([[p, 60]]), 1020);
    expect(b.delayOf(p, 1030)).toBe(700);
    expect(a.delayOf(q, 1030)).toBe(5);
    expect(a.delayOf(crypto.randomUUID(), 1030)).toBe(0);
    // Fresh for 100 ms after the last report: a thread whose room caught up stops reporting it.
    expect(a.delayOf(p, 1120)).toBe(700);
    expect(a.delayOf(p, 1121)).toBe(0);
    // A stale record does not raise a new one: the next report starts over.
    b.report(new Map([[q, 9]]), 2000);
    expect(a.delayOf(q, 2000)).toBe(9);
  });

  it('makes room by dropping stale records when many projects are behind over time', () => {
    const delays = openFanoutDelays(createFanoutDelayMemory());
    let now = 0;
    // 300,000 projects behind, 1,000 per report, 150 ms apart: far more than the table holds at once.
    for (let round = 0; round < 300; round++, now += 150) {
      delays.report(new Map(Array.from({ length: 1000 }, (_, i) => [`${round}-${i}`, i])), now);
    }
    now -= 150;
    expect(delays.delayOf('299-999', now)).toBe(999);
    expect(delays.delayOf('0-999', now)).toBe(0);
  });
});

describe('ingress past the fan-out bound', () => {
  const bus = () => createMemoryBus(() => {}, { maxLen: 1000, maxEvents: 10_000, maxBytes: 1 << 24, idempotencyWindowS: 60 });

  it('refuses with OVERLOADED and a Retry-After, appends nothing, counts the refused events, and accepts again once caught up', async () => {
    const b = bus();
    const guid = crypto.randomUUID();
    let behind = 501;
    let refused = 0;
    const ingress = createIngress({ bus: b, limits: DEFAULT_DATA_LIMITS, fanoutDelayOf: (g) => (g === guid ? behind : 0), maxFanoutDelayMs: 500, onOverloaded: (n) => (refused += n) });
    const events = [{ type: 'project_message', data: { n: 1 } }, { type: 'project_message', data: { n: 2 } }];
    const err = await ingress.append(guid, events).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(GatewayError);
    expect((err as GatewayError).code).toBe('OVERLOADED');
    expect((err as GatewayError).retryAfterS).toBeGreaterThanOrEqual(1);
    expect(refused).toBe(2);
    expect((await b.range(guid, '0-0', 10)).events).toHaveLength(0);
    // Another project is not held back by this one.
    const other = crypto.randomUUID();
    expect((await ingress.append(other, events)).ids).toHaveLength(2);
    // At the bound is within it.
    behind = 500;
    expect((await ingress.append(guid, events)).ids).toHaveLength(2);
    expect((await b.range(guid, '0-0', 10)).events).toHaveLength(2);
    await b.close();
  });
});
