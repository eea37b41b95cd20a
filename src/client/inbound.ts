// Frames from the server, decoded and handed to the part they belong to: project events to their
// room, an answer to the request it answers, replies addressed to the user and error frames to the
// app's listeners.
import { isEventId } from '../protocol/event-id.js';
import { EVENT_TYPES, type Envelope } from '../protocol/messages.js';
import { GatewayClientError, type ProjectEventEnvelope } from './api.js';
import type { Emit } from './listeners.js';
import type { Requests } from './requests.js';
import type { Rooms } from './rooms.js';
import type { WireFormat } from './wire.js';

const EVENT_TYPE_SET: ReadonlySet<string> = new Set(EVENT_TYPES);

export interface FrameRouterDeps {
  wire: WireFormat;
  rooms: Rooms;
  requests: Requests;
  emit: Emit;
}

/** Returns the function that takes each raw frame (text or bytes; one envelope or a batch). */
export function createFrameRouter(deps: FrameRouterDeps): (raw: unknown) => void {
  const { rooms, requests, emit } = deps;

  function onEnvelope(env: Envelope): void {
    // Room events carry event ids; a targeted agent_message carries the id its sender chose.
    if (EVENT_TYPE_SET.has(env.type) && isEventId(env.id)) return rooms.deliver(env as ProjectEventEnvelope);
    if (env.type === 'leave_project' && env.id === null && (env.data as { reason?: unknown } | null)?.reason === 'access_revoked') return rooms.revoke(env);
    const p = typeof env.id === 'string' ? requests.take(env.id) : undefined;
    if (!p && (env.type === 'user_feedback_response' || env.type === 'agent_message')) return emit('reply', env);
    if (env.type === 'error') {
      const data = (env.data ?? {}) as { code?: string; message?: string };
      const err = new GatewayClientError(data.code ?? 'UNKNOWN', data.message ?? 'error frame', env);
      emit('error', err);
      p?.fail(err);
    } else {
      p?.reply(env);
    }
  }

  return (raw) => {
    let parsed: unknown;
    try { parsed = deps.wire.decode(raw); } catch (err) {
      emit('error', new GatewayClientError('BAD_FRAME', `server sent a frame that does not decode: ${String(err)}`));
      return;
    }
    for (const env of Array.isArray(parsed) ? parsed : [parsed]) {
      if (env && typeof env === 'object' && typeof (env as Envelope).type === 'string') onEnvelope(env as Envelope);
    }
  };
}
