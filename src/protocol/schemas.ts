import type { ValidateFunction } from 'ajv';
import { GatewayError } from '../errors.js';
import { createAjv, describeAjvErrors } from './ajv.js';
import { EVENT_ID_PATTERN, isEventId } from './event-id.js';
import { CLIENT_TYPES, EVENT_TYPES, GUID_PATTERN, isEventType, isGuid, type ClientFrame, type ClientType, type EventType } from './messages.js';

// Control characters other than tab/newline/carriage return never belong in user text.
const SAFE_TEXT = '^[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F]*$';

const base = {
  id: { type: ['string', 'null'], maxLength: 128 },
  timestamp: { type: ['string', 'number', 'null'] },
};
const guid = { type: 'string', pattern: GUID_PATTERN };

const clientSchemas: Record<ClientType, object> = {
  join_project: {
    type: 'object',
    additionalProperties: false,
    required: ['type', 'projectGuid'],
    properties: {
      ...base,
      type: { const: 'join_project' },
      projectGuid: guid,
      data: {
        type: ['object', 'null'],
        additionalProperties: false,
        properties: { since: { type: 'string', pattern: EVENT_ID_PATTERN } },
      },
    },
  },
  leave_project: {
    type: 'object',
    additionalProperties: false,
    required: ['type', 'projectGuid'],
    properties: { ...base, type: { const: 'leave_project' }, projectGuid: guid, data: { type: ['object', 'null'], maxProperties: 0 } },
  },
  user_feedback: {
    type: 'object',
    additionalProperties: false,
    required: ['type', 'projectGuid', 'data'],
    properties: {
      ...base,
      type: { const: 'user_feedback' },
      projectGuid: guid,
      data: {
        type: 'object',
        additionalProperties: false,
        required: ['content'],
        properties: {
          content: { type: 'string', minLength: 1, maxLength: 8192, pattern: SAFE_TEXT },
          replyTo: { type: 'string', maxLength: 128, pattern: SAFE_TEXT },
          meta: { type: 'object', maxProperties: 32 },
        },
      },
    },
  },
  ping: {
    type: 'object',
    additionalProperties: false,
    required: ['type'],
    properties: { ...base, type: { const: 'ping' }, projectGuid: { anyOf: [guid, { type: 'null' }] }, data: {} },
  },
  auth_refresh: {
    type: 'object',
    additionalProperties: false,
    required: ['type', 'data'],
    properties: {
      ...base,
      type: { const: 'auth_refresh' },
      projectGuid: { type: 'null' },
      data: { type: 'object', additionalProperties: false, required: ['token'], properties: { token: { type: 'string', minLength: 1, maxLength: 8192 } } },
    },
  },
};

/** Body of the producer HTTP API: one event, or a batch of up to 1000. */
const eventBodySchema = {
  type: 'object',
  additionalProperties: false,
  required: ['type', 'data'],
  properties: {
    type: { type: 'string', enum: [...EVENT_TYPES] },
    data: { type: 'object' },
  },
};
const batchBodySchema = {
  type: 'object',
  additionalProperties: false,
  required: ['events'],
  properties: { events: { type: 'array', minItems: 1, maxItems: 1000, items: eventBodySchema } },
};

// Compiled at the first check, not at import: every worker thread imports this module, and the
// compiles were a good part of a thread's start (a restart in place must serve within 2 s).
function compileAll() {
  const ajv = createAjv();
  return {
    client: Object.fromEntries(CLIENT_TYPES.map((t) => [t, ajv.compile(clientSchemas[t])])) as Record<ClientType, ValidateFunction>,
    eventBody: ajv.compile<{ type: EventType; data: object }>(eventBodySchema),
    batchBody: ajv.compile<{ events: { type: EventType; data: object }[] }>(batchBodySchema),
  };
}
let compiled: ReturnType<typeof compileAll> | null = null;
const schemasCompiled = () => (compiled ??= compileAll());

/** The request id of a frame, if it has a usable one, so even a rejected frame's error can name it. */
export function requestIdOf(frame: unknown): string | null {
  if (frame && typeof frame === 'object' && !Array.isArray(frame)) {
    const id = (frame as { id?: unknown }).id;
    if (typeof id === 'string' && id.length <= 128) return id;
  }
  return null;
}

/**
 * Validates a decoded client frame. Throws GatewayError with the most specific code:
 * UNKNOWN_TYPE for a type we do not speak, INVALID_GUID for a bad projectGuid, INVALID_EVENT_ID for a
 * bad `since`, INVALID_FRAME for everything else.
 */
export function validateClientFrame(frame: unknown): ClientFrame {
  if (!frame || typeof frame !== 'object' || Array.isArray(frame)) throw new GatewayError('INVALID_FRAME', 'frame must be an object');
  const f = frame as Record<string, unknown>;
  if (typeof f.type !== 'string') throw new GatewayError('INVALID_FRAME', 'frame.type must be a string');
  const validators = schemasCompiled().client;
  const validate = validators[f.type as ClientType];
  if (!validate || !Object.hasOwn(validators, f.type)) throw new GatewayError('UNKNOWN_TYPE', `unknown message type ${JSON.stringify(f.type.slice(0, 64))}`);
  if (f.projectGuid !== undefined && f.projectGuid !== null && !isGuid(f.projectGuid)) throw new GatewayError('INVALID_GUID');
  const since = (f.data as { since?: unknown } | null | undefined)?.since;
  if (f.type === 'join_project' && since !== undefined && !isEventId(since)) throw new GatewayError('INVALID_EVENT_ID');
  if (!validate(f)) throw new GatewayError('INVALID_FRAME', describeAjvErrors(validate.errors));
  return {
    type: f.type,
    projectGuid: typeof f.projectGuid === 'string' ? f.projectGuid.toLowerCase() : null,
    data: f.data ?? {},
    id: typeof f.id === 'string' ? f.id : null,
  } as ClientFrame;
}

export function validateProducerEvents(body: unknown): { type: EventType; data: object }[] {
  const items = (body as { events?: unknown } | null)?.events;
  for (const item of Array.isArray(items) ? items : [body]) {
    const type = (item as { type?: unknown } | null)?.type;
    if (typeof type === 'string' && !isEventType(type)) throw new GatewayError('UNKNOWN_TYPE', `unknown event type ${JSON.stringify(type.slice(0, 64))}`);
  }
  // Validate against the shape the body claims, so the error names the real problem.
  if (body && typeof body === 'object' && 'events' in body) {
    const validateBatchBody = schemasCompiled().batchBody;
    if (!validateBatchBody(body)) throw new GatewayError('INVALID_FRAME', describeAjvErrors(validateBatchBody.errors));
    return body.events;
  }
  const validateEventBody = schemasCompiled().eventBody;
  if (!validateEventBody(body)) throw new GatewayError('INVALID_FRAME', describeAjvErrors(validateEventBody.errors));
  return [body];
}
