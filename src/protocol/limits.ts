import { GatewayError } from '../errors.js';

/**
 * What event data (and feedback `meta`) may look like, applied the same way at every entry point:
 * the HTTP producer API, the in-process publish API, Redis entries read by the bus, agents-server
 * frames and client frames. Anything that passes can be encoded by every codec we speak (JSON and
 * MessagePack) without throwing, and costs a bounded amount to store and send.
 */
export interface DataLimits {
  /** Largest JSON encoding of the value, in UTF-8 bytes. */
  readonly maxBytes: number;
  /** Deepest nesting of objects and arrays; the value itself is level 1. */
  readonly maxDepth: number;
}

export const DEFAULT_DATA_LIMITS: DataLimits = { maxBytes: 65536, maxDepth: 32 };

/**
 * Default bound of one producer's unexpired idempotency keys (IDEMPOTENCY_KEYS_PER_PRODUCER): past it a
 * keyed publish is refused with IDEMPOTENCY_KEYS_EXHAUSTED, never by evicting a record (bus/idempotency.ts).
 */
export const DEFAULT_KEYS_PER_PRODUCER = 100_000;

/**
 * Why a value is not plain, bounded JSON, or null if it is. Only null, booleans, finite numbers,
 * strings, arrays and plain objects pass: a MessagePack 64-bit integer (a BigInt here), a
 * timestamp extension (a Date), binary, NaN or Infinity (JSON.parse turns 1e400 into Infinity)
 * would either throw in an encoder or arrive as something else on the other side.
 * Recursion stops at `maxDepth`, so the check itself cannot overflow the stack.
 */
export function dataProblem(value: unknown, maxDepth: number): string | null {
  return walk(value, 1, maxDepth);
}

function walk(value: unknown, depth: number, maxDepth: number): string | null {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return null;
    case 'number':
      return Number.isFinite(value) ? null : 'numbers must be finite';
    case 'bigint':
      return 'integers must be within ±2^53 (64-bit MessagePack integers are not accepted)';
    case 'object': {
      if (value === null) return null;
      if (depth > maxDepth) return `nested deeper than ${maxDepth} levels`;
      if (Array.isArray(value)) {
        for (const item of value) {
          const problem = walk(item, depth + 1, maxDepth);
          if (problem) return problem;
        }
        return null;
      }
      const proto = Object.getPrototypeOf(value) as unknown;
      if (proto !== Object.prototype && proto !== null) return 'only JSON values are accepted (objects, arrays, strings, finite numbers, booleans, null)';
      for (const key in value) {
        const problem = walk((value as Record<string, unknown>)[key], depth + 1, maxDepth);
        if (problem) return problem;
      }
      return null;
    }
    default:
      return 'only JSON values are accepted (objects, arrays, strings, finite numbers, booleans, null)';
  }
}

/**
 * Checks event data against the limits and returns its JSON encoding (the caller stores or
 * forwards that string instead of encoding again). Throws INVALID_DATA for a shape no codec can
 * carry, PAYLOAD_TOO_LARGE over `maxBytes`.
 */
export function encodeCheckedData(data: unknown, limits: DataLimits, what = 'event data'): string {
  const problem = dataProblem(data, limits.maxDepth);
  if (problem) throw new GatewayError('INVALID_DATA', `${what}: ${problem}`);
  const json = JSON.stringify(data);
  // Characters ≤ bytes ≤ 3 × characters in UTF-8: count bytes only when it can matter.
  if (json.length > limits.maxBytes || (json.length * 3 > limits.maxBytes && Buffer.byteLength(json) > limits.maxBytes)) {
    throw new GatewayError('PAYLOAD_TOO_LARGE', `${what} is over ${limits.maxBytes} bytes as JSON`);
  }
  return json;
}

/**
 * Parses a producer's raw JSON text (a Redis entry's `data` field): the object if it is a JSON
 * object within the limits, else why not. Checks the size before parsing, so a huge entry costs no parse.
 */
export function parseRawData(raw: string, limits: DataLimits): { data: object } | { problem: string } {
  if (raw.length > limits.maxBytes || (raw.length * 3 > limits.maxBytes && Buffer.byteLength(raw) > limits.maxBytes)) {
    return { problem: `data over ${limits.maxBytes} bytes` };
  }
  let data: unknown;
  try {
    data = JSON.parse(raw);
  } catch {
    return { problem: 'data is not valid JSON' };
  }
  if (!data || typeof data !== 'object' || Array.isArray(data)) return { problem: 'data is not a JSON object' };
  const problem = dataProblem(data, limits.maxDepth);
  return problem ? { problem } : { data };
}
