import { describe, expect, it } from 'vitest';
import { createPendingCounts, localLedger, quotaError } from '../src/agents/feedback-quotas.js';
import { ConfigError, parseConfig } from '../src/config.js';

const entry = (n: number, userId = 'u', projectGuid = 'P') => ({ feedbackId: `f-${userId}-${projectGuid}-${n}`, userId, projectGuid });

describe('pending-feedback quotas: settings and in-process counts', () => {
  it('reads FEEDBACK_PENDING_PER_USER / _PER_PROJECT / FEEDBACK_QUOTA_HEAL_S with their documented defaults, 0 turning a quota off, and refuses nonsense', () => {
    const base = { JWT_SECRET: 'some-secret-123' };
    expect(parseConfig(base).feedback).toMatchObject({ pendingPerUser: 100, pendingPerProject: 500, quotaHealS: 3600, memoryQueue: 1000 });
    expect(parseConfig({ ...base, FEEDBACK_PENDING_PER_USER: '0', FEEDBACK_PENDING_PER_PROJECT: '0' }).feedback).toMatchObject({ pendingPerUser: 0, pendingPerProject: 0 });
    for (const bad of [{ FEEDBACK_PENDING_PER_USER: '-1' }, { FEEDBACK_PENDING_PER_PROJECT: 'many' }, { FEEDBACK_QUOTA_HEAL_S: '5' }]) {
      expect(() => parseConfig({ ...base, ...bad })).toThrow(ConfigError);
    }
  });

  it('counts per user, per project and in all; a quota of 0 is off; a release frees exactly the released; the refusal names its bound', async () => {
    const counts = createPendingCounts({ perUser: 2, perProject: 0, total: 5 });
    const ledger = localLedger(counts);
    expect(await ledger.reserve(entry(1))).toBeNull();
    expect(await ledger.reserve(entry(1))).toBeNull(); // the same id again counts once
    expect(await ledger.reserve(entry(2))).toBeNull();
    expect(await ledger.reserve(entry(3))).toBe('user');
    // No project quota: three other users fill the store in project P.
    for (const u of ['a', 'b', 'c']) expect(await ledger.reserve(entry(1, u))).toBeNull();
    expect(counts.size()).toBe(5);
    expect(await ledger.reserve(entry(1, 'd', 'Q'))).toBe('store');
    ledger.release([entry(1), entry(99)]);
    expect(counts.size()).toBe(4);
    expect(await ledger.reserve(entry(3))).toBeNull();
    expect(await ledger.reserve(entry(4))).toBe('user');

    const quotas = { perUser: 2, perProject: 7, store: 'FEEDBACK_MEMORY_QUEUE 5' };
    expect(quotaError('user', quotas)).toMatchObject({ code: 'FEEDBACK_QUEUE_FULL', message: expect.stringContaining('FEEDBACK_PENDING_PER_USER') });
    expect(quotaError('project', quotas)).toMatchObject({ code: 'FEEDBACK_QUEUE_FULL', message: expect.stringContaining('FEEDBACK_PENDING_PER_PROJECT') });
    expect(quotaError('store', quotas)).toMatchObject({ code: 'FEEDBACK_QUEUE_FULL', message: expect.stringContaining('FEEDBACK_MEMORY_QUEUE 5') });
  });
});
