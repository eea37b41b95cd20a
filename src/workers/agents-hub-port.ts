import type { QuotaRefusal } from '../agents/feedback-quotas.js';
import type { PresenceChange, PresenceSnapshot } from '../agents/presence.js';
import type { RelayHub } from '../agents/relay.js';
import type { ReplyOutcome } from '../agents/replies.js';
import type { Envelope } from '../protocol/messages.js';
import type { AgentsHubMessage, AgentsHubRequest } from './agents-hub.js';
import type { FromWorker } from './messages.js';

export interface AgentsHubPort {
  /** What the worker's agents relay uses (GatewayDeps.agentsHub). */
  readonly hub: RelayHub;
  /** Feeds in every 'agents-hub' message the worker receives. */
  receive(message: AgentsHubMessage): void;
}

/**
 * A worker thread's side of the main thread's agents hub (agents-hub.ts): every call is a message
 * on the worker's port, every change and delivery comes back on the same port, in order.
 */
export function createAgentsHubPort(send: (message: FromWorker) => void): AgentsHubPort {
  const answers = new Map<number, (value: unknown) => void>();
  let nextRequestId = 1;
  // Set when the relay is built. A change that arrives before is part of the snapshot the
  // presence asks for as it starts (the port keeps the order); a delivery needs a user registered first.
  let onChange: ((change: PresenceChange) => void) | null = null;
  let onDeliver: ((userId: string, envelope: Envelope) => void) | null = null;

  const request = (r: AgentsHubRequest) => send({ kind: 'agents-hub', request: r });
  function ask<T>(build: (requestId: number) => AgentsHubRequest): Promise<T> {
    const requestId = nextRequestId++;
    return new Promise<T>((resolve) => {
      answers.set(requestId, resolve as (value: unknown) => void);
      request(build(requestId));
    });
  }

  const hub: RelayHub = {
    presence: {
      announce: (node, field, online) => request({ op: 'presence', node, field, online }),
      snapshot: () => ask<PresenceSnapshot>((requestId) => ({ op: 'presence-snapshot', requestId })),
      onChange: (handler) => void (onChange = handler),
    },
    replies: {
      online: (userId) => request({ op: 'user-online', userId }),
      offline: (userId) => request({ op: 'user-offline', userId }),
      send: (userId, envelope) => ask<ReplyOutcome>((requestId) => ({ op: 'reply', requestId, userId, envelope })),
      onDeliver: (handler) => void (onDeliver = handler),
    },
    cursors: {
      get: (guid) => ask<string | null>((requestId) => ({ op: 'cursor-get', requestId, guid })),
      set: async (guid, eventId) => request({ op: 'cursor-set', guid, eventId }),
    },
    feedback: {
      reserve: ({ feedbackId, userId, projectGuid }) => ask<QuotaRefusal | null>((requestId) => ({ op: 'feedback-reserve', requestId, entry: { feedbackId, userId, projectGuid } })),
      release: (entries) => {
        if (entries.length) request({ op: 'feedback-release', feedbackIds: entries.map((e) => e.feedbackId) });
      },
    },
  };

  return {
    hub,
    receive(message) {
      switch (message.op) {
        case 'presence-change':
          return onChange?.(message.change);
        case 'deliver':
          return onDeliver?.(message.userId, message.envelope);
        case 'answer': {
          const resolve = answers.get(message.requestId);
          answers.delete(message.requestId);
          return resolve?.(message.value);
        }
      }
    },
  };
}
