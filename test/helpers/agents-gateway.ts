// A gateway process (`node dist/main.js`, WORKERS threads, with or without Redis) linked to a
// stand-in agents-server: the fixture the agents suites share across shapes.
import { SECRET, until, userToken, type TestClient } from './gateway.js';
import { startAgentsStandIn, type AgentsStandIn, type LinkRecord, type StandInOptions } from './agents-server.js';
import { freePort } from './ports.js';
import { spawnGateway, type GatewayProcess } from './processes.js';
import { connectOnWorker, connectPlaced, type Placed } from './workers.js';

export interface AgentsGatewayOptions {
  workers: number;
  /** REDIS_URL; none: the in-process bus and the memory outbox. */
  redisUrl?: string;
  nodeId?: string;
  env?: Record<string, string>;
  standIn?: StandInOptions;
}

export interface AgentsGateway {
  readonly gateway: GatewayProcess;
  readonly standIn: AgentsStandIn;
  readonly nodeId: string;
  readonly workers: number;
  /** The open link of worker `n`: its hello names `<NODE_ID>.w<n>`. Throws if there is none. */
  link(worker: number): LinkRecord;
  /** The same, or undefined while worker `n` has no open link. */
  findLink(worker: number): LinkRecord | undefined;
  /** A client of `userId` on worker `n` (WORKERS > 1). Closed by closeClients(). */
  userOn(worker: number, userId: string): Promise<TestClient>;
  /** A client of `userId` on whichever worker the kernel picks. Closed by closeClients(). */
  user(userId: string): Promise<Placed>;
  closeClients(): Promise<void>;
  stop(): Promise<void>;
}

/** The nodeId a link's gateway said hello with. */
export const helloNode = (link: LinkRecord): string | undefined => link.frames.find((f) => f.type === 'hello')?.data.nodeId;

export async function startAgentsGateway(options: AgentsGatewayOptions): Promise<AgentsGateway> {
  const nodeId = options.nodeId ?? 'agw';
  const standIn = await startAgentsStandIn(options.standIn);
  let gateway: GatewayProcess;
  try {
    gateway = await spawnGateway({
      PORT: String(await freePort()),
      HOST: '127.0.0.1',
      JWT_SECRET: SECRET,
      LOG_LEVEL: 'warn',
      NODE_ID: nodeId,
      WORKERS: String(options.workers),
      AGENTS_URL: standIn.url,
      AGENTS_RECONNECT_MAX_MS: '200',
      RATE_LIMIT_PER_S: '1000',
      RATE_LIMIT_BURST: '1000',
      ...(options.redisUrl ? { REDIS_URL: options.redisUrl } : {}),
      ...options.env,
    });
  } catch (err) {
    await standIn.stop();
    throw err;
  }
  // /healthz answers once the first worker listens; every worker's link is the sign all are up.
  await until(() => standIn.openLinks().length === options.workers, 10_000, `${options.workers} agents links`);
  const clients: TestClient[] = [];
  const findLink = (worker: number) => [...standIn.openLinks()].reverse().find((l) => helloNode(l) === `${nodeId}.w${worker}`);
  return {
    gateway,
    standIn,
    nodeId,
    workers: options.workers,
    findLink,
    link(worker) {
      const link = findLink(worker);
      if (!link) throw new Error(`no open link said hello as ${nodeId}.w${worker}; open: ${standIn.openLinks().map(helloNode).join(', ')}`);
      return link;
    },
    async userOn(worker, userId) {
      const client = await connectOnWorker(gateway.wsUrl, userToken('*', userId), worker);
      clients.push(client);
      return client;
    },
    async user(userId) {
      const placed = await connectPlaced(gateway.wsUrl, userToken('*', userId));
      clients.push(placed.client);
      return placed;
    },
    async closeClients() {
      await Promise.all(clients.splice(0).map((c) => c.close()));
    },
    async stop() {
      await Promise.all(clients.splice(0).map((c) => c.close()));
      await gateway.stop();
      await standIn.stop();
    },
  };
}
