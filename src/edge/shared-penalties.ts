import type { Logger } from 'pino';
import type { RedisClient } from '../redis/client.js';
import type { PubSub } from '../redis/pubsub.js';
import type { EdgeState } from './admission.js';

/** Longest penalty a message from the channel may set (RATE_LIMIT_PENALTY_S's maximum). */
const MAX_PENALTY_S = 3600;

interface PenaltyMessage {
  /** The instance that closed the flooder (it applied the penalty already). */
  readonly o: string;
  readonly u: string;
  readonly a: string | null;
  readonly s: number;
}

/**
 * Penalties every instance enforces: behind a load balancer a client closed for flooding reconnects
 * to any instance, so the penalty goes to all of them on one pub/sub channel, and each applies it to
 * its process's edge state (the flooder's socket is closed once Redis has passed the penalty on).
 * Anyone who can reach Redis can publish on that channel: a message is applied only if it is well
 * formed, with a bounded time.
 */
export function sharePenaltiesOverRedis(
  edge: EdgeState,
  options: { publisher: RedisClient; pubsub: PubSub; channel: string; instanceId: string; log: Logger },
): EdgeState {
  const { publisher, pubsub, channel, instanceId, log } = options;
  const onMessage = (text: string) => {
    const m = parse(text);
    if (!m) {
      log.warn({ channel }, 'malformed penalty message skipped');
      return;
    }
    if (m.o !== instanceId) edge.penalize(m.u, m.a, m.s);
  };
  pubsub.subscribe(channel, onMessage).catch((err: unknown) => log.warn({ err: (err as Error).message }, 'penalty channel subscription failed; penalties hold on this instance only until Redis answers'));
  return {
    ...edge,
    penalize(userId, address, seconds, now) {
      edge.penalize(userId, address, seconds, now);
      const message: PenaltyMessage = { o: instanceId, u: userId, a: address, s: seconds };
      // Redis answers after writing the message to every subscriber: the caller closes the flooder then.
      return publisher.publish(channel, JSON.stringify(message)).then(
        () => undefined,
        (err: unknown) => log.warn({ err: (err as Error).message }, 'penalty not shared with the other instances (Redis unavailable)'),
      );
    },
  };
}

function parse(text: string): PenaltyMessage | null {
  try {
    const m = JSON.parse(text) as Partial<PenaltyMessage> | null;
    if (!m || typeof m.o !== 'string' || typeof m.u !== 'string' || m.u.length === 0 || m.u.length > 256) return null;
    if (m.a !== null && (typeof m.a !== 'string' || m.a.length > 64)) return null;
    if (typeof m.s !== 'number' || !Number.isFinite(m.s) || m.s <= 0 || m.s > MAX_PENALTY_S) return null;
    return { o: m.o, u: m.u, a: m.a, s: m.s };
  } catch {
    return null;
  }
}
