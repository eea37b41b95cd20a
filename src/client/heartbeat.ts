// Whether the current socket is alive: a connect that hangs, or a ping followed by silence, is
// taken for a dead connection (a black-holed network sends no close event at all).
export interface Heartbeat {
  /** A socket is connecting: it has heartbeatTimeoutMs to open. */
  connecting(): void;
  /** The socket opened, or a frame arrived: any frame proves the connection is alive. */
  alive(): void;
  /** Pings every heartbeatIntervalMs from now on; silence heartbeatTimeoutMs after one is death. */
  start(): void;
  /** The socket is gone: no more pings, no deadline. */
  stop(): void;
}

export interface HeartbeatDeps {
  intervalMs: number;
  timeoutMs: number;
  isOpen: () => boolean;
  sendPing: () => void;
  /** The deadline passed without a frame. */
  onDead: () => void;
}

export function createHeartbeat(deps: HeartbeatDeps): Heartbeat {
  let heartbeatTimer: ReturnType<typeof setInterval> | undefined;
  let deadTimer: ReturnType<typeof setTimeout> | undefined;
  return {
    connecting() {
      deadTimer = setTimeout(deps.onDead, deps.timeoutMs);
    },
    alive() {
      clearTimeout(deadTimer);
      deadTimer = undefined;
    },
    start() {
      heartbeatTimer = setInterval(() => {
        if (!deps.isOpen()) return;
        deps.sendPing();
        deadTimer ??= setTimeout(deps.onDead, deps.timeoutMs);
      }, deps.intervalMs);
    },
    stop() {
      clearInterval(heartbeatTimer);
      clearTimeout(deadTimer);
      heartbeatTimer = deadTimer = undefined;
    },
  };
}
