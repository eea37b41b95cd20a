import type { HttpRequest, HttpResponse, RecognizedString, TemplatedApp, WebSocketBehavior } from 'uWebSockets.js';
import type { UwsModule } from '../uws.js';

/** Response header naming the worker thread that answered (HTTP responses and WebSocket handshakes). */
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
 * every HTTP answer and the 101 of a WebSocket upgrade carry WORKER_HEADER (tests and operators see
 * which worker took a client or a request), and the apps made are remembered so the thread can
 * close them all at the end.
 * uWS writes the 101 status inside res.upgrade() unless a status was already written, so the
 * wrapper writes the status, then the header, then lets upgrade add its own headers.
 */
export function createWorkerUws(uws: UwsModule, workerId: number): WorkerUws {
  const value = String(workerId);
  const apps: TemplatedApp[] = [];
  // Every answer writes its status first (the routes and respond.ts always do; so does upgrade()
  // below): the header goes right after it.
  const tag = (res: HttpResponse) => {
    const writeStatus = res.writeStatus;
    res.writeStatus = function (this: HttpResponse, status) {
      writeStatus.call(this, status);
      return this.writeHeader(WORKER_HEADER, value);
    };
    const upgrade = res.upgrade;
    res.upgrade = function (this: HttpResponse, ...args: Parameters<HttpResponse['upgrade']>) {
      this.writeStatus('101 Switching Protocols');
      return upgrade.apply(this, args);
    };
  };
  type Handler = (res: HttpResponse, req: HttpRequest) => void | Promise<void>;
  const HTTP_METHODS = ['get', 'post', 'options', 'del', 'patch', 'put', 'head', 'connect', 'trace', 'any'] as const;
  const App = ((options?: Parameters<UwsModule['App']>[0]) => {
    // uWS aborts the process on an explicit `undefined` options argument.
    const app: TemplatedApp = options === undefined ? uws.App() : uws.App(options);
    apps.push(app);
    for (const method of HTTP_METHODS) {
      const register = (app[method] as (pattern: RecognizedString, handler: Handler) => TemplatedApp).bind(app);
      (app as unknown as Record<string, unknown>)[method] = (pattern: RecognizedString, handler: Handler) =>
        register(pattern, (res, req) => {
          tag(res);
          return handler(res, req);
        });
    }
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
