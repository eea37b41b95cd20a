// A stand-in for the agents-server (a system we cannot run here): a real WebSocket server speaking
// docs/agents.md. It records every frame the gateways send, dedupes feedback by feedbackId as the
// protocol requires, acks (or withholds acks), and can refuse, drop or stop links on demand.
import type { IncomingMessage } from 'node:http';
import { WebSocketServer, type WebSocket } from 'ws';

export interface Upstream {
  type: string;
  projectGuid: string | null;
  id: string | null;
  timestamp: string;
  data: any;
}

export interface LinkRecord {
  /** x-gateway-node header of the link (the gateway's NODE_ID). */
  node: string;
  ws: WebSocket;
  frames: Upstream[];
}

/**
 * Who is online per project as a link's project_status_sync frames tell it (docs/agents.md): a
 * snapshot replaces everything, a change sets one project's users.
 */
export function presenceOn(link: LinkRecord): Map<string, string[]> {
  let state = new Map<string, string[]>();
  for (const f of link.frames) {
    if (f.type !== 'project_status_sync') continue;
    if (f.data.kind === 'snapshot') state = new Map(f.data.projects.map((p: { projectGuid: string; users: string[] }) => [p.projectGuid, p.users]));
    else if (f.data.users.length) state.set(f.data.projectGuid, f.data.users);
    else state.delete(f.data.projectGuid);
  }
  return state;
}

export interface StandInOptions {
  port?: number;
  /** Ack each feedback as soon as it arrives (default true). */
  autoAck?: boolean;
  /** Called for each feedback processed for the first time (dedupe by feedbackId); may send replies. */
  onFeedback?: (feedback: Upstream, link: LinkRecord, server: AgentsStandIn) => void;
  /** false: never answer the gateway's pings (a hung agents-server behind a live TCP connection). */
  autoPong?: boolean;
  /** Refuse links from these nodes (HTTP 403 at the upgrade). */
  refuse?: (node: string) => boolean;
}

export interface AgentsStandIn {
  readonly port: number;
  readonly url: string;
  /** Every user_feedback frame received, duplicates included, in arrival order. */
  readonly deliveries: Upstream[];
  /** Feedback processed once each (the dedupe the protocol asks of the agents-server), by feedbackId. */
  readonly processed: Map<string, Upstream>;
  /** Which node delivered each feedback first. */
  readonly deliveredBy: Map<string, string>;
  readonly links: LinkRecord[];
  options: StandInOptions;
  /** Links that are open and whose gateway said hello. */
  openLinks(): LinkRecord[];
  /** The newest such link of a gateway node. */
  linkOf(node: string): LinkRecord | undefined;
  framesOf(type: string, node?: string): Upstream[];
  send(link: LinkRecord, frame: unknown): void;
  /** Acks every feedback processed so far (over the link each arrived on, if still open, else any). */
  ackAll(): void;
  /** Terminates every link (no close frame, like a crash of the agents-server's side). */
  dropLinks(): void;
  /** Stops reading every open link: a hung agents-server behind live TCP connections (no pong, no answer to a close). */
  stall(): void;
  stop(): Promise<void>;
}

export async function startAgentsStandIn(options: StandInOptions = {}): Promise<AgentsStandIn> {
  const wss = new WebSocketServer({
    port: options.port ?? 0,
    host: '127.0.0.1',
    autoPong: options.autoPong ?? true,
    verifyClient: (info: { req: IncomingMessage }, cb: (ok: boolean, code?: number) => void) => {
      const node = String(info.req.headers['x-gateway-node'] ?? '');
      if (server.options.refuse?.(node)) cb(false, 403);
      else cb(true);
    },
  });
  await new Promise<void>((resolve, reject) => {
    wss.once('listening', resolve);
    wss.once('error', reject);
  });
  const address = wss.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  const links: LinkRecord[] = [];
  // A link counts as open once the gateway's hello arrived: the gateway sends it from its own open
  // handler, right before the presence snapshot, so anything the test does after sees a live link.
  const isReady = (l: LinkRecord) => l.ws.readyState === l.ws.OPEN && l.frames.some((f) => f.type === 'hello');
  const unacked = new Map<string, LinkRecord>();

  const server: AgentsStandIn = {
    port,
    url: `ws://127.0.0.1:${port}/gateway`,
    deliveries: [],
    processed: new Map(),
    deliveredBy: new Map(),
    links,
    options,
    openLinks: () => links.filter(isReady),
    linkOf: (node) => [...links].reverse().find((l) => l.node === node && isReady(l)),
    framesOf: (type, node) => links.filter((l) => node === undefined || l.node === node).flatMap((l) => l.frames.filter((f) => f.type === type)),
    send(link, frame) {
      link.ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
    },
    ackAll() {
      const byLink = new Map<LinkRecord, string[]>();
      for (const [fid, link] of unacked) {
        const target = link.ws.readyState === link.ws.OPEN ? link : server.openLinks()[0];
        if (!target) continue;
        byLink.set(target, [...(byLink.get(target) ?? []), fid]);
      }
      for (const [link, ids] of byLink) {
        server.send(link, { type: 'feedback_ack', projectGuid: null, id: null, data: { feedbackIds: ids } });
        for (const id of ids) unacked.delete(id);
      }
    },
    dropLinks() {
      for (const l of links) l.ws.terminate();
    },
    stall() {
      // ws reads (and answers pings and closes) only while its socket flows.
      for (const l of links) (l.ws as unknown as { _socket: { pause(): void } })._socket.pause();
    },
    async stop() {
      for (const l of links) l.ws.terminate();
      await new Promise((r) => wss.close(r));
    },
  };

  wss.on('connection', (ws, req) => {
    const link: LinkRecord = { node: String(req.headers['x-gateway-node'] ?? ''), ws, frames: [] };
    links.push(link);
    ws.on('message', (raw) => {
      const frame = JSON.parse(raw.toString()) as Upstream;
      link.frames.push(frame);
      if (frame.type !== 'user_feedback') return;
      server.deliveries.push(frame);
      const fid = frame.data.feedbackId as string;
      const first = !server.processed.has(fid);
      if (first) {
        server.processed.set(fid, frame);
        server.deliveredBy.set(fid, link.node);
      }
      // Acks are idempotent: a duplicate is acked again (its first ack may have been lost with a link).
      if (server.options.autoAck ?? true) server.send(link, { type: 'feedback_ack', projectGuid: null, id: null, data: { feedbackIds: [fid] } });
      else unacked.set(fid, link);
      if (first) server.options.onFeedback?.(frame, link, server);
    });
  });
  return server;
}
