// The one reconnect backoff of the project: Redis connections (src/redis/client.ts), the agents-server
// link (src/agents/link.ts) and the browser client (src/client/policy.ts) each call it with their own
// bounds. Browser-safe (no Node imports): it is part of the browser build (tsconfig.client.json).

export interface BackoffBounds {
  /** The delay of attempt 0, before any jitter. */
  readonly minMs: number;
  /** The cap, however many attempts. */
  readonly maxMs: number;
  /** Growth per attempt (default 2: doubling). */
  readonly factor?: number;
  /** Fraction of the delay that is randomised away, 0..1 (default 0.5; values outside are clamped). */
  readonly jitter?: number;
}

/**
 * Delay before attempt number `attempt` (0-based): exponential from `minMs`, capped at `maxMs`, then
 * multiplied by (1 - jitter × random()) so that peers dropped together (a restart) do not all come
 * back in the same millisecond. Always within [base × (1 - jitter), base].
 */
export function exponentialBackoff(attempt: number, bounds: BackoffBounds, random: () => number = Math.random): number {
  const base = Math.min(bounds.maxMs, bounds.minMs * (bounds.factor ?? 2) ** Math.max(0, attempt));
  const jitter = Math.min(1, Math.max(0, bounds.jitter ?? 0.5));
  return base * (1 - jitter * random());
}
