/**
 * A reference agents-server: the smallest program that speaks docs/agents.md correctly. It acks
 * every feedback (deduplicating by feedbackId, as the protocol requires), answers the sender with a
 * targeted `user_feedback_response`, posts an `agent_message` to the project room, subscribes to
 * the project to print its events (acking them so a reconnect resumes), and prints presence.
 *
 *   npm run echo-agent                     # listens on ws://127.0.0.1:9000/gateway
 *   ECHO_AGENT_PORT=9001 ECHO_AGENT_TOKEN=s3cret npm run echo-agent
 *
 * then start gateways with AGENTS_URL=ws://127.0.0.1:9000/gateway (and AGENTS_TOKEN=s3cret).
 * A separate program, not part of the gateway: it reads its own two variables.
 */
import { WebSocketServer, type WebSocket } from 'ws';

const port = Number(process.env.ECHO_AGENT_PORT ?? 9000);
const host = process.env.ECHO_AGENT_HOST ?? '127.0.0.1';
const token = process.env.ECHO_AGENT_TOKEN;

/** Feedback already processed (the dedupe key is feedbackId). A real agents-server keeps this in its database. */
const processed = new Set<string>();
const MAX_REMEMBERED = 100_000;

const log = (what: string, detail: unknown = '') => process.stdout.write(`${new Date().toISOString()} ${what} ${typeof detail === 'string' ? detail : JSON.stringify(detail)}\n`);

const wss = new WebSocketServer({
  host,
  port,
  maxPayload: 1024 * 1024,
  verifyClient: (info: { req: { headers: Record<string, string | string[] | undefined> } }) => !token || info.req.headers.authorization === `Bearer ${token}`,
});

function send(ws: WebSocket, frame: { type: string; projectGuid?: string | null; userId?: string; id?: string | null; data: unknown }): void {
  ws.send(JSON.stringify({ projectGuid: null, id: null, timestamp: new Date().toISOString(), ...frame }));
}

wss.on('connection', (ws, req) => {
  const node = String(req.headers['x-gateway-node'] ?? '?');
  const subscribed = new Set<string>();
  log('link open', { node });
  ws.on('close', (code) => log('link closed', { node, code }));
  ws.on('message', (raw) => {
    let frame: { type?: unknown; projectGuid?: unknown; id?: unknown; data?: any };
    try {
      frame = JSON.parse(String(raw)) as typeof frame;
    } catch {
      return log('skipped a frame that is not JSON');
    }
    const guid = typeof frame.projectGuid === 'string' ? frame.projectGuid : null;
    switch (frame.type) {
      case 'hello':
        return log('hello', frame.data);
      case 'user_feedback': {
        const fb = frame.data as { feedbackId: string; userId: string; requestId: string | null; content: string; redelivery: boolean };
        if (typeof fb?.feedbackId !== 'string' || !guid) return log('skipped a malformed user_feedback');
        // Ack every copy (the first ack may have been lost with a link); act on the first only.
        send(ws, { type: 'feedback_ack', data: { feedbackIds: [fb.feedbackId] } });
        if (processed.has(fb.feedbackId)) return log('duplicate feedback ignored', { feedbackId: fb.feedbackId, node });
        processed.add(fb.feedbackId);
        if (processed.size > MAX_REMEMBERED) processed.delete(processed.values().next().value as string);
        log('feedback', { node, feedbackId: fb.feedbackId, userId: fb.userId, content: fb.content, redelivery: fb.redelivery });
        send(ws, { type: 'user_feedback_response', projectGuid: guid, userId: fb.userId, id: fb.requestId, data: { feedbackId: fb.feedbackId, status: 'processed', text: `echo: ${fb.content}` } });
        send(ws, { type: 'agent_message', projectGuid: guid, data: { agent: 'echo', text: `${fb.userId} said: ${fb.content}` } });
        if (!subscribed.has(guid)) {
          subscribed.add(guid);
          send(ws, { type: 'subscribe', id: `sub-${guid}`, data: { projects: [{ projectGuid: guid }] } });
        }
        return;
      }
      case 'project_update':
        log('project_update', { projectGuid: guid, eventId: frame.data?.eventId, eventType: frame.data?.eventType, event: frame.data?.event });
        if (guid && typeof frame.data?.eventId === 'string') send(ws, { type: 'project_update_ack', projectGuid: guid, data: { eventId: frame.data.eventId } });
        return;
      case 'project_status_sync':
        return log('presence', frame.data);
      default:
        return log(String(frame.type), { projectGuid: guid, id: frame.id, data: frame.data });
    }
  });
});

wss.on('listening', () => log('echo agent listening', `ws://${host}:${port}/gateway (start gateways with AGENTS_URL=ws://${host}:${port}/gateway)`));
wss.on('error', (err) => {
  log('echo agent failed', err.message);
  process.exit(1);
});
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => wss.close(() => process.exit(0)));
