// Browser client for the AutoCode WebSocket gateway (wire protocol: docs/protocol.md). Plain ES
// modules: src/client/ imports only the browser-safe protocol modules it shares with the server
// (message names and envelope types, event-id comparison, error and close codes, the backoff), so
// the compiled tree dist/browser/ can be served as-is; the gateway does, at /client/index.js.
//
// This module is the public face: every exported name, and createGatewayClient composing the parts
// (settings, the transport with its dial and heartbeat, requests, rooms, renewal, the inbound frame
// router, listeners).
import { GatewayClientError, type GatewayClient, type GatewayClientOptions } from './api.js';
import { createFrameRouter } from './inbound.js';
import { createListeners } from './listeners.js';
import { createRenewal } from './renewal.js';
import { createRequests } from './requests.js';
import { createRooms } from './rooms.js';
import { resolveSettings } from './settings.js';
import { createTransport } from './transport.js';
import { createIdSource, wireFormat } from './wire.js';

export { compareIds as compareEventIds, isEventId } from '../protocol/event-id.js';
export { CloseCodes, ErrorCodes, type ErrorCode } from '../errors.js';
export { EVENT_TYPES, SUBPROTOCOLS, type Envelope, type EventType } from '../protocol/messages.js';
export { backoffDelay, closeDecision, renewalDelayMs, tokenExpiryMs, type CloseDecision, type ReconnectOptions } from './policy.js';
export { defaultTicketsUrl } from './tickets.js';
export {
  GatewayClientError,
  type ClientErrorCode,
  type ClientEvents,
  type ConnectionState,
  type ConnectWith,
  type DisconnectInfo,
  type EventData,
  type FeedbackExtra,
  type FeedbackResponse,
  type FetchLike,
  type GatewayClient,
  type GatewayClientOptions,
  type JoinAck,
  type MessagePackCodec,
  type ProjectEventEnvelope,
  type ProjectHandlers,
  type ResyncInfo,
  type WebSocketCtor,
  type WebSocketLike,
} from './api.js';

export function createGatewayClient(options: GatewayClientOptions): GatewayClient {
  const settings = resolveSettings(options);
  const wire = wireFormat(settings.useMsgpack, settings.msgpack);
  const nextId = createIdSource();
  const { emit, on } = createListeners();

  // The parts below send on the transport, which calls back into them at the turns of a socket's
  // life; those hooks only run once start() has connected, when every part exists.
  const transport = createTransport({ settings, wire, nextId, emit }, {
    opened(token) {
      renewal.start(token);
      // Joins first, so queued feedback reaches the server after the room membership it needs.
      rooms.rejoinAll();
      requests.flushQueued();
    },
    frame: (raw) => routeFrame(raw),
    dropped() {
      renewal.stop();
      requests.failInFlight();
    },
  });
  const requests = createRequests({ link: transport, nextId, timeoutMs: settings.requestTimeoutMs });
  const rooms = createRooms({ link: transport, requests, nextId, emit, reconnect: settings.reconnect });
  const routeFrame = createFrameRouter({ wire, rooms, requests, emit });
  const renewal = createRenewal({
    getToken: settings.getToken,
    renewBeforeMs: settings.renewBeforeMs,
    link: transport,
    requests,
    nextId,
    emit,
    reconnectWith: transport.reconnectWith,
  });

  transport.start();

  return {
    get state() { return transport.state; },
    get protocol() { return transport.protocol; },

    join: rooms.join,
    leave: rooms.leave,
    sendFeedback: requests.sendFeedback,
    ping: requests.ping,
    on,
    lastEventId: rooms.lastEventId,

    close() {
      if (transport.closed) return;
      const err = new GatewayClientError('CLIENT_CLOSED', 'client closed');
      // Before the socket goes, so that requests fail as CLIENT_CLOSED rather than CONNECTION_LOST.
      requests.failAll(err);
      rooms.rejectAll(err);
      transport.close();
    },
  };
}
