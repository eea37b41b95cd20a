// The installable parts, as a user gets them: `npm pack`, install the tarball in an empty folder,
// then a script there imports `autocode-ws-gateway/producer` and `autocode-ws-gateway/client` (the
// import lines README shows), publishes with the producer to a real Redis and receives the event
// with the client through a real gateway. Only the package's declared dependencies are installed
// there, so a runtime import of a devDependency fails here.
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomGuid, startGateway, userToken, type StartedGateway } from './helpers/gateway.js';
import { REPO_ROOT } from './helpers/processes.js';
import { startRedis, type RedisServer } from './helpers/redis.js';

const run = promisify(execFile);

const CONSUMER = `
import { Redis } from 'ioredis';
import { createProducer } from 'autocode-ws-gateway/producer';
import { createGatewayClient } from 'autocode-ws-gateway/client';

const { REDIS_URL, GATEWAY_WS, TOKEN, GUID } = process.env;
const redis = new Redis(REDIS_URL);
const producer = createProducer(redis, { maxLen: 1000 });
const client = createGatewayClient({ url: GATEWAY_WS, getToken: () => TOKEN });
let onEvent;
const received = new Promise((resolve) => (onEvent = resolve));
const ack = await client.join(GUID, { event: (e) => onEvent(e) });
if (ack.latestId !== '0-0') throw new Error('unexpected join ack ' + JSON.stringify(ack));
const [id] = await producer.publish(GUID, [{ type: 'project_message', data: { text: 'from the tarball' } }]);
const event = await received;
console.log(JSON.stringify({ id, event }));
client.close();
await redis.quit();
process.exit(0);
`;

const PRODUCER_ONLY = `
import { Redis } from 'ioredis';
import { createProducer } from 'autocode-ws-producer';
const { REDIS_URL, GUID } = process.env;
const redis = new Redis(REDIS_URL);
const [id] = await createProducer(redis, { maxLen: 1000 }).publish(GUID, [{ type: 'project_stage_update', data: { stage: 'test' } }]);
// Keyed: a retry replays; another producer's same key is its own request.
const events = [{ type: 'project_message', data: { text: 'once' } }];
const backend = createProducer(redis, { maxLen: 1000, producer: 'backend-1' });
const [keyed] = await backend.publish(GUID, events, { idempotencyKey: 'req-1' });
const [retried] = await backend.publish(GUID, events, { idempotencyKey: 'req-1' });
const [other] = await createProducer(redis, { maxLen: 1000, producer: 'backend-2' }).publish(GUID, events, { idempotencyKey: 'req-1' });
console.log(JSON.stringify({ id, keyed, retried, other, entries: await redis.xrange('autocode:{' + GUID + '}:events', '-', '+') }));
await redis.quit();
`;

/** Files under `dir` whose name ends with `.node`: native addons. */
function nativeModules(dir: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile() && entry.name.endsWith('.node')) found.push(path.join(entry.parentPath ?? dir, entry.name));
  }
  return found;
}

describe('the packed package', () => {
  let redis: RedisServer;
  let gateway: StartedGateway;
  let dir: string;
  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'package-test-'));
    redis = await startRedis();
    gateway = await startGateway({ REDIS_URL: redis.url, NODE_ID: 'package-test' });
  });
  afterAll(async () => {
    await gateway?.close();
    await redis?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('installs from `npm pack` into an empty folder; producer and client import and work as README shows', async () => {
    // dist/ is fresh: `npm test` builds before vitest runs (and `prepare` builds on pack otherwise).
    const { stdout: packed } = await run('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', dir], { cwd: REPO_ROOT });
    const [info] = JSON.parse(packed) as [{ filename: string; files: { path: string }[] }];
    const files = info.files.map((f) => f.path);
    expect(files).toEqual(expect.arrayContaining(['package.json', 'dist/bus/producer.js', 'dist/bus/producer.d.ts', 'dist/browser/client/index.js', 'dist/browser/client/index.d.ts', 'dist/main.js', 'public/index.html']));
    // Only what a user needs: the build and the page the gateway serves; no sources, tests or bench.
    expect(files.filter((f) => !f.startsWith('dist/') && !f.startsWith('public/') && f !== 'package.json' && f !== 'README.md')).toEqual([]);

    const app = path.join(dir, 'app');
    await run('mkdir', [app]);
    writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true, type: 'module' }));
    await run('npm', ['install', path.join(dir, info.filename), '--prefer-offline', '--no-audit', '--no-fund'], { cwd: app, timeout: 120_000 });
    writeFileSync(path.join(app, 'consumer.mjs'), CONSUMER);

    const guid = randomGuid();
    // Node 20's WebSocket is behind a flag; browsers and Node 22 have it built in.
    const { stdout } = await run(process.execPath, ['--experimental-websocket', '--no-warnings', 'consumer.mjs'], {
      cwd: app,
      timeout: 20_000,
      env: { ...process.env, REDIS_URL: redis.url, GATEWAY_WS: gateway.wsUrl, TOKEN: userToken(), GUID: guid },
    });
    const result = JSON.parse(stdout.trim().split('\n').pop()!) as { id: string; event: { id: string; type: string; projectGuid: string; data: unknown } };
    expect(result.id).toMatch(/^\d+-\d+$/);
    expect(result.event).toMatchObject({ id: result.id, type: 'project_message', projectGuid: guid, data: { text: 'from the tarball' } });
  });

  it('the producer package (packages/producer) installs alone, with no native module, and appends an event', async () => {
    const { stdout: packed } = await run('npm', ['pack', '--json', '--pack-destination', dir], { cwd: path.join(REPO_ROOT, 'packages/producer') });
    const [info] = JSON.parse(packed) as [{ filename: string; files: { path: string }[] }];
    expect(info.files.map((f) => f.path)).toEqual(expect.arrayContaining(['package.json', 'dist/bus/producer.js', 'dist/bus/producer.d.ts']));
    const app = path.join(dir, 'producer-app');
    await run('mkdir', [app]);
    writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'backend', version: '1.0.0', private: true, type: 'module' }));
    await run('npm', ['install', path.join(dir, info.filename), '--prefer-offline', '--no-audit', '--no-fund'], { cwd: app, timeout: 120_000 });
    // What a backend that only appends events gets: ioredis and its few pure-JS dependencies.
    expect(nativeModules(path.join(app, 'node_modules'))).toEqual([]);
    expect(readdirSync(path.join(app, 'node_modules'))).not.toContain('uWebSockets.js');
    writeFileSync(path.join(app, 'produce.mjs'), PRODUCER_ONLY);
    const guid = randomGuid();
    const { stdout } = await run(process.execPath, ['produce.mjs'], { cwd: app, timeout: 20_000, env: { ...process.env, REDIS_URL: redis.url, GUID: guid } });
    const result = JSON.parse(stdout.trim()) as { id: string; keyed: string; retried: string; other: string; entries: [string, string[]][] };
    expect(result.retried).toBe(result.keyed);
    expect(result.entries).toEqual([
      [result.id, ['type', 'project_stage_update', 'data', '{"stage":"test"}']],
      [result.keyed, ['type', 'project_message', 'data', '{"text":"once"}']],
      [result.other, ['type', 'project_message', 'data', '{"text":"once"}']],
    ]);
  });
});
