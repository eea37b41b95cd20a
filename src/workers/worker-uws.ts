import type { HttpResponse, TemplatedApp, WebSocketBehavior } from 'uWebSockets.js';
import type { UwsModule } from '../uws.js';

/** Response header of a WebSocket handshake naming the worker thread that accepted it. */
export const WORKER_HEADER = 'x-gateway-worker';

export interface WorkerUws {
  /** The uWS module the worker's gateway is built on. */
  readonly uws: UwsModule;
  /**
   * Force-closes every socket of every app made through `uws` (idle HTTP keep-alive connections
   * included). A worker thread must do this before it ends: Node aborts the whole process
   * ("uv_loop_close() while having open handles") if a thread ends with uWS sockets still open.
   */
  closeApps(): void;
}

/**
 * uWS for one worker thread, with two differences that keep the gateway itself unaware of threads:
 * the 101 answer to a WebSocket upgrade carries WORKER_HEADER (tests and operators see which worker
 * took a client), and the apps made are remembered so the thread can close them all at the end.
 * uWS writes the 101 status inside res.upgrade() unless a status was already written, so the
 * wrapper writes the status, then the header, then lets upgrade add its own headers.
 */
export function createWorkerUws(uws: UwsModule, workerId: number): WorkerUws {
  const value = String(workerId);
  const apps: TemplatedApp[] = [];
  const tag = (res: HttpResponse) => {
    const upgrade = res.upgrade;
    res.upgrade = function (this: HttpResponse, ...args: Parameters<HttpResponse['upgrade']>) {
      this.writeStatus('101 Switching Protocols').writeHeader(WORKER_HEADER, value);
      return upgrade.apply(this, args);
    };
  };
  const App = ((options?: Parameters<UwsModule['App']>[0]) => {
    // uWS aborts the process on an explicit `undefined` options argument.
    const app: TemplatedApp = options === undefined ? uws.App() : uws.App(options);
    apps.push(app);
    const register = app.ws.bind(app);
    app.ws = (<UserData>(pattern: Parameters<TemplatedApp['ws']>[0], behavior: WebSocketBehavior<UserData>) => {
      const upgrade = behavior.upgrade;
      if (!upgrade) return register(pattern, behavior);
      return register(pattern, {
        ...behavior,
        upgrade(res, req, context) {
          tag(res);
          return upgrade(res, req, context);
        },
      });
    }) as TemplatedApp['ws'];
    return app;
  }) as UwsModule['App'];
  return {
    uws: { ...uws, App },
    closeApps() {
      for (const app of apps.splice(0)) (app as TemplatedApp & { close(): void }).close();
    },
  };
}
