import type { Logger } from 'pino';
import { isGuid } from '../protocol/messages.js';
import type { RedisClient } from '../redis/client.js';
import type { PubSub } from '../redis/pubsub.js';
import { ANY_PROJECT } from '../bus/ingress.js';
import { REMOTE_REPORTER, type FanoutDelays } from './fanout-delay.js';

/** How often one project's delay is sent again while it stays past the bound (a report is fresh for 2 s). */
const RESEND_MS = 50;
/** Projects one message may carry, and the largest delay it may claim (FANOUT_MAX_DELAY_MS's maximum). */
const MAX_PROJECTS = 1000;
const MAX_DELAY_MS = 600_000;

interface OverloadMessage {
  /** The instance whose fan-out is behind (it has the reports already). */
  readonly o: string;
  /** Project GUIDs and how long an event accepted now would wait there (ms), pairwise. */
  readonly g: readonly string[];
  readonly d: readonly number[];
}

/**
 * The overload bound across instances: a producer's request may land on an instance whose own
 * fan-out of the project keeps up while another instance's is behind. An instance past the bound
 * for a project says so on one pub/sub channel (at most every RESEND_MS per project, only while
 * past it, and once more with 0 when it is back under), and every instance adds that to its
 * process's delay table, so the ingress anywhere refuses until the slowest instance caught up.
 * Under the bound nothing is sent. Anyone who can reach Redis can publish on the channel: a message
 * is applied only if well formed and bounded.
 */
export function shareFanoutDelaysOverRedis(
  delays: FanoutDelays,
  options: { publisher: RedisClient; pubsub: PubSub; channel: string; instanceId: string; boundMs: number; log: Logger },
): FanoutDelays {
  const { publisher, pubsub, channel, instanceId, boundMs, log } = options;
  pubsub
    .subscribe(channel, (text) => {
      const m = parse(text);
      if (!m) return void log.warn({ channel }, 'malformed overload message skipped');
      if (m.o === instanceId) return;
      // Another instance's backlog in bytes is not this one's to scale: its wait counts as reported.
      delays.report(new Map(m.g.map((guid, i) => [guid, { ms: m.d[i]!, bytes: 0 }])), undefined, REMOTE_REPORTER);
    })
    .catch((err: unknown) => log.warn({ err: (err as Error).message }, 'overload channel subscription failed; the bound holds per instance until Redis answers'));
  const sentAt = new Map<string, number>();
  return {
    backlogOf: delays.backlogOf,
    report(backlogs, now = Date.now()) {
      delays.report(backlogs, now);
      let g: string[] | null = null;
      let d: number[] | null = null;
      for (const [guid, { ms }] of backlogs) {
        // The fan-out's report about itself is this process's own.
        if (guid === ANY_PROJECT) continue;
        let said: number;
        if (ms <= boundMs) {
          // Back under the bound: said once (0), so the others stop refusing now and not when the report goes stale.
          if (!sentAt.delete(guid)) continue;
          said = 0;
        } else {
          if (now - (sentAt.get(guid) ?? -Infinity) < RESEND_MS) continue;
          sentAt.set(guid, now);
          said = Math.round(ms);
        }
        (g ??= []).push(guid);
        (d ??= []).push(said);
        if (g.length === MAX_PROJECTS) break;
      }
      // A project past the bound whose room closed never reports 0: its entry goes after a while (the others' records go stale).
      if (sentAt.size > 4 * MAX_PROJECTS) for (const [guid, at] of sentAt) if (now - at >= RESEND_MS) sentAt.delete(guid);
      if (!g || !d) return;
      const message: OverloadMessage = { o: instanceId, g, d };
      publisher.publish(channel, JSON.stringify(message)).catch((err: unknown) => log.warn({ err: (err as Error).message }, 'overload not shared with the other instances (Redis unavailable)'));
    },
  };
}

function parse(text: string): OverloadMessage | null {
  try {
    const m = JSON.parse(text) as Partial<OverloadMessage> | null;
    if (!m || typeof m.o !== 'string' || !Array.isArray(m.g) || !Array.isArray(m.d) || m.g.length !== m.d.length || m.g.length > MAX_PROJECTS) return null;
    if (!m.g.every((g) => typeof g === 'string' && isGuid(g))) return null;
    if (!m.d.every((d) => typeof d === 'number' && Number.isFinite(d) && d >= 0 && d <= MAX_DELAY_MS)) return null;
    return { o: m.o, g: m.g.map((g: string) => g.toLowerCase()), d: m.d };
  } catch {
    return null;
  }
}
