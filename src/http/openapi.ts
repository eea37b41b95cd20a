import type { TemplatedApp } from 'uWebSockets.js';
import { ErrorCodes } from '../errors.js';
import { EVENT_TYPES, GUID_PATTERN } from '../protocol/messages.js';
import { ADMIN_BODIES } from './admin-schemas.js';
import { pending } from './respond.js';

/**
 * The OpenAPI 3.1 document of the gateway's HTTP API: health, readiness and metrics, the producer
 * API, connection tickets, the WebSocket upgrade's refusals and the server API. Served at
 * GET /openapi.json; test/openapi.test.ts validates the document and every endpoint's real answers
 * (success and error) against it. Request bodies are the objects the routes validate with.
 */

const json = (schema: object) => ({ 'application/json': { schema } });
const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const error = (description: string) => ({ description, content: json(ref('Error')) });
const retryAfter = { 'Retry-After': { description: 'Seconds until the refusal may pass.', schema: { type: 'string', pattern: '^\\d+$' } } };
const guidParam = { name: 'projectGuid', in: 'path', required: true, schema: { type: 'string', pattern: GUID_PATTERN } };
const eventId = { type: 'string', pattern: '^\\d+-\\d+$', description: 'An event id, `<ms>-<seq>` (the ids a resume uses as `since`).' };
const nonNegative = { type: 'integer', minimum: 0 };

const schemas = {
  Error: {
    type: 'object',
    required: ['error'],
    additionalProperties: false,
    properties: {
      error: {
        type: 'object',
        required: ['code', 'message'],
        additionalProperties: false,
        properties: { code: { type: 'string', enum: Object.keys(ErrorCodes) }, message: { type: 'string' } },
      },
    },
  },
  Event: {
    type: 'object',
    description: 'An event as a WebSocket client receives it.',
    required: ['type', 'projectGuid', 'data', 'timestamp', 'id'],
    additionalProperties: false,
    properties: {
      type: { type: 'string', enum: [...EVENT_TYPES] },
      projectGuid: { type: 'string', pattern: GUID_PATTERN },
      data: {},
      timestamp: { type: 'string', format: 'date-time' },
      id: eventId,
    },
  },
  NewEvent: {
    type: 'object',
    required: ['type', 'data'],
    additionalProperties: false,
    properties: { type: { type: 'string', enum: [...EVENT_TYPES] }, data: { type: 'object' } },
  },
  Health: { type: 'object', required: ['status', 'node'], additionalProperties: false, properties: { status: { const: 'ok' }, node: { type: 'string' } } },
  Ready: {
    type: 'object',
    required: ['ready', 'bus', 'busReady', 'shuttingDown', 'node'],
    additionalProperties: false,
    properties: { ready: { type: 'boolean' }, bus: { enum: ['memory', 'redis'] }, busReady: { type: 'boolean' }, shuttingDown: { type: 'boolean' }, node: { type: 'string' } },
  },
  DisconnectBody: ADMIN_BODIES.disconnect,
  RevokeBody: ADMIN_BODIES.revoke,
  BlockBody: ADMIN_BODIES.block,
  Presence: {
    type: 'object',
    required: ['projectGuid', 'users', 'connections', 'nodes'],
    additionalProperties: false,
    properties: {
      projectGuid: { type: 'string', pattern: GUID_PATTERN },
      users: {
        type: 'array',
        items: { type: 'object', required: ['userId', 'connections'], additionalProperties: false, properties: { userId: { type: 'string' }, connections: { type: 'integer', minimum: 1 } } },
      },
      connections: nonNegative,
      nodes: { type: 'integer', minimum: 1, description: 'Gateways (instances and worker threads) that answered within the gather window.' },
    },
  },
  Info: {
    type: 'object',
    required: ['nodes', 'connections'],
    additionalProperties: false,
    properties: {
      nodes: {
        type: 'array',
        minItems: 1,
        items: { type: 'object', required: ['node', 'connections', 'rooms'], additionalProperties: false, properties: { node: { type: 'string' }, connections: nonNegative, rooms: nonNegative } },
      },
      connections: nonNegative,
    },
  },
  History: {
    type: 'object',
    required: ['projectGuid', 'order', 'events', 'recovered', 'next'],
    additionalProperties: false,
    properties: {
      projectGuid: { type: 'string', pattern: GUID_PATTERN },
      order: { enum: ['oldest', 'newest'] },
      events: { type: 'array', items: ref('Event') },
      recovered: { type: 'boolean', description: "As a resume's `recovered`: false when the history no longer reaches back to `since` (oldest first) or to the first event (newest first)." },
      next: { oneOf: [eventId, { type: 'null' }], description: 'The `since` of the next page, or null when this page read nothing.' },
    },
  },
} as const;

const adminErrors = {
  '401': error('UNAUTHORIZED: no or an invalid token.'),
  '403': error('FORBIDDEN: the token lacks the scope `gateway:admin`.'),
  '429': { ...error('RATE_LIMITED: too many requests for this principal.'), headers: retryAfter },
  '503': error('UNAVAILABLE: shutting down, or Redis unreachable (a block or revocation is then not applied).'),
};
const adminBodyErrors = {
  '400': error('BAD_JSON, INVALID_DATA (the body does not match its schema) or INVALID_GUID.'),
  '413': error('PAYLOAD_TOO_LARGE.'),
  '415': error('UNSUPPORTED_MEDIA_TYPE: send Content-Type: application/json.'),
  ...adminErrors,
};

function adminAction(summary: string, body: string, answer: object) {
  return {
    post: {
      tags: ['server API'],
      summary,
      security: [{ bearer: [] }],
      requestBody: { required: true, content: json(ref(body)) },
      responses: { '200': { description: 'Applied here and sent to every gateway.', content: json(answer) }, ...adminBodyErrors },
    },
  };
}

const paths = {
  '/healthz': { get: { tags: ['operations'], summary: 'Liveness', responses: { '200': { description: 'The process answers.', content: json(ref('Health')) } } } },
  '/readyz': {
    get: {
      tags: ['operations'],
      summary: 'Readiness (the event bus is connected and the gateway is not shutting down)',
      responses: { '200': { description: 'Ready.', content: json(ref('Ready')) }, '503': { description: 'Not ready.', content: json(ref('Ready')) } },
    },
  },
  '/metrics': {
    get: {
      tags: ['operations'],
      summary: 'Prometheus metrics (here unless METRICS_PORT is set)',
      responses: { '200': { description: 'Prometheus text format.', content: { 'text/plain': { schema: { type: 'string' } } } }, '500': error('INTERNAL') },
    },
  },
  '/openapi.json': { get: { tags: ['operations'], summary: 'This document', responses: { '200': { description: 'OpenAPI 3.1.', content: json({ type: 'object', required: ['openapi', 'paths'] }) } } } },
  '/v1/projects/{projectGuid}/events': {
    post: {
      tags: ['producer'],
      summary: 'Publish one event or a batch (scope events:publish)',
      security: [{ bearer: [] }],
      parameters: [guidParam, { name: 'Idempotency-Key', in: 'header', required: false, schema: { type: 'string', minLength: 1, maxLength: 128 } }],
      requestBody: {
        required: true,
        content: json({ oneOf: [ref('NewEvent'), { type: 'object', required: ['events'], additionalProperties: false, properties: { events: { type: 'array', minItems: 1, maxItems: 1000, items: ref('NewEvent') } } }] }),
      },
      responses: {
        '202': {
          description: 'Appended (or, with a used Idempotency-Key, the first answer again, with Idempotent-Replayed: true).',
          content: json({ oneOf: [{ type: 'object', required: ['id'], additionalProperties: false, properties: { id: eventId } }, { type: 'object', required: ['ids'], additionalProperties: false, properties: { ids: { type: 'array', items: eventId } } }] }),
        },
        '400': error('BAD_JSON, INVALID_FRAME, INVALID_DATA, INVALID_GUID or MALFORMED_REQUEST.'),
        '401': error('UNAUTHORIZED'),
        '403': error('FORBIDDEN: no scope events:publish, or the token does not name this project.'),
        '413': error('PAYLOAD_TOO_LARGE'),
        '415': error('UNSUPPORTED_MEDIA_TYPE'),
        '422': error('IDEMPOTENCY_KEY_REUSED: the key was used with another body.'),
        '429': { ...error('RATE_LIMITED or IDEMPOTENCY_KEYS_EXHAUSTED.'), headers: retryAfter },
        '500': error('INTERNAL'),
        '503': { ...error('UNAVAILABLE or OVERLOADED: nothing appended.'), headers: retryAfter },
      },
    },
  },
  '/v1/tickets': {
    options: {
      tags: ['tickets'],
      summary: 'CORS preflight of a ticket request',
      responses: { '204': { description: 'The origin is allowed (ALLOWED_ORIGINS).' }, '403': { description: 'The origin is not allowed.' } },
    },
    post: {
      tags: ['tickets'],
      summary: 'A one-time connection ticket for ?ticket= (the token stays out of URLs)',
      security: [{ bearer: [] }],
      responses: {
        '201': {
          description: 'A ticket, valid once for TICKET_TTL_S.',
          content: json({ type: 'object', required: ['ticket', 'expiresInS'], additionalProperties: false, properties: { ticket: { type: 'string', pattern: '^[A-Za-z0-9_-]{43}$' }, expiresInS: { type: 'integer', minimum: 1 } } }),
        },
        '400': error('MALFORMED_REQUEST'),
        '401': error('UNAUTHORIZED'),
        '429': { ...error('RATE_LIMITED: too many requests, or TICKETS_PER_USER tickets this window.'), headers: retryAfter },
        '503': { ...error('UNAVAILABLE: shutting down or the ticket store unreachable or full.'), headers: retryAfter },
      },
    },
  },
  '/ws': {
    get: {
      tags: ['websocket'],
      summary: 'The WebSocket upgrade (the protocol itself: docs/protocol.md); listed for its refusals',
      parameters: [
        { name: 'token', in: 'query', required: false, schema: { type: 'string' } },
        { name: 'ticket', in: 'query', required: false, schema: { type: 'string' } },
      ],
      responses: {
        '101': { description: 'Switching Protocols: a WebSocket speaking autocode.v1.json or autocode.v1.msgpack.' },
        '400': error('UNSUPPORTED_PROTOCOL'),
        '401': error('UNAUTHORIZED: no, several, or an invalid credential.'),
        '403': { ...error('FORBIDDEN (origin not allowed) or USER_BLOCKED (the server API blocked this user; Retry-After: until the block ends).'), headers: retryAfter },
        '429': { ...error('RATE_LIMITED or TOO_MANY_CONNECTIONS.'), headers: retryAfter },
        '503': error('UNAVAILABLE: shutting down, or the ticket store unreachable.'),
      },
    },
  },
  '/v1/admin/disconnect': adminAction("Close a user's sockets on every instance with 4403 (the client library does not reconnect)", 'DisconnectBody', {
    type: 'object',
    required: ['userId', 'closeCode'],
    additionalProperties: false,
    properties: { userId: { type: 'string' }, closeCode: { const: 4403 } },
  }),
  '/v1/admin/revoke': adminAction("Revoke a user's access to one project now (tokens issued before are refused on join)", 'RevokeBody', {
    type: 'object',
    required: ['userId', 'projectGuid', 'revokedAt', 'expiresAt'],
    additionalProperties: false,
    properties: { userId: { type: 'string' }, projectGuid: { type: 'string', pattern: GUID_PATTERN }, revokedAt: nonNegative, expiresAt: nonNegative },
  }),
  '/v1/admin/block': adminAction('Block a user until a time: sockets closed (4403), upgrades refused with 403 USER_BLOCKED', 'BlockBody', {
    type: 'object',
    required: ['userId', 'blockedUntil', 'active'],
    additionalProperties: false,
    properties: { userId: { type: 'string' }, blockedUntil: nonNegative, active: { type: 'boolean' } },
  }),
  '/v1/admin/info': {
    get: { tags: ['server API'], summary: 'Gateways alive, with connections and rooms each', security: [{ bearer: [] }], responses: { '200': { description: 'Every gateway that answered.', content: json(ref('Info')) }, ...adminErrors } },
  },
  '/v1/admin/projects/{projectGuid}/presence': {
    get: {
      tags: ['server API'],
      summary: "A project's users and their joined sockets over every gateway",
      security: [{ bearer: [] }],
      parameters: [guidParam],
      responses: { '200': { description: 'Presence.', content: json(ref('Presence')) }, '400': error('INVALID_GUID'), ...adminErrors },
    },
  },
  '/v1/admin/projects/{projectGuid}/history': {
    get: {
      tags: ['server API'],
      summary: "A page of a project's history by the ids a resume uses",
      security: [{ bearer: [] }],
      parameters: [
        guidParam,
        { name: 'since', in: 'query', required: false, schema: eventId, description: 'Oldest first: events after it. Newest first: events before it.' },
        { name: 'limit', in: 'query', required: false, schema: { type: 'integer', minimum: 1, maximum: 1000, default: 100 } },
        { name: 'order', in: 'query', required: false, schema: { enum: ['oldest', 'newest'], default: 'oldest' } },
      ],
      responses: { '200': { description: 'A page.', content: json(ref('History')) }, '400': error('INVALID_GUID or INVALID_DATA (a bad since, limit or order).'), ...adminErrors },
    },
  },
};

export const OPENAPI_DOCUMENT = {
  openapi: '3.1.0',
  info: {
    title: 'AutoCode WebSocket gateway HTTP API',
    version: '1',
    description: 'Health, metrics, the producer API, connection tickets, the WebSocket upgrade and the server API (README "Server API"). Every error body is `{"error":{"code","message"}}` (README error table).',
  },
  tags: [{ name: 'operations' }, { name: 'producer' }, { name: 'tickets' }, { name: 'websocket' }, { name: 'server API' }],
  paths,
  components: { schemas, securitySchemes: { bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } } },
} as const;

export function registerOpenApiRoute(app: TemplatedApp): void {
  const text = JSON.stringify(OPENAPI_DOCUMENT);
  app.get('/openapi.json', (res) => {
    const p = pending(res);
    if (p.aborted) return;
    res.cork(() => res.writeStatus('200 OK').writeHeader('content-type', 'application/json').writeHeader('cache-control', 'no-cache').end(text));
  });
}
