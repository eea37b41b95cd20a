// What the agents relay promises (docs/agents.md), written once and checked against a gateway
// process of any shape: WORKERS=1 or 2, with or without Redis (test/agents.workers*.test.ts).
import { expect } from 'vitest';
import { postEvent, randomGuid, until } from './gateway.js';
import { presenceOn, type LinkRecord } from './agents-server.js';
import { startAgentsGateway, type AgentsGateway, type AgentsGatewayOptions } from './agents-gateway.js';

/**
 * SIGTERM with a few clients (on every worker) and every agents link up: the process exits 0,
 * every client got 1001. Timed from the signal to the child's 'close' event (it exited and its
 * output ended), so the exit itself came no later.
 *
 * Every exit must come within `everyMs`, well under the pool's forced terminate (2 s): a handle
 * that holds a thread shows on every try. At least one of up to 3 tries must come within
 * `withinMs`: on two shared cores another test file's processes can delay one exit by a few
 * hundred ms (the stand-in, in this process, answers the link's close late), which is not the
 * gateway's doing. `stall`: the agents-server stops reading first (it answers neither pings nor the
 * link's close). Resolves with every try's milliseconds.
 */
export async function expectPromptExit(options: AgentsGatewayOptions & { withinMs: number; everyMs: number; stall?: boolean }): Promise<number[]> {
  const shape = `WORKERS=${options.workers}${options.redisUrl ? ', Redis' : ''}${options.stall ? ', stalled agents-server' : ''}`;
  const tries: number[] = [];
  while (tries.length < 3 && !tries.some((ms) => ms < options.withinMs)) {
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
      tries.push(Math.round(ms));
      expect(code, `${shape}: exit code\n${fx.gateway.output()}`).toBe(0);
      expect(ms, `${shape}: ms from SIGTERM to exit`).toBeLessThan(options.everyMs);
      expect((await Promise.all(clients.map((c) => c.closed))).map((c) => c.code)).toEqual(clients.map(() => 1001));
      expect(fx.gateway.output()).not.toMatch(/open handles|Assertion failed|shutdown timed out/);
    } finally {
      await fx.stop();
    }
  }
  expect(Math.min(...tries), `${shape}: ms from SIGTERM to exit, each try: ${tries.join(', ')}`).toBeLessThan(options.withinMs);
  return tries;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const feedbackIdsOn = (link: LinkRecord) => new Set(link.frames.filter((f) => f.type === 'user_feedback').map((f) => f.data.feedbackId as string));

/**
 * Each feedback is on one link at a time, and delivered once. Feedback sent from clients on both
 * workers while the stand-in withholds acks; then one link is dropped: its worker resends its own
 * unacked feedback on its new link at once, and none of what the other worker's open link holds
 * (that would be a copy on a second link before FEEDBACK_CLAIM_IDLE_MS). Links are told apart by
 * their socket, not by name, so the check holds whatever the workers call themselves.
 * `undelivered`: feedback stored and not acked, read from outside the gateway.
 */
export async function expectFeedbackOnOneLinkAtATime(
  fx: AgentsGateway,
  options: { claimIdleMs: number; status: 'accepted' | 'queued'; undelivered: () => Promise<number> },
): Promise<void> {
  const { standIn } = fx;
  standIn.options.autoAck = false;
  try {
    const [linkA, linkB] = standIn.openLinks();
    expect(standIn.openLinks()).toHaveLength(2);
    const guid = randomGuid();
    const senders = [await fx.userOn(0, 'fb-w0'), await fx.userOn(1, 'fb-w1')];
    const start = Date.now();
    const ids: string[] = [];
    for (let n = 0; n < 10; n++) {
      for (const [w, c] of senders.entries()) {
        const res = await c.request({ type: 'user_feedback', id: `w${w}-${n}`, projectGuid: guid, data: { content: `from worker ${w}, ${n}` } }, 'user_feedback_response');
        expect(res.data.status).toBe(options.status);
        ids.push(res.data.feedbackId);
      }
    }
    await until(() => ids.every((id) => standIn.processed.has(id)), 5000, 'every feedback sent');
    // The link holding more in flight stays; the other one is dropped (its worker reconnects).
    const [held, dropped] = feedbackIdsOn(linkA!).size >= feedbackIdsOn(linkB!).size ? [linkA!, linkB!] : [linkB!, linkA!];
    const heldIds = feedbackIdsOn(held);
    const droppedIds = feedbackIdsOn(dropped);
    expect(heldIds.size).toBeGreaterThan(0);
    expect(heldIds.size + droppedIds.size).toBe(ids.length); // each sent on exactly one link so far
    expect(standIn.deliveries).toHaveLength(ids.length);

    const linksBefore = standIn.links.length;
    dropped.ws.terminate();
    await until(() => standIn.links.length > linksBefore && standIn.openLinks().length === 2, 5000, 'the dropped worker linked again');
    const relinked = standIn.links.at(-1)!;
    // Its own unacked feedback goes out again on its new link, at once (the link it went out on is gone).
    await until(() => [...droppedIds].every((id) => feedbackIdsOn(relinked).has(id)), 3000, 'the dropped link\'s feedback resent on the new link');
    await sleep(300); // a wrong resend of the held feedback would have come with it
    // Still before anything may be sent again for want of an ack (CLAIM_IDLE_MS after its delivery).
    expect(Date.now() - start).toBeLessThan(options.claimIdleMs);
    expect(held.ws.readyState).toBe(held.ws.OPEN);
    const elsewhere = [...heldIds].filter((id) => standIn.links.some((l) => l !== held && feedbackIdsOn(l).has(id)));
    expect(elsewhere, 'feedback in flight on the open link, sent again on another link').toEqual([]);
    for (const id of droppedIds) expect(relinked.frames.find((f) => f.type === 'user_feedback' && f.data.feedbackId === id)!.data.redelivery).toBe(true);
  } finally {
    standIn.options.autoAck = true;
    standIn.ackAll();
  }
  await until(async () => (await options.undelivered()) === 0, 5000, 'every feedback acked and removed');
}

/** A reply reaches every connection of its user on every worker, whichever worker's link it came on, and nobody else. */
export async function expectRepliesToTheUserOnly(fx: AgentsGateway): Promise<void> {
  const { standIn } = fx;
  const guid = randomGuid();
  const aliceOn0 = await fx.userOn(0, 'alice');
  const aliceOn1 = await fx.userOn(1, 'alice');
  const cyOn1 = await fx.userOn(1, 'cy');
  const bobs = [await fx.userOn(0, 'bob'), await fx.userOn(1, 'bob')];
  // A connection receives replies a few ms after it opens (its worker registers the user).
  await sleep(200);
  for (const via of [0, 1]) {
    const link = fx.link(via);
    standIn.send(link, { type: 'user_feedback_response', projectGuid: guid, userId: 'alice', id: `to-alice-via-${via}`, data: { text: `for alice, via worker ${via}` } });
    for (const c of [aliceOn0, aliceOn1]) expect(await c.next((f) => f.id === `to-alice-via-${via}`)).toMatchObject({ type: 'user_feedback_response', projectGuid: guid, data: { text: `for alice, via worker ${via}` } });
    await until(() => link.frames.some((f) => f.type === 'reply_status' && f.id === `to-alice-via-${via}`), 5000, 'reply status');
    expect(link.frames.find((f) => f.type === 'reply_status' && f.id === `to-alice-via-${via}`)!.data).toEqual({ userId: 'alice', outcome: 'live' });
  }
  // cy is only on worker 1: a reply (a direct agent_message too) over worker 0's link reaches her there.
  const link0 = fx.link(0);
  standIn.send(link0, { type: 'agent_message', projectGuid: guid, userId: 'cy', id: 'dm-cy', data: { text: 'direct, for cy' } });
  expect(await cyOn1.next((f) => f.id === 'dm-cy')).toMatchObject({ type: 'agent_message', data: { text: 'direct, for cy' } });
  await until(() => link0.frames.some((f) => f.type === 'reply_status' && f.id === 'dm-cy'), 5000, 'reply status');
  expect(link0.frames.find((f) => f.type === 'reply_status' && f.id === 'dm-cy')!.data.outcome).toBe('live');
  await sleep(200);
  for (const c of [...bobs, cyOn1]) expect(c.envelopes.filter((f) => f.type === 'user_feedback_response')).toEqual([]);
  for (const c of [...bobs, aliceOn0, aliceOn1]) expect(c.envelopes.filter((f) => f.type === 'agent_message')).toEqual([]);
}

/**
 * A reply for a user with no connection is kept and delivered on their next connection, whichever
 * worker takes it: one reply is sent over each worker's link, so at least one crossed threads.
 */
export async function expectOfflineReplyKept(fx: AgentsGateway): Promise<void> {
  const { standIn } = fx;
  const guid = randomGuid();
  for (const via of [0, 1]) {
    const link = fx.link(via);
    standIn.send(link, { type: 'user_feedback_response', projectGuid: guid, userId: 'carol', id: `kept-${via}`, data: { text: `kept via worker ${via}` } });
    await until(() => link.frames.some((f) => f.type === 'reply_status' && f.id === `kept-${via}`), 5000, 'reply status');
    expect(link.frames.find((f) => f.type === 'reply_status' && f.id === `kept-${via}`)!.data).toEqual({ userId: 'carol', outcome: 'stored' });
  }
  const { client: carol, worker } = await fx.user('carol');
  const kept = async () => carol.envelopes.filter((f) => f.type === 'user_feedback_response').map((f) => f.id);
  await until(async () => (await kept()).length >= 2, 5000, `both kept replies on carol's connection (worker ${worker})`);
  expect(await kept()).toEqual(['kept-0', 'kept-1']);
  // Delivered, then removed: her next connection gets nothing.
  const { client: again } = await fx.user('carol');
  await sleep(300);
  expect(again.envelopes.filter((f) => f.type === 'user_feedback_response')).toEqual([]);
}

/** Every link tells the same presence for the whole process (sequence numbers included), not its own worker's users. */
export async function expectPresenceAcrossWorkers(fx: AgentsGateway): Promise<void> {
  const { standIn } = fx;
  const guid = randomGuid();
  const usersOn = (link: LinkRecord) => presenceOn(link).get(guid)?.join() ?? '';
  const seqsOn = (link: LinkRecord) => link.frames.filter((f) => f.type === 'project_status_sync' && f.data.kind === 'change' && f.projectGuid === guid).map((f) => f.data.seq as number);
  const both = () => [fx.link(0), fx.link(1)];
  const p1 = await fx.userOn(0, 'p1');
  const p2 = await fx.userOn(1, 'p2');
  const p3On0 = await fx.userOn(0, 'p3');
  const p3On1 = await fx.userOn(1, 'p3'); // one user on both workers
  for (const c of [p1, p2, p3On0, p3On1]) await c.join(guid);
  await until(() => both().every((l) => usersOn(l) === 'p1,p2,p3'), 5000, 'p1, p2 and p3 online on both links');

  // p3 leaves on worker 0 but stays on worker 1; then p2 goes: the one change everyone sees.
  await p3On0.request({ type: 'leave_project', id: 'p3-leaves', projectGuid: guid });
  await p2.close();
  await until(() => both().every((l) => usersOn(l) === 'p1,p3'), 5000, 'p2 offline, p3 still online through worker 1, on both links');
  const [seqs0, seqs1] = both().map(seqsOn) as [number[], number[]];
  expect(seqs0).toEqual(seqs1);
  expect(seqs0.every((s, i) => i === 0 || s > seqs0[i - 1]!)).toBe(true);

  // A new link starts with a snapshot of the whole process.
  const old = fx.link(1);
  old.ws.terminate();
  await until(() => (fx.findLink(1) ?? old) !== old, 5000, 'worker 1 linked again');
  // The link is recorded when it opens; its first presence frame follows over the wire.
  await until(() => fx.link(1).frames.some((f) => f.type === 'project_status_sync'), 5000, "the new link's first presence frame");
  const snapshot = fx.link(1).frames.find((f) => f.type === 'project_status_sync')!;
  expect(snapshot.data.kind).toBe('snapshot');
  expect(snapshot.data.projects.find((p: { projectGuid: string }) => p.projectGuid === guid)).toEqual({ projectGuid: guid, users: ['p1', 'p3'] });
}

/** A position confirmed with project_update_ack on one worker's link is where a subscribe on the other worker's link resumes. */
export async function expectConfirmedPositionOnAnyLink(fx: AgentsGateway): Promise<void> {
  const { standIn } = fx;
  const guid = randomGuid();
  const ids: string[] = [];
  for (let n = 0; n < 3; n++) {
    const res = await postEvent(fx.gateway.url, guid, { type: 'project_message', data: { n } });
    expect(res.status).toBe(202);
    ids.push(res.body.id);
  }
  standIn.send(fx.link(0), { type: 'project_update_ack', projectGuid: guid, data: { eventId: ids[0] } });
  await sleep(200); // the protocol confirms no project_update_ack: give it time to be stored
  const link1 = fx.link(1);
  standIn.send(link1, { type: 'subscribe', id: 'resume-1', data: { projects: [{ projectGuid: guid }] } });
  await until(() => link1.frames.some((f) => f.type === 'subscribed' && f.id === 'resume-1'), 5000, 'subscribed');
  expect(link1.frames.find((f) => f.type === 'subscribed' && f.id === 'resume-1')!.data).toMatchObject({ from: ids[0], replayed: 2, recovered: true });
  expect(link1.frames.filter((f) => f.type === 'project_update' && f.projectGuid === guid).map((f) => f.data.eventId)).toEqual(ids.slice(1));
}
