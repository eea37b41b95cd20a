import net from 'node:net';
import type { Logger } from 'pino';
import type { TemplatedApp, us_listen_socket } from 'uWebSockets.js';
import type { UwsModule } from './uws.js';

export interface ListenOptions {
  readonly host: string;
  readonly port: number;
  /** Share the port with other processes (SO_REUSEPORT); otherwise a port someone listens on is an error. */
  readonly reusePort: boolean;
  readonly log: Logger;
  /** How long to retry when the kernel refuses a port that nobody listens on. */
  readonly retryForMs?: number;
}

/**
 * Binds the uWS app. uWS always sets SO_REUSEPORT and SO_REUSEADDR, so on its own it would start
 * "successfully" next to another gateway started by mistake on the same port and take half of its
 * connections. Unless port sharing is asked for, we first bind the port with a plain socket
 * (SO_REUSEADDR only): that fails exactly when another socket listens there, and succeeds past
 * the TIME_WAIT / FIN_WAIT sockets a previous process left behind, so a restart in place serves at once.
 */
export async function listenUws(uws: UwsModule, app: TemplatedApp, options: ListenOptions): Promise<{ socket: us_listen_socket; port: number }> {
  const { host, port, log } = options;
  const deadline = Date.now() + (options.retryForMs ?? 5000);
  for (let attempt = 1; ; attempt++) {
    if (port !== 0 && !options.reusePort) await assertNobodyListens(host, port);
    const socket = await new Promise<us_listen_socket | false>((resolve) => app.listen(host, port, resolve));
    if (socket) return { socket, port: uws.us_socket_local_port(socket) };
    if (Date.now() > deadline) throw new Error(`could not listen on ${host}:${port} (not permitted, or the address is not local)`);
    // Nobody listens, yet the bind failed: a transient kernel state. Say so, and try again shortly.
    log.warn({ host, port, attempt }, 'could not listen yet; retrying');
    await new Promise((r) => setTimeout(r, 100));
  }
}

function assertNobodyListens(host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const probe = net.createServer();
    probe.once('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EADDRINUSE') {
        reject(new Error(`port ${port} on ${host} is already in use by another process (set REUSE_PORT=true only to run several gateways on one port on purpose)`));
      } else reject(err);
    });
    probe.listen({ host, port, exclusive: true }, () => probe.close(() => resolve()));
  });
}
