import { createAjv, describeAjvErrors } from '../protocol/ajv.js';
import { EVENT_ID_PATTERN } from '../protocol/event-id.js';
import { GUID_PATTERN } from '../protocol/messages.js';

/**
 * Frames the agents-server sends the gateway (docs/agents.md, "agents-server → gateway"). Every
 * frame is validated here; anything else is logged, answered with an `error` frame and skipped.
 */
export type AgentFrame =
  | { type: 'feedback_ack'; id: string | null; projectGuid: string | null; data: { feedbackIds: string[] } }
  | { type: 'user_feedback_response'; id: string | null; projectGuid: string | null; userId: string; data: Record<string, unknown> }
  | { type: 'agent_message'; id: string | null; projectGuid: string; userId?: string; data: Record<string, unknown> }
  | { type: 'subscribe'; id: string | null; projectGuid: string | null; data: { projects: { projectGuid: string; since?: string }[] } }
  | { type: 'unsubscribe'; id: string | null; projectGuid: string | null; data: { projects: string[] } }
  | { type: 'project_update_ack'; id: string | null; projectGuid: string; data: { eventId: string } };

export type AgentFrameType = AgentFrame['type'];

const guid = { type: 'string', pattern: GUID_PATTERN };
const eventId = { type: 'string', pattern: EVENT_ID_PATTERN };
const userId = { type: 'string', minLength: 1, maxLength: 256 };
const base = {
  id: { type: ['string', 'null'], maxLength: 128 },
  timestamp: { type: ['string', 'number', 'null'] },
  projectGuid: { anyOf: [guid, { type: 'null' }] },
};

const schemas: Record<AgentFrameType, object> = {
  feedback_ack: {
    type: 'object',
    required: ['type', 'data'],
    properties: {
      ...base,
      type: { const: 'feedback_ack' },
      data: {
        type: 'object',
        required: ['feedbackIds'],
        properties: { feedbackIds: { type: 'array', minItems: 1, maxItems: 10000, items: { type: 'string', minLength: 1, maxLength: 128 } } },
      },
    },
  },
  user_feedback_response: {
    type: 'object',
    required: ['type', 'userId', 'data'],
    properties: { ...base, type: { const: 'user_feedback_response' }, userId, data: { type: 'object' } },
  },
  agent_message: {
    type: 'object',
    required: ['type', 'projectGuid', 'data'],
    properties: { ...base, type: { const: 'agent_message' }, projectGuid: guid, userId, data: { type: 'object' } },
  },
  subscribe: {
    type: 'object',
    required: ['type', 'data'],
    properties: {
      ...base,
      type: { const: 'subscribe' },
      data: {
        type: 'object',
        required: ['projects'],
        properties: {
          projects: {
            type: 'array',
            minItems: 1,
            maxItems: 10000,
            items: { type: 'object', required: ['projectGuid'], additionalProperties: false, properties: { projectGuid: guid, since: eventId } },
          },
        },
      },
    },
  },
  unsubscribe: {
    type: 'object',
    required: ['type', 'data'],
    properties: {
      ...base,
      type: { const: 'unsubscribe' },
      data: { type: 'object', required: ['projects'], properties: { projects: { type: 'array', minItems: 1, maxItems: 10000, items: guid } } },
    },
  },
  project_update_ack: {
    type: 'object',
    required: ['type', 'projectGuid', 'data'],
    properties: { ...base, type: { const: 'project_update_ack' }, projectGuid: guid, data: { type: 'object', required: ['eventId'], properties: { eventId } } },
  },
};

// Compiled on first use: a gateway without AGENTS_URL never needs them, and compiling every schema at
// import cost each worker thread ~60 ms of its start (a restart in place must serve within 2 s).
let ajv: ReturnType<typeof createAjv> | null = null;
const validators = new Map<AgentFrameType, ReturnType<ReturnType<typeof createAjv>['compile']>>();
function validatorOf(type: AgentFrameType) {
  let validate = validators.get(type);
  if (!validate) validators.set(type, (validate = (ajv ??= createAjv()).compile(schemas[type])));
  return validate;
}

/** The frame, typed and with lower-cased GUIDs, or why it is not one we accept. */
export function parseAgentFrame(text: string): { frame: AgentFrame } | { problem: string; type?: string; id?: string | null } {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { problem: 'not valid JSON' };
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) return { problem: 'frame must be a JSON object' };
  const f = value as Record<string, unknown>;
  const id = typeof f.id === 'string' && f.id.length <= 128 ? f.id : null;
  if (typeof f.type !== 'string') return { problem: 'frame.type must be a string', id };
  const type = f.type.slice(0, 64);
  if (!Object.hasOwn(schemas, f.type)) return { problem: `unknown frame type ${JSON.stringify(type)}`, type, id };
  const validate = validatorOf(f.type as AgentFrameType);
  if (!validate(f)) return { problem: describeAjvErrors(validate.errors), type, id };
  const frame = { ...f, id, projectGuid: typeof f.projectGuid === 'string' ? f.projectGuid.toLowerCase() : null } as AgentFrame;
  if (frame.type === 'subscribe') frame.data.projects = frame.data.projects.map((p) => ({ ...p, projectGuid: p.projectGuid.toLowerCase() }));
  if (frame.type === 'unsubscribe') frame.data.projects = frame.data.projects.map((p) => p.toLowerCase());
  return { frame };
}
