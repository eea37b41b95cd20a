// Clients of a WORKERS > 1 gateway process placed on a given worker thread. The kernel spreads
// connections over the threads (SO_REUSEPORT): which one took a client is read from the
// x-gateway-worker header of the 101, and a client on the wrong worker is closed and tried again.
import WebSocket from 'ws';
import { TestClient } from './gateway.js';

export const WORKER_HEADER = 'x-gateway-worker';

export interface Placed {
  client: TestClient;
  /** The worker that accepted the WebSocket, or undefined when no worker thread runs (WORKERS=1). */
  worker: string | undefined;
}

/** One WebSocket on a fresh TCP connection, and the worker that accepted it. */
export async function connectPlaced(wsUrl: string, token: string): Promise<Placed> {
  const ws = new WebSocket(`${wsUrl}?token=${encodeURIComponent(token)}`);
  let worker: string | undefined;
  ws.once('upgrade', (res) => (worker = res.headers[WORKER_HEADER] as string | undefined));
  const client = new TestClient(ws, false);
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  return { client, worker };
}

/**
 * A client whose WebSocket worker `worker` accepted. The connections that landed elsewhere are
 * closed (and their close awaited) before the next try: a test must not count them.
 */
export async function connectOnWorker(wsUrl: string, token: string, worker: number, maxAttempts = 200): Promise<TestClient> {
  for (let attempt = 0; attempt < maxAttempts; attempt++) {
    const placed = await connectPlaced(wsUrl, token);
    if (placed.worker === String(worker)) return placed.client;
    await placed.client.close();
  }
  throw new Error(`after ${maxAttempts} connections, none was accepted by worker ${worker}`);
}
