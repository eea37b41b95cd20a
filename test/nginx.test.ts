// A real nginx (the settings of deploy/nginx.conf) in front of two gateway processes on a real Redis:
// what a deployment looks like, end to end. nginx missing is a failure, never a skip: .ci/run
// installs it.
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, chmodSync, constants as fsConstants, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import WebSocket from 'ws';
import { parse as parseYaml } from 'yaml';
import { parseConfig } from '../src/config.js';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createProducer } from '../src/bus/producer.js';
import { connect, postEvent, randomGuid, SECRET, until, userToken, type Frame, type TestClient } from './helpers/gateway.js';
import { freePort } from './helpers/ports.js';
import { spawnGatewaysOnRedis, trackChild, type GatewayProcess } from './helpers/processes.js';
import { startRedis, type RedisServer } from './helpers/redis.js';

const key = (guid: string) => `autocode:{${guid}}:events`;

function findNginx(): string {
  const dirs = [...(process.env['PATH'] ?? '').split(path.delimiter), '/usr/sbin', '/usr/local/sbin', '/usr/local/nginx/sbin'];
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = path.join(dir, 'nginx');
    try {
      accessSync(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // keep looking
    }
  }
  throw new Error('nginx not found (PATH, /usr/sbin): install it (apt-get install nginx; .ci/run does); this test never skips');
}

/**
 * deploy/nginx.conf itself, so the file people copy is the file tested: only the upstream servers,
 * the listen address, the worker count and the paths (pid, logs, temp) are replaced.
 */
function nginxConfig(dir: string, port: number, upstreams: number[], workerConnections = 1024): string {
  const deployed = readFileSync(new URL('../deploy/nginx.conf', import.meta.url), 'utf8');
  const replace = (text: string, pattern: RegExp, replacement: string) => {
    if (!pattern.test(text)) throw new Error(`deploy/nginx.conf no longer matches ${String(pattern)}: update this test`);
    return text.replace(pattern, replacement);
  };
  let conf = deployed;
  conf = replace(conf, /^worker_processes .*;$/m, `worker_processes 1;\npid ${dir}/nginx.pid;\nerror_log ${dir}/error.log info;`);
  conf = replace(conf, /worker_connections \d+;/, `worker_connections ${workerConnections};`);
  conf = replace(
    conf,
    /^http \{$/m,
    ['http {', '  access_log off;', ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${dir}/${t};`)].join('\n'),
  );
  conf = replace(conf, /(^\s*server gw\d:8080 .*;\n)+/m, upstreams.map((p) => `    server 127.0.0.1:${p} max_fails=1 fail_timeout=5s;\n`).join(''));
  conf = replace(conf, /^(\s*)listen 8080;$/m, `$1listen 127.0.0.1:${port};`);
  return conf;
}

interface Nginx {
  readonly url: string;
  readonly wsUrl: string;
  stop(): Promise<void>;
}

async function startNginx(upstreams: number[], workerConnections?: number): Promise<Nginx> {
  const binary = findNginx();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'nginx-test-'));
  // nginx's workers run as an unprivileged user when the master is root: they must reach the temp paths.
  chmodSync(dir, 0o755);
  const port = await freePort();
  writeFileSync(path.join(dir, 'nginx.conf'), nginxConfig(dir, port, upstreams, workerConnections));
  const child: ChildProcess = spawn(binary, ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-e', path.join(dir, 'error.log'), '-g', 'daemon off;'], { stdio: ['ignore', 'pipe', 'pipe'] });
  trackChild(child);
  let output = '';
  child.stdout?.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (output += c.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const log = () => {
    let errorLog = '';
    try {
      errorLog = readFileSync(path.join(dir, 'error.log'), 'utf8');
    } catch {
      // not written yet
    }
    return `${output}\n--- error.log ---\n${errorLog.split('\n').slice(-30).join('\n')}`;
  };
  const url = `http://127.0.0.1:${port}`;
  try {
    await until(async () => {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`nginx exited (code ${child.exitCode}, signal ${child.signalCode}):\n${log()}`);
      try {
        return (await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(1000) })).status === 200;
      } catch {
        return false;
      }
    }, 10_000, `nginx answering /healthz on ${url}:\n${log()}`);
  } catch (err) {
    child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    url,
    wsUrl: `ws://127.0.0.1:${port}/ws`,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGQUIT'); // graceful for nginx
        const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(timer);
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Every client a test opened, closed after it even when it fails (the next test counts connections). */
const opened: TestClient[] = [];

/** Connects as a real client would after a close: retry briefly while the proxy finds a live upstream. */
async function connectThrough(wsUrl: string, token: string, headers: Record<string, string> = {}): Promise<TestClient> {
  for (let attempt = 1; ; attempt++) {
    try {
      const client = await connect(wsUrl, token, { headers });
      opened.push(client);
      return client;
    } catch (err) {
      if (attempt >= 10) throw err;
      await new Promise((r) => setTimeout(r, 50 * attempt));
    }
  }
}

/** Which gateway a client landed on: connections counted by each gateway's own /metrics. */
async function connectionsOn(g: GatewayProcess): Promise<number> {
  const text = await (await fetch(`${g.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('ws_connections{') || l.startsWith('ws_connections '));
  return Number(line?.split(' ').pop());
}

const ids = (frames: Frame[]) => frames.map((f) => f.id!);

describe('two gateways behind a real nginx', () => {
  let redis: RedisServer;
  let gateways: [GatewayProcess, GatewayProcess];
  let nginx: Nginx;
  beforeAll(async () => {
    findNginx();
    redis = await startRedis();
    // One thread each: this test is about the proxy, not the worker threads. LOG_LEVEL info for the
    // "connection opened" lines (remote address).
    gateways = (await spawnGatewaysOnRedis(redis.url, 2, SECRET, { WORKERS: '1', LOG_LEVEL: 'info' })) as [GatewayProcess, GatewayProcess];
    nginx = await startNginx(gateways.map((g) => g.port));
  });
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((c) => c.close()));
  });
  afterAll(async () => {
    await nginx?.stop();
    await Promise.all((gateways ?? []).map((g) => g.stop()));
    await redis?.stop();
  });

  it('spreads clients over both gateways, delivers events published anywhere to all, and sets X-Forwarded-For', async () => {
    const guid = randomGuid();
    const clients: TestClient[] = [];
    for (let i = 0; i < 6; i++) clients.push(await connectThrough(nginx.wsUrl, userToken('*', `nginx-user-${i}`)));
    await Promise.all(clients.map((c) => c.join(guid)));
    // No sticky sessions: least_conn puts 3 on each.
    expect(await Promise.all(gateways.map(connectionsOn))).toEqual([3, 3]);

    const [a, b] = gateways;
    const published: string[] = [];
    published.push((await postEvent(a.url, guid, { type: 'project_message', data: { via: 'A' } })).body.id);
    published.push((await postEvent(b.url, guid, { type: 'project_message', data: { via: 'B' } })).body.id);
    const viaProxy = await postEvent(nginx.url, guid, { type: 'project_status_change', data: { via: 'nginx' } });
    expect(viaProxy.status).toBe(202);
    published.push(viaProxy.body.id);
    published.push(await redis.cli('XADD', key(guid), '*', 'type', 'project_message', 'data', '{"via":"redis-cli"}'));
    for (const c of clients) expect(ids(await c.waitForEvents(guid, 4))).toEqual(published);
    await new Promise((r) => setTimeout(r, 100));
    for (const c of clients) expect(c.events(guid)).toHaveLength(4);

    // The proxy sets the header itself: a value a client sends is replaced by the address nginx saw.
    const spoofer = await connectThrough(nginx.wsUrl, userToken('*', 'xff-spoofer'), { 'x-forwarded-for': '203.0.113.66' });
    const line = await Promise.any(gateways.map((g) => g.waitForOutput(/"userId":"xff-spoofer".*connection opened|connection opened.*"userId":"xff-spoofer"/)));
    expect(JSON.parse(line)).toMatchObject({ remoteAddress: '127.0.0.1' });
    await Promise.all([...clients, spoofer].map((c) => c.close()));
  });

  it('a stopped gateway closes its clients with 1001; they reconnect through nginx and resume with no gap and no duplicate', async () => {
    const guid = randomGuid();
    const [a, b] = gateways;
    await until(async () => (await connectionsOn(a)) + (await connectionsOn(b)) === 0, 5000, 'previous clients gone');
    const clients: TestClient[] = [];
    for (let i = 0; i < 4; i++) clients.push(await connectThrough(nginx.wsUrl, userToken('*', `resume-${i}`)));
    await Promise.all(clients.map((c) => c.join(guid)));
    expect(await Promise.all(gateways.map(connectionsOn))).toEqual([2, 2]);

    // Events keep flowing through Redis the whole time, as a backend would publish them.
    const producerConnection = new Redis(redis.url);
    const producer = createProducer(producerConnection, { maxLen: 100000 });
    const all: string[] = [];
    let stop = false;
    const flowing = (async () => {
      while (!stop) {
        all.push(...(await producer.publish(guid, [{ type: 'project_message', data: { n: all.length } }])));
        await new Promise((r) => setTimeout(r, 2));
      }
    })();
    await until(() => clients.every((c) => c.events(guid).length >= 20), 5000, 'events flowing to every client');

    expect(clients.every((c) => c.ws.readyState === c.ws.OPEN)).toBe(true);

    const exitCode = a.stop('SIGTERM');
    // Exactly the clients that were on A get 1001 (2 of them); the others stay open.
    const closedByA: TestClient[] = [];
    await until(() => clients.filter((c) => c.ws.readyState === c.ws.CLOSED).length === 2, 8000, 'the two clients on A closed');
    for (const c of clients) if (c.ws.readyState === c.ws.CLOSED) closedByA.push(c);
    for (const c of closedByA) expect((await c.closed).code).toBe(1001);
    expect(await exitCode).toBe(0);

    // Reconnect through the same proxy address and resume from the last id each one saw.
    const resumed: { before: Frame[]; after: TestClient }[] = [];
    let replayed = 0;
    for (const old of closedByA) {
      const before = old.events(guid);
      const fresh = await connectThrough(nginx.wsUrl, userToken('*', 'resumed'));
      const ack = await fresh.join(guid, before[before.length - 1]!.id!);
      expect(ack.data.recovered).toBe(true);
      replayed += ack.data.replayed as number;
      resumed.push({ before, after: fresh });
    }
    // The gap was real and bridged by a replay: events were published while these clients were away.
    expect(replayed).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 200));
    stop = true;
    await flowing;
    const last = all[all.length - 1]!;
    for (const { after } of resumed) await until(() => ids(after.events(guid)).includes(last), 5000, 'resumed client caught up');
    for (const c of clients.filter((x) => !closedByA.includes(x))) await until(() => ids(c.events(guid)).includes(last), 5000, 'surviving client caught up');

    // Every client, across its reconnect, saw one contiguous run of the published ids ending at the last one.
    const histories = [
      ...resumed.map(({ before, after }) => [...ids(before), ...ids(after.events(guid))]),
      ...clients.filter((c) => !closedByA.includes(c)).map((c) => ids(c.events(guid))),
    ];
    for (const seen of histories) {
      const start = all.indexOf(seen[0]!);
      expect(start).toBeGreaterThanOrEqual(0);
      expect(seen).toEqual(all.slice(start));
    }
    // Only B is left behind the proxy, and it holds everyone.
    expect(await connectionsOn(b)).toBe(4);
    await Promise.all([...clients, ...resumed.map((r) => r.after)].map((c) => c.close()));
    await producerConnection.quit();
  });
});

/**
 * What deploy/docker-compose.yml gives its gateways: TRUSTED_PROXIES naming nginx's own address.
 * The test's nginx talks to the gateways from 127.0.0.1, so that is the address these gateways trust,
 * exactly as compose trusts its nginx's fixed address; the compose file itself is checked to say so.
 */
describe("the shipped deployment's edge settings behind a real nginx (compose's TRUSTED_PROXIES, default limits)", () => {
  let redis: RedisServer;
  let gateways: GatewayProcess[];
  let nginx: Nginx;
  /** The limits a fresh install has (nothing lifted, unlike the other tests here). */
  const defaults = parseConfig({ JWT_SECRET: SECRET }).edge;
  const defaultLimits = {
    MAX_CONNECTIONS: String(defaults.maxConnections),
    MAX_CONNECTIONS_PER_USER: String(defaults.maxConnectionsPerUser),
    MAX_CONNECTIONS_PER_IP: String(defaults.maxConnectionsPerIp),
    UPGRADES_PER_IP_PER_S: String(defaults.upgradesPerIp.perSecond),
    UPGRADES_PER_IP_BURST: String(defaults.upgradesPerIp.burst),
    HTTP_RATE_LIMIT_PER_S: String(defaults.httpPerToken.perSecond),
    HTTP_RATE_LIMIT_BURST: String(defaults.httpPerToken.burst),
  };

  beforeAll(async () => {
    findNginx();
    redis = await startRedis();
    gateways = await spawnGatewaysOnRedis(redis.url, 2, SECRET, { ...defaultLimits, TRUSTED_PROXIES: '127.0.0.1', RATE_LIMIT_PENALTY_S: '30', WORKERS: '1' });
    // 500 proxied WebSockets hold 1,000 connections in nginx.
    nginx = await startNginx(gateways.map((g) => g.port), 4096);
  });
  afterAll(async () => {
    await nginx?.stop();
    await Promise.all((gateways ?? []).map((g) => g.stop()));
    await redis?.stop();
  });

  it("compose trusts exactly its nginx: TRUSTED_PROXIES is nginx's fixed address in the compose network", () => {
    const compose = parseYaml(readFileSync(new URL('../deploy/docker-compose.yml', import.meta.url), 'utf8'), { merge: true }) as {
      services: Record<string, { environment?: Record<string, string>; networks?: Record<string, { ipv4_address?: string }> }>;
      networks: Record<string, { ipam: { config: { subnet: string }[] } }>;
    };
    const nginxAddress = compose.services['nginx']!.networks!['default']!.ipv4_address;
    expect(nginxAddress).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
    const subnet = compose.networks['default']!.ipam.config[0]!.subnet;
    expect(nginxAddress!.split('.').slice(0, 3).join('.')).toBe(subnet.split('.').slice(0, 3).join('.'));
    const gatewayServices = Object.entries(compose.services).filter(([name]) => /^gw\d+$/.test(name));
    expect(gatewayServices.length).toBeGreaterThanOrEqual(2);
    for (const [, service] of gatewayServices) expect(service.environment?.['TRUSTED_PROXIES']).toBe(nginxAddress);
  });

  it('does not pass /metrics from outside (Prometheus scrapes each gateway directly)', async () => {
    expect((await fetch(`${nginx.url}/metrics`)).status).toBe(404);
    // The gateways behind it do serve it (no METRICS_PORT here): it is the proxy that refuses.
    expect((await fetch(`${gateways[0]!.url}/metrics`)).status).toBe(200);
  });

  /** A client from its own loopback address (Linux routes all of 127.0.0.0/8 to lo). */
  function upgradeFrom(localAddress: string, token: string | null): Promise<{ status: number; ws?: WebSocket }> {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(token ? `${nginx.wsUrl}?token=${token}` : nginx.wsUrl, { localAddress });
      ws.once('open', () => resolve({ status: 101, ws }));
      ws.once('unexpected-response', (_req, res) => {
        res.resume();
        resolve({ status: res.statusCode ?? 0 });
      });
      ws.once('error', reject);
    });
  }

  it("admits 500 clients from 50 addresses, and a flood from one address or one user leaves every other client's upgrade at 101", async () => {
    const held: WebSocket[] = [];
    try {
      // 500 clients, 10 from each of 50 addresses, each its own user, as the default limits stand.
      const first = await Promise.all(Array.from({ length: 500 }, (_, i) => upgradeFrom(`127.0.0.${2 + (i % 50)}`, userToken('*', `crowd-${i}`))));
      for (const r of first) if (r.ws) held.push(r.ws);
      expect(first.filter((r) => r.status === 101)).toHaveLength(500);

      // A tokenless storm of 1,000 upgrades from one address: refused (401, then 429 for that address).
      const storm = await Promise.all(Array.from({ length: 1000 }, () => upgradeFrom('127.0.0.200', null)));
      expect(storm.every((r) => r.status === 401 || r.status === 429)).toBe(true);
      expect(storm.some((r) => r.status === 429)).toBe(true);

      // A user flooding frames is closed with 4429 and penalized (that user, that address) on every
      // instance: its reconnect from another address is refused whichever gateway nginx picks.
      const flooder = await upgradeFrom('127.0.0.201', userToken('*', 'flooder'));
      const closed = new Promise<number>((r) => flooder.ws!.once('close', (code) => r(code)));
      for (let i = 0; i < 200; i++) flooder.ws!.send(JSON.stringify({ type: 'ping', id: String(i) }));
      expect(await closed).toBe(4429);
      const back = await Promise.all([202, 203, 204, 205].map((n) => upgradeFrom(`127.0.0.${n}`, userToken('*', 'flooder'))));
      expect(back.map((r) => r.status)).toEqual([429, 429, 429, 429]);

      // Everyone else: new users from the crowd's addresses and from new ones all get in.
      const others = await Promise.all(Array.from({ length: 100 }, (_, i) => upgradeFrom(`127.0.0.${2 + (i % 60)}`, userToken('*', `after-${i}`))));
      for (const r of others) if (r.ws) held.push(r.ws);
      expect(others.map((r) => r.status)).toEqual(Array(100).fill(101));
    } finally {
      for (const ws of held) ws.terminate();
    }
  });
});
