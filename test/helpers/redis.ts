// Real redis-server processes for tests (never mocks).
//
// Every server runs with no persistence (`--save "" --appendonly no`) in its own temporary
// directory, so `kill()` + `restart()` gives an empty server on the same port: exactly what
// fault-injection tests want. All processes are SIGKILLed when the test process exits.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants, mkdtempSync, rmSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freePort, freePorts } from './ports.js';
import { LineRing, registerExitCleanup, trackChild } from './processes.js';

const HOST = '127.0.0.1';
const READY_TIMEOUT_MS = 5_000;
const CLUSTER_READY_TIMEOUT_MS = 10_000;
const STOP_GRACE_MS = 5_000;
const CLUSTER_SLOTS = 16_384;

export interface RedisServer {
  readonly port: number;
  /** `redis://127.0.0.1:PORT` */
  readonly url: string;
  /** Working directory (`--dir`) of the server; removed by `stop()`. */
  readonly dir: string;
  /** pid of the current redis-server process (undefined while it is down). */
  readonly pid: number | undefined;
  /** SIGKILL the server and wait until it has exited (no-op if it is down). */
  kill(): Promise<void>;
  /** Start the server again on the same port (SIGKILLing it first if it still runs); waits until PING answers. Data is gone. */
  restart(): Promise<void>;
  /** Graceful shutdown (SIGTERM, SIGKILL after 5 s) and removal of the temporary directory. Idempotent. */
  stop(): Promise<void>;
  /** `redis-cli -h 127.0.0.1 -p PORT ...args`, stdout trimmed. Rejects on a non-zero exit (e.g. connection refused). */
  cli(...args: string[]): Promise<string>;
  /** Last lines of the server's stdout/stderr. */
  output(): string;
}

export interface ClusterNode {
  host: string;
  port: number;
}

export interface RedisCluster {
  /** Masters, in creation order. */
  readonly nodes: ClusterNode[];
  readonly ports: number[];
  /** The underlying servers (same order as `ports`), e.g. to kill one node in a fault test. */
  readonly servers: RedisServer[];
  /** Stop every node. Idempotent. */
  stop(): Promise<void>;
  /** `redis-cli -h 127.0.0.1 -p port ...args` against one node. */
  cli(port: number, ...args: string[]): Promise<string>;
}

// ---------------------------------------------------------------------------------------------

const NOT_FOUND_MESSAGE =
  'redis-server not found on PATH: install it (apt-get install redis-server); tests never mock Redis';

let binariesChecked = false;

function onPath(command: string): boolean {
  for (const dir of (process.env['PATH'] ?? '').split(path.delimiter)) {
    if (!dir) continue;
    try {
      accessSync(path.join(dir, command), fsConstants.X_OK);
      return true;
    } catch {
      // keep looking
    }
  }
  return false;
}

function assertRedisInstalled(): void {
  if (binariesChecked) return;
  if (!onPath('redis-server')) throw new Error(NOT_FOUND_MESSAGE);
  if (!onPath('redis-cli')) {
    throw new Error('redis-cli not found on PATH: install it (apt-get install redis-tools); tests never mock Redis');
  }
  binariesChecked = true;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

function isRunning(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

function waitExit(child: ChildProcess): Promise<void> {
  if (!isRunning(child)) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

function redisCli(port: number, args: string[], timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      'redis-cli',
      ['-h', HOST, '-p', String(port), ...args],
      { timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err) {
          const detail = `${stdout}${stderr}`.trim();
          reject(new Error(`redis-cli -p ${port} ${args.join(' ')} failed: ${err.message}${detail ? `\n${detail}` : ''}`));
        } else {
          resolve(stdout.trim());
        }
      },
    );
  });
}

/**
 * Pipelines PING + INFO server over a raw TCP connection; true when the answer is +PONG and the
 * server's process_id is `pid` (so we never mistake another test's server on a reused port for ours).
 */
function probe(port: number, pid: number): Promise<boolean> {
  return new Promise((resolve) => {
    let buffer = '';
    let settled = false;
    const socket = net.connect({ host: HOST, port });
    const done = (ok: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(false), 500);
    socket.setEncoding('utf8');
    socket.once('error', () => done(false));
    socket.once('close', () => done(false));
    socket.once('connect', () => socket.write('*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n'));
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      if (!buffer.startsWith('+PONG\r\n')) {
        if (buffer.length >= 7 || buffer.startsWith('-')) done(false);
        return;
      }
      const match = /\r\nprocess_id:(\d+)\r\n/.exec(buffer);
      if (match) done(Number(match[1]) === pid);
    });
  });
}

interface Launch {
  child: ChildProcess;
  ring: LineRing;
}

function launch(port: number, dir: string, extraArgs: string[]): Launch {
  const args = [
    '--port', String(port),
    '--bind', HOST,
    '--save', '',
    '--appendonly', 'no',
    '--daemonize', 'no',
    '--dir', dir,
    ...extraArgs,
  ];
  const child = spawn('redis-server', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  trackChild(child);
  const ring = new LineRing(200);
  ring.attach(child.stdout, 'stdout');
  ring.attach(child.stderr, 'stderr');
  child.on('error', () => {
    // reported through waitReady (exit / no pid)
  });
  return { child, ring };
}

class StartError extends Error {
  constructor(
    message: string,
    readonly addressInUse: boolean,
  ) {
    super(message);
  }
}

async function waitReady({ child, ring }: Launch, port: number, timeoutMs = READY_TIMEOUT_MS): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const fail = (why: string): StartError => {
    const output = ring.toString();
    return new StartError(
      `redis-server on port ${port} ${why}\n--- redis-server output ---\n${output}`,
      /address already in use/i.test(output),
    );
  };
  for (;;) {
    if (child.pid === undefined || !isRunning(child)) {
      await sleep(20); // let the last output lines arrive
      throw fail(`exited before answering PING (exit code ${String(child.exitCode)}, signal ${String(child.signalCode)})`);
    }
    if (await probe(port, child.pid)) return;
    if (Date.now() >= deadline) {
      child.kill('SIGKILL');
      await waitExit(child);
      throw fail(`did not answer PING within ${timeoutMs} ms`);
    }
    await sleep(25);
  }
}

interface StartSpec {
  /** Fixed port (no retry) or undefined to pick free ports (retries on "address in use"). */
  port?: number | undefined;
  /** Extra arguments, given the chosen port, the node's directory and a second free port. */
  extraArgs?: (port: number, dir: string, auxPort: number) => string[];
  needsAuxPort?: boolean;
}

async function startServer(spec: StartSpec): Promise<RedisServer> {
  assertRedisInstalled();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'redis-test-'));
  const unregisterDirCleanup = registerExitCleanup(() => rmSync(dir, { recursive: true, force: true }));

  let port = 0;
  let extra: string[] = [];
  let current: Launch | undefined;
  const attempts = spec.port === undefined ? 5 : 1;
  try {
    for (let attempt = 1; ; attempt++) {
      let aux = 0;
      if (spec.port !== undefined) {
        port = spec.port;
        if (spec.needsAuxPort) aux = await freePort();
      } else if (spec.needsAuxPort) {
        [port = 0, aux = 0] = await freePorts(2);
      } else {
        port = await freePort();
      }
      extra = spec.extraArgs ? spec.extraArgs(port, dir, aux) : [];
      current = launch(port, dir, extra);
      try {
        await waitReady(current, port);
        break;
      } catch (err) {
        if (current.child.exitCode === null && current.child.signalCode === null) current.child.kill('SIGKILL');
        await waitExit(current.child);
        if (err instanceof StartError && err.addressInUse && attempt < attempts) continue;
        throw err;
      }
    }
  } catch (err) {
    unregisterDirCleanup();
    await rm(dir, { recursive: true, force: true });
    throw err;
  }

  let launched: Launch = current;
  let stopped: Promise<void> | undefined;

  const kill = async (): Promise<void> => {
    if (isRunning(launched.child)) launched.child.kill('SIGKILL');
    await waitExit(launched.child);
  };

  const server: RedisServer = {
    port,
    url: `redis://${HOST}:${port}`,
    dir,
    get pid() {
      return isRunning(launched.child) ? launched.child.pid : undefined;
    },
    kill,
    async restart() {
      if (stopped) throw new Error(`redis-server on port ${port} was stopped; start a new one instead`);
      await kill();
      launched = launch(port, dir, extra);
      try {
        await waitReady(launched, port);
      } catch (err) {
        await kill();
        throw err;
      }
    },
    stop() {
      stopped ??= (async () => {
        const { child } = launched;
        if (isRunning(child)) {
          child.kill('SIGTERM');
          const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
          await waitExit(child);
          clearTimeout(timer);
        }
        unregisterDirCleanup();
        await rm(dir, { recursive: true, force: true });
      })();
      return stopped;
    },
    cli: (...args: string[]) => redisCli(port, args),
    output: () => launched.ring.toString(),
  };
  return server;
}

/**
 * Start a standalone redis-server on `opts.port` (or a free port) bound to 127.0.0.1, without
 * persistence, and wait until it answers PING.
 */
export async function startRedis(opts: { port?: number; args?: string[] } = {}): Promise<RedisServer> {
  const args = opts.args;
  return startServer({ port: opts.port, ...(args ? { extraArgs: () => args } : {}) });
}

/**
 * Total calls per command from `INFO commandstats` of one server (`cmdstat_xread:calls=12,…` →
 * `{ xread: 12 }`), plus `net_input_bytes` (`total_net_input_bytes` from INFO stats).
 */
export async function commandStats(cli: (...args: string[]) => Promise<string>): Promise<Map<string, number>> {
  const stats = new Map<string, number>();
  for (const line of (await cli('INFO', 'commandstats')).split(/\r?\n/)) {
    const m = /^cmdstat_([^:]+):calls=(\d+)/.exec(line);
    if (m) stats.set(m[1]!, Number(m[2]));
  }
  const input = /total_net_input_bytes:(\d+)/.exec(await cli('INFO', 'stats'));
  stats.set('net_input_bytes', Number(input?.[1] ?? 0));
  return stats;
}

/** What `after` counts beyond `before`, per key, leaving out the INFO calls that took the stats. */
export function statsDelta(before: Map<string, number>, after: Map<string, number>): Map<string, number> {
  const delta = new Map<string, number>();
  for (const [name, n] of after) if (name !== 'info' && n !== (before.get(name) ?? 0)) delta.set(name, n - (before.get(name) ?? 0));
  return delta;
}

/** Calls of every command in a delta (bytes excluded). */
export function totalCalls(delta: Map<string, number>): number {
  let n = 0;
  for (const [name, calls] of delta) if (name !== 'net_input_bytes') n += calls;
  return n;
}

// ---------------------------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------------------------

function parseInfo(text: string): Map<string, string> {
  const map = new Map<string, string>();
  for (const line of text.split(/\r?\n/)) {
    const i = line.indexOf(':');
    if (i > 0) map.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  return map;
}

/**
 * Start `opts.masters` (default 3, minimum 3) cluster-enabled servers, join them with
 * `redis-cli --cluster create ... --cluster-replicas 0`, and wait until every node reports
 * `cluster_state:ok`, knows all nodes and sees all 16384 slots assigned.
 * Each node's cluster bus uses its own free port (`--cluster-port`), not PORT+10000.
 */
export async function startRedisCluster(opts: { masters?: number } = {}): Promise<RedisCluster> {
  const masters = opts.masters ?? 3;
  if (!Number.isInteger(masters) || masters < 3) {
    throw new Error(`startRedisCluster: Redis Cluster needs at least 3 masters (got ${masters})`);
  }
  assertRedisInstalled();

  const started = await Promise.allSettled(
    Array.from({ length: masters }, () =>
      startServer({
        needsAuxPort: true,
        extraArgs: (port, dir, busPort) => [
          '--cluster-enabled', 'yes',
          '--cluster-config-file', path.join(dir, `nodes-${port}.conf`),
          '--cluster-node-timeout', '2000',
          '--cluster-port', String(busPort),
        ],
      }),
    ),
  );
  const servers = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const stopAll = async (): Promise<void> => {
    await Promise.all(servers.map((s) => s.stop()));
  };
  const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    await stopAll();
    throw failed.reason;
  }

  const ports = servers.map((s) => s.port);
  try {
    await new Promise<void>((resolve, reject) => {
      execFile(
        'redis-cli',
        ['--cluster', 'create', ...ports.map((p) => `${HOST}:${p}`), '--cluster-replicas', '0', '--cluster-yes'],
        { timeout: 30_000, maxBuffer: 16 * 1024 * 1024 },
        (err, stdout, stderr) => {
          if (err) reject(new Error(`redis-cli --cluster create failed: ${err.message}\n${stdout}${stderr}`));
          else resolve();
        },
      );
    });

    const deadline = Date.now() + CLUSTER_READY_TIMEOUT_MS;
    for (;;) {
      const infos = await Promise.all(
        ports.map((p) => redisCli(p, ['CLUSTER', 'INFO']).catch((err: unknown) => String(err))),
      );
      const ready = infos.every((text) => {
        const info = parseInfo(text);
        return (
          info.get('cluster_state') === 'ok' &&
          info.get('cluster_known_nodes') === String(masters) &&
          info.get('cluster_slots_assigned') === String(CLUSTER_SLOTS)
        );
      });
      if (ready) break;
      if (Date.now() >= deadline) {
        throw new Error(
          `cluster on ports ${ports.join(',')} not ready within ${CLUSTER_READY_TIMEOUT_MS} ms:\n` +
            infos.map((text, i) => `--- ${ports[i]} ---\n${text}`).join('\n'),
        );
      }
      await sleep(100);
    }
  } catch (err) {
    await stopAll();
    throw err;
  }

  let stopping: Promise<void> | undefined;
  return {
    nodes: ports.map((port) => ({ host: HOST, port })),
    ports,
    servers,
    stop() {
      stopping ??= stopAll();
      return stopping;
    },
    cli: (port: number, ...args: string[]) => redisCli(port, args),
  };
}

interface SlotRange {
  start: number;
  end: number;
  port: number;
}

/** Slot ranges served by each master, from `CLUSTER NODES` on the first reachable node. */
async function slotOwners(cluster: RedisCluster): Promise<SlotRange[]> {
  let text: string | undefined;
  let lastError: unknown;
  for (const port of cluster.ports) {
    try {
      text = await cluster.cli(port, 'CLUSTER', 'NODES');
      break;
    } catch (err) {
      lastError = err;
    }
  }
  if (text === undefined) throw lastError instanceof Error ? lastError : new Error(String(lastError));

  const ranges: SlotRange[] = [];
  for (const line of text.split('\n')) {
    // <id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link> <slot> ...
    const fields = line.trim().split(' ');
    const address = fields[1];
    const flags = fields[2];
    if (address === undefined || flags === undefined) continue;
    if (!flags.split(',').includes('master') || flags.includes('fail')) continue;
    const port = Number(/:(\d+)@/.exec(address)?.[1]);
    if (!Number.isInteger(port)) continue;
    for (const slot of fields.slice(8)) {
      if (slot.startsWith('[')) continue; // migrating/importing marker
      const [a, b] = slot.split('-');
      const start = Number(a);
      const end = b === undefined ? start : Number(b);
      if (Number.isInteger(start) && Number.isInteger(end)) ranges.push({ start, end, port });
    }
  }
  return ranges;
}

async function keySlot(cluster: RedisCluster, key: string): Promise<number> {
  const first = cluster.ports[0];
  if (first === undefined) throw new Error('cluster has no nodes');
  const slot = Number(await cluster.cli(first, 'CLUSTER', 'KEYSLOT', key));
  if (!Number.isInteger(slot)) throw new Error(`CLUSTER KEYSLOT ${key} gave no slot`);
  return slot;
}

/** Port of the master that owns `key`'s hash slot (CLUSTER KEYSLOT + CLUSTER NODES). */
export async function masterPortForKey(cluster: RedisCluster, key: string): Promise<number> {
  const slot = await keySlot(cluster, key);
  const owner = (await slotOwners(cluster)).find((r) => slot >= r.start && slot <= r.end);
  if (!owner) throw new Error(`no master owns slot ${slot} (key ${JSON.stringify(key)})`);
  return owner.port;
}

/**
 * `count` keys `${prefix}0`, `${prefix}1`, ... chosen so that each lands on a different master.
 * Returns `{ key, port }` pairs; rejects if the cluster has fewer than `count` masters with slots.
 */
export async function keysOnDistinctMasters(
  cluster: RedisCluster,
  count: number,
  prefix = 'key:',
): Promise<{ key: string; port: number }[]> {
  const owners = await slotOwners(cluster);
  const found = new Map<number, string>();
  for (let i = 0; i < 10_000 && found.size < count; i++) {
    const key = `${prefix}${i}`;
    const slot = await keySlot(cluster, key);
    const owner = owners.find((r) => slot >= r.start && slot <= r.end);
    if (owner && !found.has(owner.port)) found.set(owner.port, key);
  }
  if (found.size < count) throw new Error(`could not find ${count} keys on distinct masters`);
  return [...found].map(([port, key]) => ({ key, port }));
}
