import type { Logger } from 'pino';
import type { EventBus } from '../bus/bus.js';
import type { IncomingEvent } from '../bus/ingress.js';
import { agentsCursorsKey } from '../redis/keys.js';
import type { Config } from '../config.js';
import { toGatewayError, type ErrorCode } from '../errors.js';
import type { FeedbackRefusalReason, Metrics } from '../metrics.js';
import { encodeCheckedData } from '../protocol/limits.js';
import type { Envelope, FeedbackData } from '../protocol/messages.js';
import type { ProjectEvent } from '../protocol/events.js';
import type { ConnectionHooks } from '../connections/hooks.js';
import type { AgentFrame } from './agent-frames.js';
import { createAgentsLink } from './link.js';
import type { FeedbackRecord, Outbox } from './outbox.js';
import { createMemoryOutbox } from './outbox-memory.js';
import { createPendingCounts, localLedger, quotaRefusalOf, type FeedbackLedger, type QuotaRefusal } from './feedback-quotas.js';
import { createRedisLedger } from './feedback-quotas-redis.js';
import { createRedisOutbox } from './outbox-redis.js';
import { createPresence, type PresenceHub } from './presence.js';
import { createRedisClient, type RedisClient } from '../redis/client.js';
import type { PubSub } from '../redis/pubsub.js';
import { compressionFilter } from '../connections/compression.js';
import { createReplies, type RepliesHub } from './replies.js';
import { createSubscriptions, type CursorStore } from './subscriptions.js';

/** A history replay to the agents-server pauses while more than this is waiting in the link's send buffer. */
const REPLAY_BUFFER_BYTES = 4 * 1024 * 1024;

/** What the user is told when their feedback is taken (docs/agents.md). */
export interface FeedbackAcceptance {
  /** 'accepted': stored durably (Redis). 'queued': held in this process's memory only (no Redis). */
  status: 'accepted' | 'queued';
  feedbackId: string;
  durable: boolean;
  /** Kept for clients written against v1's first reply shape: true whenever the gateway took the feedback. */
  accepted: true;
  /** Always false now: delivery to the agents-server happens after this reply, confirmed by its ack. */
  forwarded: false;
}

/**
 * What the instances of one process share when there is no Redis (WORKERS > 1: each worker thread
 * is an instance, the hub lives in the main thread, src/workers/agents-hub.ts): presence, targeted
 * replies with the inbox of offline users, and the positions confirmed with project_update_ack.
 */
export interface RelayHub {
  presence: PresenceHub;
  replies: RepliesHub;
  cursors: CursorStore;
  /** The process's pending-feedback counts (FEEDBACK_MEMORY_QUEUE and the quotas hold per process). */
  feedback: FeedbackLedger;
}

/** The relay follows every socket's life (ConnectionHooks: targeted replies, presence). */
export interface AgentsRelay extends ConnectionHooks {
  /** Stores a user's feedback for the agents-server; rejects (GatewayError) if it was not stored. */
  acceptFeedback(f: { projectGuid: string; userId: string; requestId: string | null; data: FeedbackData }): Promise<FeedbackAcceptance>;
  /** The bus sink: every event of the projects the agents-server subscribed to goes up as project_update. */
  receive(projectGuid: string, events: readonly ProjectEvent[]): void;
  isConnected(): boolean;
  close(): Promise<void>;
}

/** What createAgentsRelay is given. */
export interface AgentsRelayOptions {
  config: Config;
  /**
   * Who this relay is in Redis and to the agents-server: its feedback consumer name, its presence
   * entry, its link's `hello`. NODE_ID for a single-thread gateway; each worker thread is an instance
   * of its own (`<NODE_ID>.w<n>`), as a separate process would be.
   */
  instanceId: string;
  /** Without Redis, in a worker thread: where this process's instances meet. Unused with Redis. */
  hub?: RelayHub | undefined;
  /** With Redis: the gateway's pub/sub router (targeted replies and presence register their channels). */
  pubsub: PubSub | null;
  /** The shared-watch bus (see shared-watches.ts). */
  bus: EventBus;
  log: Logger;
  metrics: Metrics;
  /** Publishes an agent_message to a project's room through the gateway's checked append path. */
  publish: (projectGuid: string, event: IncomingEvent) => Promise<unknown>;
}

/**
 * The parts that keep state across instances: in Redis, else in the hub (worker threads without
 * Redis), else in this instance alone. `clients` are the Redis connections opened here.
 */
function createStateParts(options: AgentsRelayOptions) {
  const { config, log, metrics, instanceId } = options;
  const redisConfig = config.redis;
  const clients: RedisClient[] = [];
  const client = (role: string) => {
    // Commands on the command connection fail fast while Redis is down (feedback is then refused,
    // never accepted); the reader waits for the reconnect instead.
    const c = createRedisClient(redisConfig!, instanceId, `agents-${role}`, { blocking: role !== 'cmd', log });
    clients.push(c);
    return c;
  };
  const cmd = redisConfig ? client('cmd') : null;
  const pubsub = options.pubsub;
  if (cmd && !pubsub) throw new Error('createAgentsRelay: Redis is configured but no pub/sub router was passed');
  const prefix = redisConfig?.prefix ?? '';

  const quotas = { perUser: config.feedback.pendingPerUser, perProject: config.feedback.pendingPerProject };
  const common = { nodeId: instanceId, log, metrics, claimIdleMs: config.feedback.claimIdleMs, maxInflight: config.feedback.maxInflight, quotas };
  const hub = cmd ? undefined : options.hub;
  const outbox: Outbox = cmd
    ? createRedisOutbox({
        ...common,
        cmd,
        reader: client('feedback-reader'),
        clustered: !!redisConfig!.clusterNodes,
        prefix,
        shards: config.feedback.streamShards,
        streamMax: config.feedback.streamMax,
        ledger: createRedisLedger({ cmd, prefix, quotas, clustered: !!redisConfig!.clusterNodes, healMs: config.feedback.quotaHealS * 1000, onReleaseError: (err) => log.warn({ err: (err as Error).message }, 'agents relay: pending-feedback count not released (heals after FEEDBACK_QUOTA_HEAL_S)') }),
      })
    : createMemoryOutbox({
        ...common,
        maxQueued: config.feedback.memoryQueue,
        // Worker threads share the process's counts through the hub; a single thread keeps its own.
        ledger: hub?.feedback ?? localLedger(createPendingCounts({ ...quotas, total: config.feedback.memoryQueue })),
      });
  const redis = cmd && pubsub ? { redis: { cmd, pubsub, prefix } } : {};
  const replies = createReplies({ ...redis, ...(hub ? { hub: hub.replies } : {}), nodeId: instanceId, log, metrics, offlineWindowS: config.agentReplyOfflineS, compress: compressionFilter(config.compression) });
  const presence = createPresence({ ...redis, ...(hub ? { hub: hub.presence } : {}), nodeId: instanceId, log, expiryMs: config.presenceExpiryMs });

  const memoryCursors = new Map<string, string>();
  const cursors: CursorStore = cmd
    ? {
        get: async (guid) => ((await cmd.call('HGET', agentsCursorsKey(prefix), guid)) as string | null) ?? null,
        set: async (guid, id) => void (await cmd.call('HSET', agentsCursorsKey(prefix), guid, id)),
      }
    : (hub?.cursors ?? { get: async (guid) => memoryCursors.get(guid) ?? null, set: async (guid, id) => void memoryCursors.set(guid, id) });
  return { clients, outbox, replies, presence, cursors };
}

/**
 * The agents side of the gateway (design doc 3.2.5, AgentCommunicationHandler), composed from small
 * parts: the link (WebSocket, heartbeat, reconnect), the feedback outbox (durable with Redis), targeted
 * replies, project subscriptions and presence. docs/agents.md is the protocol.
 */
export function createAgentsRelay(options: AgentsRelayOptions): AgentsRelay {
  const { config, log, metrics, instanceId } = options;
  const agents = config.agents!;
  const { clients, outbox, replies, presence, cursors } = createStateParts(options);

  const link = createAgentsLink({
    url: agents.url,
    ...(agents.token ? { token: agents.token } : {}),
    nodeId: instanceId,
    log,
    metrics,
    heartbeatMs: agents.heartbeatMs,
    reconnectMaxMs: agents.reconnectMaxMs,
    // The biggest legitimate frame carries one data object within the limits, plus the envelope.
    maxFrameBytes: config.dataLimits.maxBytes + 65536,
    onOpen() {
      presence.setSink((frame) => {
        if (link.send({ type: 'project_status_sync', projectGuid: frame.kind === 'change' ? frame.projectGuid : null, id: null, data: frame })) metrics.presenceChangesSent.inc({ kind: frame.kind });
      });
      outbox.attach(sendFeedback);
    },
    onClose() {
      outbox.detach();
      presence.setSink(null);
      subscriptions.reset();
    },
    onFrame: handleFrame,
  });

  const subscriptions = createSubscriptions({
    bus: options.bus,
    log,
    historyPageSize: config.stream.historyPageSize,
    cursors,
    send: (frame) => link.send(frame),
    onSent: () => metrics.projectUpdatesSent.inc(),
    drained: async () => {
      while (link.isOpen() && link.bufferedAmount() > REPLAY_BUFFER_BYTES) await new Promise((r) => setTimeout(r, 10));
    },
  });

  function sendFeedback(record: FeedbackRecord, redelivery: boolean): boolean {
    return link.send({ type: 'user_feedback', projectGuid: record.projectGuid, id: record.feedbackId, data: { ...record, redelivery } });
  }

  function reject(frame: AgentFrame, code: string, message: string): void {
    metrics.agentsFramesInvalid.inc({ reason: 'data' });
    log.warn({ type: frame.type, code, message }, 'agents-server frame skipped');
    link.send({ type: 'error', projectGuid: frame.projectGuid, id: frame.id, data: { code, message } });
  }

  function handleFrame(frame: AgentFrame): void {
    switch (frame.type) {
      case 'feedback_ack':
        return outbox.ack(frame.data.feedbackIds);
      case 'user_feedback_response':
      case 'agent_message': {
        // A broadcast goes into the project's log through the ingress, which checks the data against
        // the limits every entry point passes (and encodes it once); a refusal goes back as an error.
        if (frame.type === 'agent_message' && frame.userId === undefined) {
          options.publish(frame.projectGuid, { type: 'agent_message', data: frame.data }).catch((err: unknown) => {
            const e = toGatewayError(err);
            if (e.code === 'INTERNAL') log.error({ err, projectGuid: frame.projectGuid }, 'could not relay agent_message');
            else log.warn({ type: frame.type, code: e.code, message: e.message }, 'agents-server frame skipped');
            link.send({ type: 'error', projectGuid: frame.projectGuid, id: frame.id, data: { code: e.code, message: e.message } });
          });
          return;
        }
        // A targeted reply does not pass the ingress: the same limits are checked here.
        try {
          encodeCheckedData(frame.data, config.dataLimits, 'data');
        } catch (err) {
          const e = toGatewayError(err);
          return reject(frame, e.code, e.message);
        }
        const envelope: Envelope = { type: frame.type, projectGuid: frame.projectGuid, data: frame.data, timestamp: new Date().toISOString(), id: frame.id };
        replies.send(frame.userId!, envelope).then(
          (outcome) => link.send({ type: 'reply_status', projectGuid: frame.projectGuid, id: frame.id, data: { userId: frame.userId, outcome } }),
          (err: unknown) => {
            log.warn({ err: (err as Error).message }, 'agents relay: targeted reply not delivered');
            link.send({ type: 'error', projectGuid: frame.projectGuid, id: frame.id, data: { code: 'UNAVAILABLE', message: 'reply not delivered; retry' } });
          },
        );
        return;
      }
      case 'subscribe':
        return subscriptions.subscribe(frame.data.projects, frame.id);
      case 'unsubscribe':
        return subscriptions.unsubscribe(frame.data.projects);
      case 'project_update_ack':
        return subscriptions.confirm(frame.projectGuid, frame.data.eventId);
    }
  }

  return {
    async acceptFeedback(f) {
      // The same data limits as every other entry point (meta's shape was checked on arrival; its size is checked here).
      try {
        encodeCheckedData(f.data, config.dataLimits, 'data');
      } catch (err) {
        metrics.feedbackRefused.inc(feedbackRefusal(err));
        throw err;
      }
      const { feedbackId, durable } = await outbox
        .accept({
          projectGuid: f.projectGuid,
          userId: f.userId,
          requestId: f.requestId,
          content: f.data.content,
          ...(f.data.replyTo !== undefined ? { replyTo: f.data.replyTo } : {}),
          ...(f.data.meta !== undefined ? { meta: f.data.meta } : {}),
        })
        .catch((err: unknown) => {
          metrics.feedbackRefused.inc(feedbackRefusal(err));
          throw err;
        });
      return { status: durable ? 'accepted' : 'queued', feedbackId, durable, accepted: true, forwarded: false };
    },
    opened: (conn) => replies.track(conn),
    joined: (conn, guid) => presence.joined(conn, guid),
    left: (conn, guid) => presence.left(conn, guid),
    closed(conn) {
      presence.closed(conn);
      replies.untrack(conn);
    },
    receive(guid, events) {
      // Called from the bus sink: a failure here must not reach the bus (or the rooms after it).
      try {
        subscriptions.receive(guid, events);
      } catch (err) {
        log.error({ err, projectGuid: guid }, 'agents relay: project_update delivery failed');
      }
    },
    isConnected: () => link.isOpen(),
    async close() {
      link.close();
      subscriptions.reset();
      await outbox.close();
      await presence.close();
      replies.close();
      // The outbox already ended its reader (to cut its blocking read short). ioredis's disconnect()
      // on a connection whose socket has closed arms a 2 s destroy timer that nothing clears (it
      // waits for a 'close' that already happened): in a worker thread that timer alone kept the
      // thread alive until the pool terminated it.
      for (const c of clients) if (c.status !== 'end') c.disconnect();
    },
  };
}

const QUOTA_REFUSAL_REASONS: Record<QuotaRefusal, FeedbackRefusalReason> = { user: 'user_quota', project: 'project_quota', store: 'store_full' };

/** feedback_refused_total's labels for a feedback not accepted: the code the user got, and why (FEEDBACK_REFUSALS). */
function feedbackRefusal(err: unknown): { code: ErrorCode; reason: FeedbackRefusalReason } {
  const { code } = toGatewayError(err);
  const refusal = quotaRefusalOf(err);
  if (refusal) return { code, reason: QUOTA_REFUSAL_REASONS[refusal] };
  switch (code) {
    case 'FEEDBACK_QUEUE_FULL':
      return { code, reason: 'store_full' };
    case 'UNAVAILABLE':
      return { code, reason: 'store_unavailable' };
    case 'INVALID_DATA':
    case 'PAYLOAD_TOO_LARGE':
      return { code, reason: 'data_limits' };
    default:
      return { code, reason: 'internal' };
  }
}
