import type { Logger } from 'pino';
import WebSocket from 'ws';
import type { NewEvent } from '../bus/bus.js';
import { toGatewayError } from '../errors.js';
import { createAjv } from '../protocol/ajv.js';
import { GUID_PATTERN, type AgentUpstreamType, type EventType, type FeedbackData } from '../protocol/messages.js';

export type FeedbackStatus = 'forwarded' | 'queued' | 'unavailable';

export interface AgentsLinkOptions {
  url: string;
  token?: string;
  nodeId: string;
  log: Logger;
  /** Relays an agent's message to the project's room (through the bus, so every instance gets it). */
  publish: (projectGuid: string, event: NewEvent) => Promise<unknown>;
  /** Frames kept while the agents-server is unreachable; beyond this, feedback is refused. */
  maxQueued?: number;
  /** Largest frame accepted from the agents-server; a larger one closes the link (ws answers 1009). */
  maxFrameBytes: number;
}

const validateAgentFrame = createAjv().compile<{ type: 'agent_message'; projectGuid: string; data: object }>({
  type: 'object',
  required: ['type', 'projectGuid', 'data'],
  properties: {
    type: { const: 'agent_message' },
    projectGuid: { type: 'string', pattern: GUID_PATTERN },
    data: { type: 'object' },
  },
});

/**
 * The gateway's WebSocket to the agents-server (design doc 3.2.5, 4.2.3). Sends `user_feedback`,
 * `project_update` and `project_status_sync` upstream; relays `agent_message` back to rooms.
 * Reconnects with backoff; frames sent while it is down wait in a bounded queue.
 */
export function createAgentsLink(options: AgentsLinkOptions) {
  const { log } = options;
  const maxQueued = options.maxQueued ?? 1000;
  const queue: string[] = [];
  let socket: WebSocket | null = null;
  let open = false;
  let closed = false;
  let attempts = 0;
  let retryTimer: NodeJS.Timeout | null = null;
  let counter = 0;

  function connect(): void {
    if (closed) return;
    const ws = new WebSocket(options.url, { headers: options.token ? { authorization: `Bearer ${options.token}` } : {}, handshakeTimeout: 5000, maxPayload: options.maxFrameBytes });
    socket = ws;
    ws.on('open', () => {
      open = true;
      attempts = 0;
      log.info({ url: options.url, queued: queue.length }, 'agents-server connected');
      for (const frame of queue.splice(0)) ws.send(frame);
    });
    ws.on('message', (raw, isBinary) => {
      if (isBinary) return log.warn('agents-server sent a binary frame; ignored');
      let frame: unknown;
      try {
        frame = JSON.parse(raw.toString());
      } catch {
        return log.warn('agents-server sent invalid JSON; ignored');
      }
      if (!validateAgentFrame(frame)) return log.warn({ type: (frame as { type?: unknown })?.type }, 'agents-server frame is not a valid agent_message; ignored');
      // publish checks the data against the same limits as every other entry point.
      options.publish(frame.projectGuid.toLowerCase(), { type: 'agent_message', data: frame.data }).catch((err: unknown) => {
        const e = toGatewayError(err);
        if (e.code === 'INTERNAL') log.error({ err, projectGuid: frame.projectGuid }, 'could not relay agent_message');
        else log.warn({ projectGuid: frame.projectGuid, code: e.code, reason: e.message }, 'agent_message not relayed');
      });
    });
    ws.on('error', (err) => log.warn({ err: err.message }, 'agents-server connection error'));
    ws.on('close', () => {
      open = false;
      socket = null;
      if (closed) return;
      const delay = Math.min(200 * 2 ** attempts++, 10000) * (0.5 + Math.random() / 2);
      retryTimer = setTimeout(connect, delay);
    });
  }

  function send(type: AgentUpstreamType, projectGuid: string, data: unknown): FeedbackStatus {
    const frame = JSON.stringify({ type, projectGuid, data, timestamp: new Date().toISOString(), id: `${options.nodeId}-${++counter}` });
    if (open && socket) {
      socket.send(frame);
      return 'forwarded';
    }
    if (queue.length >= maxQueued) return 'unavailable';
    queue.push(frame);
    return 'queued';
  }

  connect();

  return {
    forwardFeedback(f: { projectGuid: string; userId: string; requestId: string | null; data: FeedbackData }): FeedbackStatus {
      return send('user_feedback', f.projectGuid, { userId: f.userId, requestId: f.requestId, ...f.data });
    },
    /** Tells the agents-server about an event that entered through this instance. */
    notifyEvent(projectGuid: string, event: { id: string; type: EventType; data: unknown }): void {
      if (event.type === 'agent_message') return;
      send(event.type === 'project_status_change' ? 'project_status_sync' : 'project_update', projectGuid, { eventId: event.id, eventType: event.type, event: event.data });
    },
    isConnected: () => open,
    close(): void {
      closed = true;
      if (retryTimer) clearTimeout(retryTimer);
      socket?.close(1001, 'gateway shutting down');
    },
  };
}

export type AgentsLink = ReturnType<typeof createAgentsLink>;
