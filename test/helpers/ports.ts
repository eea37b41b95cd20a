// Free TCP ports on 127.0.0.1 for tests.
//
// The port is found by binding 127.0.0.1:0 and closing the socket again, so another process
// could in theory grab it before the caller binds it. Callers that start servers (see redis.ts)
// retry on "address in use" for that reason.
import net from 'node:net';

function listenEphemeral(): Promise<net.Server> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen({ port: 0, host: '127.0.0.1', exclusive: true }, () => resolve(server));
  });
}

function portOf(server: net.Server): number {
  const address = server.address();
  if (address === null || typeof address === 'string') {
    throw new Error(`unexpected server address: ${String(address)}`);
  }
  return address.port;
}

function close(server: net.Server): Promise<void> {
  return new Promise((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
}

/** One free TCP port on 127.0.0.1. */
export async function freePort(): Promise<number> {
  const server = await listenEphemeral();
  try {
    return portOf(server);
  } finally {
    await close(server);
  }
}

/** `n` distinct free TCP ports on 127.0.0.1 (all held open at once, so they cannot repeat). */
export async function freePorts(n: number): Promise<number[]> {
  if (!Number.isInteger(n) || n < 0) throw new RangeError(`freePorts: bad count ${n}`);
  const servers: net.Server[] = [];
  try {
    for (let i = 0; i < n; i++) servers.push(await listenEphemeral());
    return servers.map(portOf);
  } finally {
    await Promise.all(servers.map(close));
  }
}
