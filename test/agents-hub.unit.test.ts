import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { createAgentsHub, type AgentsHubMessage } from '../src/workers/agents-hub.js';

/** The main-thread agents hub on its own: what each worker is told (test/agents.workers.test.ts runs it in a process). */
function hubWithWorkers(offlineWindowS = 60, feedback = { perUser: 100, perProject: 500, total: 1000 }) {
  const hub = createAgentsHub({ offlineWindowS, log: pino({ level: 'silent' }), feedback });
  const inbox = new Map<number, AgentsHubMessage[]>();
  for (const workerId of [0, 1]) {
    inbox.set(workerId, []);
    hub.attach(workerId, (m) => inbox.get(workerId)!.push(m));
  }
  const told = (workerId: number) => inbox.get(workerId)!.splice(0);
  return { hub, told };
}

const envelope = (text: string) => ({ type: 'user_feedback_response' as const, projectGuid: null, id: text, timestamp: '2026-01-01T00:00:00.000Z', data: { text } });

describe('agents hub', () => {
  it('numbers presence transitions once for every worker, ignores repeats, answers a snapshot, and takes a gone worker\'s users offline', () => {
    const { hub, told } = hubWithWorkers();
    hub.handle(0, { op: 'presence', node: 'n.w0', field: 'g alice', online: true });
    hub.handle(0, { op: 'presence', node: 'n.w0', field: 'g alice', online: true }); // not a transition
    hub.handle(1, { op: 'presence', node: 'n.w1', field: 'g alice', online: true });
    const expected = [
      { op: 'presence-change', change: { seq: 1, node: 'n.w0', field: 'g alice', online: true } },
      { op: 'presence-change', change: { seq: 2, node: 'n.w1', field: 'g alice', online: true } },
    ];
    expect(told(0)).toEqual(expected);
    expect(told(1)).toEqual(expected);
    hub.handle(1, { op: 'presence-snapshot', requestId: 7 });
    expect(told(1)).toEqual([{ op: 'answer', requestId: 7, value: { seq: 2, nodes: [['n.w0', ['g alice']], ['n.w1', ['g alice']]] } }]);

    hub.detach(0);
    expect(told(1)).toEqual([{ op: 'presence-change', change: { seq: 3, node: 'n.w0', field: 'g alice', online: false } }]);
    expect(told(0)).toEqual([]); // a gone worker is told nothing
  });

  it('routes a reply to the workers holding its user (live), keeps it for the next one otherwise (stored), or drops it with no offline window', () => {
    const { hub, told } = hubWithWorkers();
    hub.handle(1, { op: 'user-online', userId: 'bob' });
    hub.handle(0, { op: 'reply', requestId: 1, userId: 'bob', envelope: envelope('live') });
    expect(told(1)).toEqual([{ op: 'deliver', userId: 'bob', envelope: envelope('live') }]);
    expect(told(0)).toEqual([{ op: 'answer', requestId: 1, value: 'live' }]);

    hub.handle(1, { op: 'user-offline', userId: 'bob' });
    hub.handle(0, { op: 'reply', requestId: 2, userId: 'bob', envelope: envelope('kept-1') });
    hub.handle(1, { op: 'reply', requestId: 3, userId: 'bob', envelope: envelope('kept-2') });
    expect(told(0)).toEqual([{ op: 'answer', requestId: 2, value: 'stored' }]);
    expect(told(1)).toEqual([{ op: 'answer', requestId: 3, value: 'stored' }]);
    // The first worker to hold bob again gets what was kept, in order; the inbox is empty after.
    hub.handle(0, { op: 'user-online', userId: 'bob' });
    hub.handle(1, { op: 'user-online', userId: 'bob' });
    expect(told(0)).toEqual([
      { op: 'deliver', userId: 'bob', envelope: envelope('kept-1') },
      { op: 'deliver', userId: 'bob', envelope: envelope('kept-2') },
    ]);
    expect(told(1)).toEqual([]);

    // A worker that is gone holds nobody.
    hub.detach(0);
    hub.handle(1, { op: 'reply', requestId: 5, userId: 'bob', envelope: envelope('after-0') });
    expect(told(1)).toEqual([
      { op: 'deliver', userId: 'bob', envelope: envelope('after-0') },
      { op: 'answer', requestId: 5, value: 'live' },
    ]);
    hub.detach(1);
    const results: AgentsHubMessage[] = [];
    hub.attach(3, (m) => results.push(m));
    hub.handle(3, { op: 'reply', requestId: 6, userId: 'bob', envelope: envelope('nobody') });
    expect(results).toEqual([{ op: 'answer', requestId: 6, value: 'stored' }]);

    const dropping = hubWithWorkers(0);
    dropping.hub.handle(0, { op: 'reply', requestId: 4, userId: 'carol', envelope: envelope('x') });
    expect(dropping.told(0)).toEqual([{ op: 'answer', requestId: 4, value: 'dropped' }]);
  });

  it('keeps confirmed positions for any worker, and skips a request it does not know', () => {
    const { hub, told } = hubWithWorkers();
    hub.handle(0, { op: 'cursor-set', guid: 'g', eventId: '1-0' });
    hub.handle(1, { op: 'cursor-get', requestId: 9, guid: 'g' });
    hub.handle(1, { op: 'cursor-get', requestId: 10, guid: 'other' });
    hub.handle(1, { op: 'nonsense' } as never);
    expect(told(1)).toEqual([
      { op: 'answer', requestId: 9, value: '1-0' },
      { op: 'answer', requestId: 10, value: null },
    ]);
  });

  it('counts pending feedback for the whole process: per user, per project and in all, across workers; releases on ack (own entries only) and when a worker ends', () => {
    const { hub, told } = hubWithWorkers(60, { perUser: 2, perProject: 3, total: 4 });
    let requestId = 0;
    const reserve = (workerId: number, feedbackId: string, userId: string, projectGuid: string) => {
      hub.handle(workerId, { op: 'feedback-reserve', requestId: ++requestId, entry: { feedbackId, userId, projectGuid } });
      const answers = told(workerId);
      expect(answers).toHaveLength(1);
      return (answers[0] as { value: unknown }).value;
    };
    // alice's quota holds over both workers: 2 in all, not 2 per worker.
    expect(reserve(0, 'a1', 'alice', 'P')).toBeNull();
    expect(reserve(1, 'a2', 'alice', 'P')).toBeNull();
    expect(reserve(1, 'a3', 'alice', 'Q')).toBe('user');
    // Project P's quota (3) is shared by its users.
    expect(reserve(1, 'b1', 'bob', 'P')).toBeNull();
    expect(reserve(0, 'c1', 'carol', 'P')).toBe('project');
    // The store's bound (4) for the process.
    expect(reserve(0, 'c2', 'carol', 'Q')).toBeNull();
    expect(reserve(1, 'd1', 'dave', 'R')).toBe('store');

    // A worker releases only what it counted: worker 1 cannot release worker 0's a1.
    hub.handle(1, { op: 'feedback-release', feedbackIds: ['a1', 'unknown'] });
    expect(reserve(1, 'd2', 'dave', 'R')).toBe('store');
    hub.handle(0, { op: 'feedback-release', feedbackIds: ['a1', 'a1'] });
    expect(reserve(1, 'a4', 'alice', 'R')).toBeNull();
    expect(reserve(1, 'd3', 'dave', 'R')).toBe('store');

    // Worker 1 ends: its queue (a2, b1, a4) died with it, and so do its counts.
    hub.detach(1);
    expect(reserve(0, 'a5', 'alice', 'P')).toBeNull();
    expect(reserve(0, 'a6', 'alice', 'P')).toBeNull();
    expect(reserve(0, 'a7', 'alice', 'P')).toBe('user');
  });
});
