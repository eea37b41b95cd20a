// The projects the app has joined, as the client keeps them across sockets: each room is joined
// again on every new socket with `since` (the last event id it delivered) so the server replays
// what was missed; replayed duplicates are dropped; a resume the history no longer reaches is a
// resync. The server's word on a room (its ack, an error, a revocation) lands here too.
import type { ErrorCode } from '../errors.js';
import { compareIds, isEventId } from '../protocol/event-id.js';
import type { Envelope } from '../protocol/messages.js';
import { GatewayClientError, type JoinAck, type ProjectEventEnvelope, type ProjectHandlers, type ResyncInfo } from './api.js';
import { safeCall, type Emit } from './listeners.js';
import { backoffDelay, type ReconnectPolicy } from './policy.js';
import type { Requests } from './requests.js';
import type { Link } from './wire.js';

interface Room {
  guid: string;
  handlers: ProjectHandlers;
  lastId: string | null;
  acked: boolean;
  retries: number;
  ready: Promise<JoinAck>;
  settle: { resolve: (ack: JoinAck) => void; reject: (err: Error) => void };
}

// Errors after which re-sending the same join on the same connection may succeed.
const TRANSIENT_CODES: ReadonlySet<string> = new Set<ErrorCode>(['UNAVAILABLE', 'RATE_LIMITED', 'INTERNAL']);

export interface Rooms {
  join(projectGuid: string, handlers?: ProjectHandlers): Promise<JoinAck>;
  leave(projectGuid: string): void;
  lastEventId(projectGuid: string): string | null;
  /** A socket has just opened: joins every tracked room again, each resuming from its last event. */
  rejoinAll(): void;
  /** A project event: to its room's handler and the 'event' listeners, each id once, in order. */
  deliver(env: ProjectEventEnvelope): void;
  /** The server left a room for us (a refreshed token no longer grants it): stop tracking it. */
  revoke(env: Envelope): void;
  /** close(): every join still waiting fails with `err`, and no room is tracked any more. */
  rejectAll(err: GatewayClientError): void;
}

export interface RoomsDeps {
  link: Link;
  requests: Requests;
  nextId: () => string;
  emit: Emit;
  /** The backoff of a join the server could not take at the moment (UNAVAILABLE, ...). */
  reconnect: ReconnectPolicy;
}

export function createRooms(deps: RoomsDeps): Rooms {
  const { link, requests, nextId, emit } = deps;
  const rooms = new Map<string, Room>();

  function sendJoin(room: Room): void {
    const id = nextId();
    // A room that was joined but has seen no event still resumes from the beginning of its
    // history, otherwise events published while we were away would be lost.
    const since = room.lastId ?? (room.acked ? '0-0' : undefined);
    requests.track(id, {
      inFlight: true,
      reply: (env) => onJoinAck(room, env.data as JoinAck, since),
      fail: (err) => onJoinError(room, err),
      lost: () => {}, // re-sent with a fresh id on the next open
    });
    link.send({ type: 'join_project', projectGuid: room.guid, id, data: since === undefined ? {} : { since } });
  }

  function onJoinAck(room: Room, ack: JoinAck, since: string | undefined): void {
    if (rooms.get(room.guid) !== room) return; // left meanwhile
    if (since !== undefined && ack.recovered === false) {
      // History no longer reaches back: ids may even have restarted, so take the server's word.
      room.lastId = isEventId(ack.latestId) ? ack.latestId : null;
      const info: ResyncInfo = { projectGuid: room.guid, since, latestId: room.lastId };
      if (room.handlers.resync) safeCall(() => room.handlers.resync!(info));
      emit('resync', info);
    } else if (isEventId(ack.latestId) && (room.lastId === null || compareIds(ack.latestId, room.lastId) > 0)) {
      room.lastId = ack.latestId;
    }
    room.acked = true;
    room.retries = 0;
    room.settle.resolve(ack);
  }

  function onJoinError(room: Room, err: GatewayClientError): void {
    if (rooms.get(room.guid) !== room) return;
    if (TRANSIENT_CODES.has(err.code)) {
      const sock = link.socket;
      setTimeout(() => { if (link.socket === sock && link.isOpen() && rooms.get(room.guid) === room) sendJoin(room); }, backoffDelay(room.retries++, deps.reconnect));
      return;
    }
    rooms.delete(room.guid); // FORBIDDEN, INVALID_GUID, TOO_MANY_ROOMS: retrying cannot help
    room.settle.reject(err);
  }

  return {
    join(projectGuid, handlers) {
      const guid = projectGuid.toLowerCase();
      const existing = rooms.get(guid);
      if (existing) {
        if (handlers) existing.handlers = handlers;
        return existing.ready;
      }
      if (link.closed) return Promise.reject(new GatewayClientError('CLIENT_CLOSED', 'client is closed'));
      let settle!: Room['settle'];
      const ready = new Promise<JoinAck>((resolve, reject) => { settle = { resolve, reject }; });
      ready.catch(() => {}); // failures are also emitted as 'error'; don't force callers to await
      const room: Room = { guid, handlers: handlers ?? {}, lastId: null, acked: false, retries: 0, ready, settle };
      rooms.set(guid, room);
      if (link.isOpen()) sendJoin(room); // otherwise rejoinAll() joins every tracked room once a socket opens
      return ready;
    },

    leave(projectGuid) {
      const guid = projectGuid.toLowerCase();
      const room = rooms.get(guid);
      if (!room) return;
      rooms.delete(guid);
      room.settle.reject(new GatewayClientError('LEFT', 'left before the join completed'));
      // Not queued when offline: a room we no longer track is simply not re-joined.
      if (link.isOpen()) link.send({ type: 'leave_project', projectGuid: guid, id: nextId(), data: {} });
    },

    lastEventId(projectGuid) {
      return rooms.get(projectGuid.toLowerCase())?.lastId ?? null;
    },

    rejoinAll() {
      for (const room of rooms.values()) sendJoin(room);
    },

    deliver(env) {
      const room = typeof env.projectGuid === 'string' ? rooms.get(env.projectGuid.toLowerCase()) : undefined;
      if (!room || !isEventId(env.id)) return;
      // Replays after a reconnect may overlap what was already seen: ids only ever move forward.
      if (room.lastId !== null && compareIds(env.id, room.lastId) <= 0) return;
      room.lastId = env.id;
      if (room.handlers.event) safeCall(() => room.handlers.event!(env));
      emit('event', env);
    },

    revoke(env) {
      const guid = typeof env.projectGuid === 'string' ? env.projectGuid.toLowerCase() : '';
      const room = rooms.get(guid);
      if (!room) return;
      rooms.delete(guid);
      const err = new GatewayClientError('FORBIDDEN', `access to project ${guid} was revoked`, env);
      room.settle.reject(err);
      emit('error', err);
    },

    rejectAll(err) {
      for (const room of rooms.values()) room.settle.reject(err);
      rooms.clear();
    },
  };
}
