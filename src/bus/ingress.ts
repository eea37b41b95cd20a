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

export interface IngressDeps {
  readonly bus: EventBus;
  readonly limits: DataLimits;
  readonly onAppended?: (count: number) => void;
  /**
   * Overload: how long the project's events already accepted have waited for fan-out (ms), and the
   * longest wait tolerated. Past it, appends to that project are refused (OVERLOADED, nothing
   * appended) until fan-out catches up, so the delay an accepted event waits stays bounded and the
   * producer is told to slow down instead of every event arriving late.
   */
  readonly fanoutDelayOf?: (projectGuid: string) => number;
  readonly maxFanoutDelayMs?: number;
  readonly onOverloaded?: (count: number) => void;
}

/** The one way in for events: the check above, the overload check, then the bus. */
export function createIngress(deps: IngressDeps): Ingress {
  const maxDelay = deps.maxFanoutDelayMs ?? Infinity;
  return {
    async append(projectGuid, events, keyed) {
      const { guid, events: checked } = checkEvents(projectGuid, events, deps.limits, keyed?.idempotencyKey);
      // Nothing to append (and no key to record for nothing).
      if (checked.length === 0) return { ids: [], replayed: false };
      const behind = deps.fanoutDelayOf?.(guid) ?? 0;
      if (behind > maxDelay) {
        deps.onOverloaded?.(checked.length);
        throw new GatewayError('OVERLOADED', `fan-out of this project is ${Math.round(behind)} ms behind (bound ${maxDelay} ms); nothing appended, retry after Retry-After`, 1);
      }
      const result = await deps.bus.publish(guid, checked, keyed);
      if (!result.replayed) deps.onAppended?.(result.ids.length);
      return result;
    },
  };
}
