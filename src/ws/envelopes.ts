import { ErrorCodes, type ErrorCode } from '../errors.js';
import type { Envelope, ReplyType } from '../protocol/messages.js';

/** A reply envelope: `id` is the id of the request it answers. */
export function reply(type: ReplyType, projectGuid: string | null, id: string | null, data: unknown): Envelope {
  return { type, projectGuid, data, timestamp: new Date().toISOString(), id };
}

export function errorReply(code: ErrorCode, message: string | undefined, projectGuid: string | null, id: string | null): Envelope {
  return reply('error', projectGuid, id, { code, message: message ?? ErrorCodes[code].message });
}
