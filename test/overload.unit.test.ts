// The overload bound's parts on their own: the process-wide table of how far behind each project's
// fan-out is (src/edge/fanout-delay.ts) and the ingress refusing past FANOUT_MAX_DELAY_MS
// (src/bus/ingress.ts). The HTTP answer is in overload.test.ts; the load that causes it in bench/.
import { describe, expect, it } from 'vitest';
import { ANY_PROJECT, createIngress } from '../src/bus/ingress.js';
import { createMemoryBus } from '../src/bus/memory.js';
import { createFanoutDelayMemory, openFanoutDelays } from '../src/edge/fanout-delay.js';
import { GatewayError } from '../src/errors.js';
import { DEFAULT_DATA_LIMITS } from '../src/protocol/limits.js';

const backlog = (ms: number, bytes = 0) => ({ ms, bytes });

describe('fan-out delay table', () => {
  it('keeps the longest fresh report of any thread per project, which only its own thread may lower or end; forgets a report after 2 s; knows nothing of other projects', () => {
    const memory = createFanoutDelayMemory();
    // Two threads' views of one table (threads open the same SharedArrayBuffers).
    const a = openFanoutDelays(memory, 1);
    const b = openFanoutDelays(memory, 2);
    const p = crypto.randomUUID();
    const q = crypto.randomUUID();
    a.report(new Map([[p, backlog(40, 1000)]]), 1000);
    b.report(new Map([[p, backlog(700, 9000)], [q, backlog(5)]]), 1010);
    a.report(new Map([[p, backlog(60, 2000)]]), 1020);
    // The longest wait stands, with its own bytes and time: another thread's shorter wait does not lower it.
    expect(b.backlogOf(p, 1030)).toEqual({ ms: 700, bytes: 9000, at: 1010 });
    expect(a.backlogOf(q, 1030)?.ms).toBe(5);
    expect(a.backlogOf(crypto.randomUUID(), 1030)).toBeNull();
    // Its own thread lowers it, and a 0 (caught up) from its own thread ends it; from another, not.
    b.report(new Map([[p, backlog(300, 4000)]]), 1040);
    expect(a.backlogOf(p, 1050)).toEqual({ ms: 300, bytes: 4000, at: 1040 });
    a.report(new Map([[p, backlog(0)]]), 1060);
    expect(a.backlogOf(p, 1070)?.ms).toBe(300);
    b.report(new Map([[p, backlog(0)]]), 1080);
    expect(a.backlogOf(p, 1090)).toBeNull();
    // Fresh for 2 s after the last report: this only ends the records of a reporter that went away.
    expect(a.backlogOf(q, 3010)?.ms).toBe(5);
    expect(a.backlogOf(q, 3011)).toBeNull();
    // A stale record does not raise a new one: the next report starts over.
    a.report(new Map([[q, backlog(9)]]), 5000);
    expect(b.backlogOf(q, 5000)?.ms).toBe(9);
  });

  it('makes room by dropping stale records when many projects are behind over time', () => {
    const delays = openFanoutDelays(createFanoutDelayMemory());
    let now = 0;
    // 300,000 projects behind, 1,000 per report, each round after the last went stale: far more than the table holds at once.
    for (let round = 0; round < 300; round++, now += 2100) {
      delays.report(new Map(Array.from({ length: 1000 }, (_, i) => [`${round}-${i}`, backlog(i + 1)])), now);
    }
    now -= 2100;
    expect(delays.backlogOf('299-999', now)?.ms).toBe(1000);
    expect(delays.backlogOf('0-999', now)).toBeNull();
  });
});

describe('ingress past the fan-out bound', () => {
  const bus = () => createMemoryBus(() => {}, { maxLen: 1000, maxEvents: 10_000, maxBytes: 1 << 24, idempotencyWindowS: 60 });

  it('refuses with OVERLOADED and a Retry-After, appends nothing, counts the refused events, and accepts again once caught up', async () => {
    const b = bus();
    const guid = crypto.randomUUID();
    let behind = 501;
    let refused = 0;
    const ingress = createIngress({ bus: b, limits: DEFAULT_DATA_LIMITS, fanoutBacklogOf: (g) => (g === guid ? { ms: behind, bytes: 0, at: 1 } : null), maxFanoutDelayMs: 500, onOverloaded: (n) => (refused += n) });
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

  it('counts what it accepted since the last report: a burst of batches before the next fan-out turn cannot all pass the bound', async () => {
    const b = bus();
    const guid = crypto.randomUUID();
    // The fan-out said: 100 ms for the 10,000 bytes queued. Each batch below adds 10,000 bytes
    // (10 events of 840 bytes of data plus the 160 the ingress counts for an envelope).
    let report = { ms: 100, bytes: 10_000, at: 1 };
    const ingress = createIngress({ bus: b, limits: DEFAULT_DATA_LIMITS, fanoutBacklogOf: () => report, maxFanoutDelayMs: 500 });
    const batch = Array.from({ length: 10 }, (_, i) => ({ type: 'project_message', data: { blob: 'x'.repeat(823), i } }));
    const answers: string[] = [];
    for (let i = 0; i < 8; i++) answers.push(await ingress.append(guid, batch).then(() => 'accepted', (e: GatewayError) => e.code));
    // Each batch waits 100 ms more than the last (its own bytes included): four pass (the fourth
    // would wait exactly 500 ms), then refusals.
    expect(answers).toEqual(['accepted', 'accepted', 'accepted', 'accepted', 'OVERLOADED', 'OVERLOADED', 'OVERLOADED', 'OVERLOADED']);
    expect((await b.range(guid, '0-0', 100)).events).toHaveLength(40);
    // A new report (the fan-out turn ran) replaces the count.
    report = { ms: 100, bytes: 10_000, at: 2 };
    expect(await ingress.append(guid, batch).then(() => 'accepted')).toBe('accepted');
    await b.close();
  });

  it('judges a project with nothing queued by the pace of the slowest room: a large batch past the bound is refused, a small one passes', async () => {
    const b = bus();
    const idle = crypto.randomUUID();
    // The fan-out's report about itself: its slowest room needs 1,000 ms for 10,000 bytes.
    const ingress = createIngress({ bus: b, limits: DEFAULT_DATA_LIMITS, fanoutBacklogOf: (g) => (g === ANY_PROJECT ? { ms: 1000, bytes: 10_000, at: 1 } : null), maxFanoutDelayMs: 500 });
    const event = (i: number) => ({ type: 'project_message', data: { blob: 'x'.repeat(823), i } });
    // 10 events of 1,000 bytes: 1,000 ms at that pace.
    const refused = await ingress.append(idle, Array.from({ length: 10 }, (_, i) => event(i))).catch((e: GatewayError) => e.code);
    expect(refused).toBe('OVERLOADED');
    // One event at a time: 100 ms, 200 ms, ... the fifth 500 ms (within), the sixth 600 ms.
    const answers: string[] = [];
    for (let i = 0; i < 6; i++) answers.push(await ingress.append(idle, [event(i)]).then(() => 'accepted', (e: GatewayError) => e.code));
    expect(answers).toEqual(['accepted', 'accepted', 'accepted', 'accepted', 'accepted', 'OVERLOADED']);
    expect((await b.range(idle, '0-0', 100)).events).toHaveLength(5);
    // Another project with nothing queued competes for the same turns: until the next report it is counted with them.
    expect(await ingress.append(crypto.randomUUID(), [event(0)]).catch((e: GatewayError) => e.code)).toBe('OVERLOADED');
    await b.close();
  });
});
