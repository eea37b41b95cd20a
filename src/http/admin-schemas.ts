/**
 * The server API's request bodies as JSON Schemas: the routes validate with them (ajv) and the
 * OpenAPI document (openapi.ts) publishes the same objects, so the two cannot drift apart.
 */
export interface DisconnectBody {
  userId: string;
  reason?: string;
}
export interface RevokeBody {
  userId: string;
  projectGuid: string;
}
export interface BlockBody {
  userId: string;
  /** Epoch ms the block ends; a time already past lifts a block. */
  until: number;
  reason?: string;
}

const userId = { type: 'string', minLength: 1, maxLength: 256, description: "The user's `sub` claim." } as const;
const reason = { type: 'string', maxLength: 100, description: 'Sent as the WebSocket close reason (at most 100 characters).' } as const;

export const ADMIN_BODIES = {
  disconnect: {
    type: 'object',
    properties: { userId, reason },
    required: ['userId'],
    additionalProperties: false,
  },
  revoke: {
    type: 'object',
    properties: { userId, projectGuid: { type: 'string', minLength: 36, maxLength: 36, description: 'The project GUID.' } },
    required: ['userId', 'projectGuid'],
    additionalProperties: false,
  },
  block: {
    type: 'object',
    properties: { userId, until: { type: 'integer', minimum: 0, maximum: 8640000000000000, description: 'Epoch milliseconds the block ends; a time already past lifts a block.' }, reason },
    required: ['userId', 'until'],
    additionalProperties: false,
  },
} as const;
