import { GatewayError } from '../errors.js';
import { encodeCheckedData, type DataLimits } from '../protocol/limits.js';
import { isEventType, isGuid } from '../protocol/messages.js';
import type { AppendResult, EventBus, IdempotentPublish, NewEvent } from './bus.js';
import { IDEMPOTENCY_KEY_PATTERN } from './idempotency.js';

/** An event as a caller hands it in: nothing about it is trusted yet. */
export interface IncomingEvent {
  readonly type: unknown;
  readonly data: unknown;
}

/** What passed the check: the project's canonical (lower-case) GUID, and events whose data is encoded. */
export interface CheckedEvents {
  readonly guid: string;
  readonly events: NewEvent[];
}

/**
 * The one check every event passes on its way into a project's log, wherever it comes from (the
 * HTTP API, the agents-server, an in-process publish, the exported producer): a canonical GUID, an
 * idempotency key of the allowed form, event types of the protocol, and data that is a JSON object
 * within the data limits. The data is encoded to JSON here, once; the buses store that string.
 * Throws a GatewayError naming the first problem; a batch is refused whole.
 */
export function checkEvents(projectGuid: string, events: readonly IncomingEvent[], limits: DataLimits, idempotencyKey?: string): CheckedEvents {
  if (!isGuid(projectGuid)) throw new GatewayError('INVALID_GUID');
  if (idempotencyKey !== undefined && !IDEMPOTENCY_KEY_PATTERN.test(idempotencyKey)) {
    throw new GatewayError('INVALID_FRAME', `Idempotency-Key must match ${IDEMPOTENCY_KEY_PATTERN.source}`);
  }
  const checked = events.map((e, i): NewEvent => {
    const what = events.length > 1 ? `events[${i}].data` : 'data';
    if (!isEventType(e.type)) throw new GatewayError('UNKNOWN_TYPE', `unknown event type ${JSON.stringify(String(e.type).slice(0, 64))}`);
    // Readers of a stream skip an entry whose data is not an object (it is the producer contract):
    // refused here, it never becomes an event only some readers see.
    if (e.data === null || typeof e.data !== 'object' || Array.isArray(e.data)) throw new GatewayError('INVALID_DATA', `${what} must be a JSON object`);
    return { type: e.type, data: e.data, dataJson: encodeCheckedData(e.data, limits, what) };
  });
  return { guid: projectGuid.toLowerCase(), events: checked };
}

export interface Ingress {
  /** Checks (checkEvents) and appends; resolves with the ids (the first call's for a key its producer replayed). */
  append(projectGuid: string, events: readonly IncomingEvent[], keyed?: IdempotentPublish): Promise<AppendResult>;
}

/**
 * A project's fan-out backlog as the fan-out last reported it (src/rooms/fanout.ts): how long an event
 * accepted then would wait (ms), and the bytes queued ahead of it.
 */
export interface FanoutBacklog {
  readonly ms: number;
  readonly bytes: number;
}

export interface IngressDeps {
  readonly bus: EventBus;
  readonly limits: DataLimits;
  readonly onAppended?: (count: number) => void;
  /**
   * Overload: the project's fan-out backlog as last reported (`at`: when, any clock the reports and
   * this ingress share; null: not behind), and the longest wait tolerated. Past it, appends to that
   * project are refused (OVERLOADED, nothing appended) until fan-out catches up, so the delay an
   * accepted event waits stays bounded and the producer is told to slow down instead of every event
   * arriving late.
   */
  readonly fanoutBacklogOf?: (projectGuid: string) => (FanoutBacklog & { readonly at: number }) | null;
  readonly maxFanoutDelayMs?: number;
  readonly onOverloaded?: (count: number) => void;
}

/** What an event adds to a fan-out backlog: its data and the envelope around it (as fanout.ts counts retainedSize). */
const ENVELOPE_BYTES = 160;
/**
 * The key of the fan-out's report about itself rather than one project: once several rooms are
 * behind, the wait and bytes of the one draining fastest (per byte). A project with nothing queued is
 * judged by it: rooms behind share the fan-out turn by turn, so its batch drains at about that pace
 * (otherwise every idle project could take one large batch past the bound, and with many projects
 * the delay was rooms × batch, not the bound: measured 5-8 s under a 500 ms bound).
 */
export const ANY_PROJECT = '';

/** The one way in for events: the check above, the overload check, then the bus. */
export function createIngress(deps: IngressDeps): Ingress {
  const maxDelay = deps.maxFanoutDelayMs ?? Infinity;
  /**
   * Bytes this ingress accepted for a project behind since its last backlog report. A report comes
   * after each fan-out turn, but every request that arrives before the next turn would read the same
   * report: without counting them, one turn's burst of large batches all passed the bound at once.
   */
  const acceptedSinceReport = new Map<string, { at: number; bytes: number }>();

  /**
   * How long this batch would wait if accepted now. A project behind: its reported wait, grown by what
   * was accepted since the report and by this batch. A project with nothing queued: its batch (and
   * what every such project took since the report) at the pace ANY_PROJECT reports.
   */
  function expectedWaitMs(guid: string, backlog: FanoutBacklog & { at: number }, own: boolean, bytes: number): number {
    if (backlog.bytes <= 0) return backlog.ms;
    // Projects with nothing queued share one count: their batches compete for the same turns.
    const mine = acceptedSinceReport.get(own ? guid : ANY_PROJECT);
    const extra = (mine && mine.at === backlog.at ? mine.bytes : 0) + bytes;
    return (own ? backlog.ms : 0) + (backlog.ms * extra) / backlog.bytes;
  }

  function noteAccepted(guid: string, at: number, bytes: number): void {
    const mine = acceptedSinceReport.get(guid);
    if (mine && mine.at === at) mine.bytes += bytes;
    else {
      // Entries of projects no longer behind go when their next report would have replaced them.
      if (acceptedSinceReport.size >= 1024) acceptedSinceReport.clear();
      acceptedSinceReport.set(guid, { at, bytes });
    }
  }

  return {
    async append(projectGuid, events, keyed) {
      const { guid, events: checked } = checkEvents(projectGuid, events, deps.limits, keyed?.idempotencyKey);
      // Nothing to append (and no key to record for nothing).
      if (checked.length === 0) return { ids: [], replayed: false };
      const own = deps.fanoutBacklogOf?.(guid) ?? null;
      const backlog = own ?? deps.fanoutBacklogOf?.(ANY_PROJECT) ?? null;
      if (backlog) {
        const bytes = batchBytes(checked);
        const behind = expectedWaitMs(guid, backlog, own !== null, bytes);
        if (behind > maxDelay) {
          deps.onOverloaded?.(checked.length);
          throw new GatewayError('OVERLOADED', `fan-out of this project is ${Math.round(behind)} ms behind (bound ${maxDelay} ms); nothing appended, retry after Retry-After`, 1);
        }
        noteAccepted(own ? guid : ANY_PROJECT, backlog.at, bytes);
      }
      const result = await deps.bus.publish(guid, checked, keyed);
      if (!result.replayed) deps.onAppended?.(result.ids.length);
      return result;
    },
  };
}

function batchBytes(events: readonly NewEvent[]): number {
  let bytes = 0;
  for (const e of events) bytes += (e.dataJson?.length ?? 256) + ENVELOPE_BYTES;
  return bytes;
}
