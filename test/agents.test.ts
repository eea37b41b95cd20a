import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseAgentFrame } from '../src/agents/agent-frames.js';
import { connect, randomGuid, startGateway, until, userToken } from './helpers/gateway.js';
import { startAgentsStandIn } from './helpers/agents-server.js';
import { freePort } from './helpers/ports.js';
import { trackChild } from './helpers/processes.js';

/** The agents relay in one in-process gateway without Redis (the in-memory outbox), against a stand-in agents-server. */
describe('agents relay without Redis', () => {
  it('queues feedback in a bounded in-memory queue, refuses the overflow with FEEDBACK_QUEUE_FULL, and delivers exactly what it queued', async () => {
    const port = await freePort();
    const g = await startGateway({ AGENTS_URL: `ws://127.0.0.1:${port}/gateway`, AGENTS_TOKEN: 'agents-secret', AGENTS_RECONNECT_MAX_MS: '300', FEEDBACK_MEMORY_QUEUE: '5' });
    const agents = { current: null as Awaited<ReturnType<typeof startAgentsStandIn>> | null };
    try {
      const guid = randomGuid();
      const c = await connect(g.wsUrl, userToken('*', 'alice'));
      const replies = [];
      for (let n = 0; n < 8; n++) replies.push(await c.request({ type: 'user_feedback', id: `q-${n}`, projectGuid: guid, data: { content: `feedback ${n}`, replyTo: 'msg-9' } }, 'user_feedback_response'));
      const queued = replies.filter((r) => r.type === 'user_feedback_response');
      const refused = replies.filter((r) => r.type === 'error');
      expect(queued.map((r) => r.id)).toEqual(['q-0', 'q-1', 'q-2', 'q-3', 'q-4']);
      for (const r of queued) expect(r.data).toMatchObject({ status: 'queued', durable: false, accepted: true, feedbackId: expect.any(String) });
      expect(refused.map((r) => [r.id, r.data.code])).toEqual([
        ['q-5', 'FEEDBACK_QUEUE_FULL'],
        ['q-6', 'FEEDBACK_QUEUE_FULL'],
        ['q-7', 'FEEDBACK_QUEUE_FULL'],
      ]);

      agents.current = await startAgentsStandIn({ port });
      const standIn = agents.current;
      await until(() => standIn.processed.size >= 5, 10000, 'queued feedback delivered');
      await new Promise((r) => setTimeout(r, 300));
      // Exactly the five that were queued, nothing that was refused.
      expect(new Set(standIn.processed.keys())).toEqual(new Set(queued.map((r) => r.data.feedbackId)));
      expect([...standIn.processed.values()].map((f) => f.data.content)).toEqual(['feedback 0', 'feedback 1', 'feedback 2', 'feedback 3', 'feedback 4']);
      expect(standIn.processed.get(queued[0]!.data.feedbackId)!.data).toMatchObject({ userId: 'alice', requestId: 'q-0', replyTo: 'msg-9', projectGuid: guid, redelivery: false });
      const hello = standIn.links[0]!.frames[0]!;
      expect(hello).toMatchObject({ type: 'hello', data: { nodeId: g.config.nodeId, protocol: 1 } });
      // Acked feedback left the queue: there is room again.
      const again = await c.request({ type: 'user_feedback', id: 'q-8', projectGuid: guid, data: { content: 'room again' } }, 'user_feedback_response');
      expect(again.data.status).toBe('queued');
      await c.close();
    } finally {
      await g.close();
      await agents.current?.stop();
    }
  });

  it('refuses feedback over the data limits before storing anything', async () => {
    const standIn = await startAgentsStandIn();
    const g = await startGateway({ AGENTS_URL: standIn.url, MAX_EVENT_DATA_BYTES: '1024' });
    try {
      await until(() => standIn.openLinks().length === 1, 5000, 'link');
      const c = await connect(g.wsUrl, userToken('*', 'big'));
      const guid = randomGuid();
      const tooBig = await c.request({ type: 'user_feedback', id: 'big-1', projectGuid: guid, data: { content: 'x'.repeat(2000) } }, 'user_feedback_response');
      expect(tooBig).toMatchObject({ type: 'error', data: { code: 'PAYLOAD_TOO_LARGE' } });
      const small = await c.request({ type: 'user_feedback', id: 'big-2', projectGuid: guid, data: { content: 'small' } }, 'user_feedback_response');
      await until(() => standIn.processed.has(small.data.feedbackId), 5000, 'the small one delivered');
      expect(standIn.deliveries.map((d) => d.data.requestId)).toEqual(['big-2']);
      await c.close();
    } finally {
      await g.close();
      await standIn.stop();
    }
  });

  it('relays an agent_message without userId to the project room, a targeted one to the user only, and skips hostile frames', async () => {
    const standIn = await startAgentsStandIn();
    const g = await startGateway({ AGENTS_URL: standIn.url });
    try {
      await until(() => standIn.openLinks().length === 1, 5000, 'link');
      const link = standIn.openLinks()[0]!;
      const guid = randomGuid();
      const alice = await connect(g.wsUrl, userToken('*', 'alice'));
      const bob = await connect(g.wsUrl, userToken('*', 'bob'));
      await alice.join(guid);
      await bob.join(guid);

      standIn.send(link, { type: 'agent_message', projectGuid: guid, data: { agent: 'coder', text: 'to the room' } });
      standIn.send(link, 'not json');
      standIn.send(link, { type: 'agent_message', projectGuid: 'nope', data: {} });
      standIn.send(link, { type: 'project_message', projectGuid: guid, data: {} });
      standIn.send(link, { type: 'agent_message', projectGuid: guid, data: { big: 'x'.repeat(70000) } });
      standIn.send(link, { type: 'agent_message', projectGuid: guid, userId: 'bob', data: { text: 'just for bob' } });
      standIn.send(link, { type: 'agent_message', projectGuid: guid, data: { agent: 'coder', text: 'second' } });
      for (const c of [alice, bob]) {
        const events = await c.waitForEvents(guid, 2);
        const roomMessages = events.filter((e) => e.type === 'agent_message' && e.id !== null);
        expect(roomMessages.map((e) => e.data.text)).toEqual(['to the room', 'second']);
        expect(roomMessages[0]!.id).toMatch(/^\d+-\d+$/);
      }
      await bob.next((f) => f.type === 'agent_message' && f.data.text === 'just for bob');
      expect(alice.envelopes.some((f) => f.data?.text === 'just for bob')).toBe(false);
      await until(() => link.frames.filter((f) => f.type === 'error').length >= 4, 5000, 'error frames for the four bad frames');
      expect(link.frames.filter((f) => f.type === 'error').map((f) => f.data.code)).toEqual(['INVALID_FRAME', 'INVALID_FRAME', 'INVALID_FRAME', 'PAYLOAD_TOO_LARGE']);
      expect(link.ws.readyState).toBe(link.ws.OPEN);
      await alice.close();
      await bob.close();
    } finally {
      await g.close();
      await standIn.stop();
    }
  });

  it('closes a link whose agents-server stops answering pings, and reconnects', async () => {
    const standIn = await startAgentsStandIn({ autoPong: false });
    const g = await startGateway({ AGENTS_URL: standIn.url, AGENTS_HEARTBEAT_MS: '200', AGENTS_RECONNECT_MAX_MS: '200' });
    try {
      await until(() => standIn.links.length >= 2, 5000, 'a second link after the heartbeat timeout');
      expect(standIn.links[0]!.ws.readyState).not.toBe(standIn.links[0]!.ws.OPEN);
      const metrics = await (await fetch(`${g.httpUrl}/metrics`)).text();
      expect(metrics).toMatch(/agents_link_heartbeat_timeouts_total\{[^}]*\} [1-9]/);
      expect(metrics).toMatch(/agents_link_connects_total\{[^}]*\} [2-9]/);
    } finally {
      await g.close();
      await standIn.stop();
    }
  });

  it('reports presence without Redis and keeps a reply for an offline user until they connect', async () => {
    const standIn = await startAgentsStandIn();
    const g = await startGateway({ AGENTS_URL: standIn.url });
    try {
      await until(() => standIn.openLinks().length === 1, 5000, 'link');
      const link = standIn.openLinks()[0]!;
      const guid = randomGuid();
      expect(link.frames.find((f) => f.type === 'project_status_sync')!.data).toEqual({ kind: 'snapshot', seq: 0, projects: [] });
      const a = await connect(g.wsUrl, userToken('*', 'ann'));
      await a.join(guid);
      await until(() => link.frames.some((f) => f.type === 'project_status_sync' && f.data.kind === 'change' && f.data.users.includes('ann')), 5000, 'ann online');
      await a.close();
      await until(() => link.frames.some((f) => f.type === 'project_status_sync' && f.data.kind === 'change' && f.data.left.includes('ann')), 5000, 'ann offline');

      standIn.send(link, { type: 'user_feedback_response', projectGuid: guid, userId: 'ann', id: 'r-1', data: { text: 'later' } });
      await until(() => link.frames.some((f) => f.type === 'reply_status' && f.id === 'r-1'), 5000, 'reply status');
      expect(link.frames.find((f) => f.type === 'reply_status')!.data).toEqual({ userId: 'ann', outcome: 'stored' });
      const back = await connect(g.wsUrl, userToken('*', 'ann'));
      expect(await back.next((f) => f.type === 'user_feedback_response')).toMatchObject({ id: 'r-1', projectGuid: guid, data: { text: 'later' } });
      await back.close();
    } finally {
      await g.close();
      await standIn.stop();
    }
  });
});

describe('the echo agent (npm run echo-agent)', () => {
  it('acks, answers the sender and posts to the room: the whole round trip', async () => {
    const port = await freePort();
    const echo = spawn(process.execPath, [fileURLToPath(new URL('../dist/agents/echo-agent.js', import.meta.url))], { env: { ...process.env, ECHO_AGENT_PORT: String(port) }, stdio: ['ignore', 'pipe', 'inherit'] });
    trackChild(echo);
    let output = '';
    echo.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()));
    const g = await startGateway({ AGENTS_URL: `ws://127.0.0.1:${port}/gateway`, AGENTS_RECONNECT_MAX_MS: '200' });
    try {
      await until(() => output.includes('hello'), 10000, 'the echo agent to see the gateway');
      const guid = randomGuid();
      const c = await connect(g.wsUrl, userToken('*', 'eve'));
      await c.join(guid);
      const accepted = await c.request({ type: 'user_feedback', id: 'echo-1', projectGuid: guid, data: { content: 'hello agents' } }, 'user_feedback_response');
      expect(accepted.data).toMatchObject({ status: 'queued', feedbackId: expect.any(String) });
      const reply = await c.next((f) => f.type === 'user_feedback_response' && f.data.status === 'processed');
      expect(reply).toMatchObject({ id: 'echo-1', projectGuid: guid, data: { feedbackId: accepted.data.feedbackId, text: 'echo: hello agents' } });
      const [roomMessage] = await c.waitForEvents(guid, 1);
      expect(roomMessage).toMatchObject({ type: 'agent_message', data: { agent: 'echo', text: 'eve said: hello agents' } });
      // It subscribed to the project: later events reach it as project_update.
      await until(() => output.includes('subscribed'), 5000, 'the echo agent to subscribe');
      await g.gw.publish(guid, { type: 'project_stage_update', data: { stage: 'review' } });
      await until(() => output.includes('"stage":"review"'), 5000, 'the echo agent to print the project_update');
      await c.close();
    } finally {
      await g.close();
      echo.kill('SIGTERM');
    }
  });
});

describe('agents-server frame validation', () => {
  it('never throws on arbitrary input, and accepts only frames of the documented shapes', () => {
    const types = ['feedback_ack', 'user_feedback_response', 'agent_message', 'subscribe', 'unsubscribe', 'project_update_ack', 'hello', '__proto__', 'constructor'];
    const frameLike = fc.record(
      {
        type: fc.constantFrom(...types),
        projectGuid: fc.oneof(fc.constant(randomGuid()), fc.string(), fc.constant(null), fc.integer()),
        userId: fc.oneof(fc.string(), fc.integer()),
        id: fc.oneof(fc.string(), fc.constant(null)),
        data: fc.jsonValue(),
      },
      { requiredKeys: ['type'] },
    );
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.jsonValue().map((v) => JSON.stringify(v)), frameLike.map((f) => JSON.stringify(f))), (text) => {
        const parsed = parseAgentFrame(text);
        if ('frame' in parsed) {
          expect(['feedback_ack', 'user_feedback_response', 'agent_message', 'subscribe', 'unsubscribe', 'project_update_ack']).toContain(parsed.frame.type);
          expect(typeof parsed.frame.data).toBe('object');
          expect(parsed.frame.data).not.toBeNull();
        } else {
          expect(typeof parsed.problem).toBe('string');
        }
      }),
      { numRuns: 2000 },
    );
    expect('frame' in parseAgentFrame(JSON.stringify({ type: 'feedback_ack', data: { feedbackIds: ['a'] } }))).toBe(true);
    expect(parseAgentFrame(JSON.stringify({ type: 'user_feedback_response', data: {} }))).toMatchObject({ problem: expect.stringContaining('userId') });
  });
});
