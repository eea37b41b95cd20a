// The app's listeners (client.on): who hears which ClientEvents, and calling app code so that it
// cannot break the client's own work.
import type { ClientEvents } from './api.js';

export type Emit = <K extends keyof ClientEvents>(event: K, payload: ClientEvents[K]) => void;
export type Subscribe = <K extends keyof ClientEvents>(event: K, fn: (payload: ClientEvents[K]) => void) => () => void;

export interface Listeners {
  emit: Emit;
  /** Adds a listener; the function returned removes it. */
  on: Subscribe;
}

export function createListeners(): Listeners {
  const listeners = new Map<keyof ClientEvents, Set<(payload: never) => void>>();
  return {
    emit(event, payload) {
      for (const fn of listeners.get(event) ?? []) safeCall(() => (fn as (p: typeof payload) => void)(payload));
    },
    on(event, fn) {
      let set = listeners.get(event);
      if (!set) listeners.set(event, (set = new Set()));
      set.add(fn as (payload: never) => void);
      return () => { set.delete(fn as (payload: never) => void); };
    },
  };
}

// A throwing app handler must not break frame processing; rethrow later so it still gets reported.
export function safeCall(fn: () => void): void {
  try { fn(); } catch (err) { setTimeout(() => { throw err; }, 0); }
}
