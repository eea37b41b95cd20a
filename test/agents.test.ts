import { describe, expect, it } from 'vitest';
import { WebSocketServer, type WebSocket } from 'ws';
import { connect, postEvent, randomGuid, startGateway, until, userToken } from './helpers/gateway.js';

/**
 * A stand-in for the agents-server (a system we cannot run here): a real WebSocket server that
 * speaks the upstream protocol and records what the gateway sends it.
 */
async function startFakeAgents(port = 0) {
  const wss = new WebSocketServer({ port, host: '127.0.0.1' });
  await new Promise((r) => wss.once('listening', r));
  const received: any[] = [];
  const authorizations: (string | undefined)[] = [];
  const sockets = new Set<WebSocket>();
  wss.on('connection', (ws, req) => {
    authorizations.push(req.headers.authorization);
    sockets.add(ws);
    ws.on('message', (raw) => received.push(JSON.parse(raw.toString())));
    ws.on('close', () => sockets.delete(ws));
  });
  const address = wss.address();
  const actualPort = typeof address === 'object' && address ? address.port : port;
  return {
    port: actualPort,
    url: `ws://127.0.0.1:${actualPort}`,
    received,
    authorizations,
    connected: () => sockets.size > 0,
    send: (frame: unknown) => {
      for (const ws of sockets) ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
    },
    async stop() {
      for (const ws of sockets) ws.terminate();
      await new Promise((r) => wss.close(r));
    },
  };
}


describe('agents-server link', () => {
  it('forwards feedback, project updates and status syncs upstream, and relays agent messages to rooms', async () => {
    const agents = await startFakeAgents();
    const g = await startGateway({ AGENTS_URL: agents.url, AGENTS_TOKEN: 'agents-secret' });
    try {
      await until(agents.connected, 5000, 'gateway to connect upstream');
      expect(agents.authorizations[0]).toBe('Bearer agents-secret');
      const guid = randomGuid();
      const c = await connect(g.wsUrl, userToken('*', 'alice'));
      await c.join(guid);

      const res = await c.request({ type: 'user_feedback', id: 'fb-1', projectGuid: guid, data: { content: 'please add tests', replyTo: 'msg-9' } }, 'user_feedback_response');
      expect(res.data).toEqual({ accepted: true, forwarded: true });
      await until(() => agents.received.some((f) => f.type === 'user_feedback'), 3000, 'feedback upstream');
      expect(agents.received.find((f) => f.type === 'user_feedback')).toMatchObject({
        type: 'user_feedback',
        projectGuid: guid,
        data: { userId: 'alice', requestId: 'fb-1', content: 'please add tests', replyTo: 'msg-9' },
      });

      await postEvent(g.httpUrl, guid, { type: 'project_stage_update', data: { stage: 'coding' } });
      await postEvent(g.httpUrl, guid, { type: 'project_status_change', data: { status: 'paused' } });
      await until(() => agents.received.some((f) => f.type === 'project_status_sync'), 3000, 'status sync upstream');
      expect(agents.received.find((f) => f.type === 'project_update')).toMatchObject({ projectGuid: guid, data: { eventType: 'project_stage_update', event: { stage: 'coding' } } });
      expect(agents.received.find((f) => f.type === 'project_status_sync')).toMatchObject({ projectGuid: guid, data: { eventType: 'project_status_change', event: { status: 'paused' } } });

      agents.send({ type: 'agent_message', projectGuid: guid, data: { agent: 'coder', text: 'done' } });
      // Hostile or broken upstream frames are ignored, not relayed and not fatal.
      agents.send('not json');
      agents.send({ type: 'agent_message', projectGuid: 'nope', data: {} });
      agents.send({ type: 'project_message', projectGuid: guid, data: {} });
      agents.send({ type: 'agent_message', projectGuid: guid, data: { agent: 'coder', text: 'second' } });
      const events = await c.waitForEvents(guid, 4);
      const relayed = events.filter((e) => e.type === 'agent_message');
      expect(relayed.map((e) => e.data.text)).toEqual(['done', 'second']);
      expect(relayed[0]!.id).toMatch(/^\d+-\d+$/);
      await c.close();
    } finally {
      await g.close();
      await agents.stop();
    }
  });

  it('queues feedback while the agents-server is down and delivers it after reconnecting', async () => {
    let agents = await startFakeAgents();
    const port = agents.port;
    const g = await startGateway({ AGENTS_URL: agents.url });
    try {
      await until(agents.connected, 5000, 'first connection');
      await agents.stop();
      const guid = randomGuid();
      const c = await connect(g.wsUrl, userToken());
      await new Promise((r) => setTimeout(r, 50));
      const res = await c.request({ type: 'user_feedback', id: 'fb-q', projectGuid: guid, data: { content: 'while down' } }, 'user_feedback_response');
      expect(res.data).toEqual({ accepted: true, forwarded: false });
      agents = await startFakeAgents(port);
      await until(() => agents.received.some((f) => f.type === 'user_feedback'), 10000, 'queued feedback after reconnect');
      expect(agents.received.find((f) => f.type === 'user_feedback').data).toMatchObject({ content: 'while down', requestId: 'fb-q' });
      await c.close();
    } finally {
      await g.close();
      await agents.stop();
    }
  });
});
