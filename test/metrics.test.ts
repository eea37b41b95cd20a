// The series the dashboards and alerts in deploy/ read, moved by the real thing in both shapes (one
// thread, WORKERS=2 summed by the main thread): refused upgrades by reason, the Redis reader's lag
// and errors, and the series that exist at 0 before anything happened (rate() and the alerts need
// a sample before the first event).
import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCodes } from '../src/errors.js';
import { BUS_ERROR_KINDS, UPGRADE_REFUSAL_REASONS, upgradeReasonLabel } from '../src/metrics.js';
import { eventsKey } from '../src/redis/keys.js';
import { connect, randomGuid, until, userToken, type TestClient } from './helpers/gateway.js';
import { startRedis, type RedisServer } from './helpers/redis.js';
import { metricSeries, metricSum, SHAPES, type Served } from './helpers/topology.js';

/** The error code an upgrade is refused with (from the HTTP body), or 'OPENED' with the client kept. */
async function attempt(wsUrl: string, token: string | null, options: Parameters<typeof connect>[2] = {}): Promise<{ code: string; client?: TestClient }> {
  try {
    return { code: 'OPENED', client: await connect(wsUrl, token, options) };
  } catch (err) {
    const body = (err as { body?: string }).body;
    if (body === undefined) throw err;
    return { code: (JSON.parse(body) as { error: { code: string } }).error.code };
  }
}

describe('upgradeReasonLabel', () => {
  it('keeps the listed refusal codes and counts any other code as other', () => {
    for (const reason of UPGRADE_REFUSAL_REASONS) expect(upgradeReasonLabel(reason)).toBe(reason);
    // A code the upgrade does not refuse with today (one added later reads as other until listed).
    expect(upgradeReasonLabel('INTERNAL')).toBe('other');
    expect(upgradeReasonLabel('OVERLOADED')).toBe('other');
  });
});

describe('metrics the dashboards and alerts read', () => {
  let served: Served | null = null;
  let redis: RedisServer | null = null;
  const clients: TestClient[] = [];
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.close()));
    await served?.close();
    served = null;
    await redis?.stop();
    redis = null;
  });

  for (const shape of SHAPES) {
    it(`counts each refused upgrade under its reason and status, every reason at 0 from the start (${shape.name})`, async () => {
      served = await shape.start({ ALLOWED_ORIGINS: 'https://app.example', MAX_CONNECTIONS_PER_USER: '1', UPGRADES_PER_IP_PER_S: '0.01', UPGRADES_PER_IP_BURST: '8', LOG_LEVEL: 'silent' });
      const before = await served.metrics();
      for (const reason of UPGRADE_REFUSAL_REASONS) expect(metricSum(before, 'ws_upgrades_rejected_total', { reason, status: String(ErrorCodes[reason].http) }), reason).toBe(0);
      for (const kind of BUS_ERROR_KINDS) expect(metricSum(before, 'bus_errors_total', { kind }), kind).toBe(0);
      expect(metricSum(before, 'ws_connections_closed_total', { code: '1006' })).toBe(0);

      const codes: string[] = [];
      const tryOne = async (...args: Parameters<typeof attempt>) => {
        const { code, client } = await attempt(...args);
        if (client) clients.push(client);
        codes.push(code);
        return code;
      };
      expect(await tryOne(served.wsUrl, null)).toBe('UNAUTHORIZED');
      expect(await tryOne(served.wsUrl, userToken(), { headers: { origin: 'https://evil.example' } })).toBe('FORBIDDEN');
      expect(await tryOne(served.wsUrl, userToken(), { protocol: 'no.such.protocol' })).toBe('UNSUPPORTED_PROTOCOL');
      expect(await tryOne(served.wsUrl, 'not.a.jwt')).toBe('UNAUTHORIZED');
      expect(await tryOne(served.wsUrl, userToken('*', 'capped-user'))).toBe('OPENED');
      expect(await tryOne(served.wsUrl, userToken('*', 'capped-user'))).toBe('TOO_MANY_CONNECTIONS');
      // The address's upgrade bucket (8, refilled at 0.01/s) runs out: RATE_LIMITED, also a 429.
      for (let i = 0; i < 20 && (await tryOne(served.wsUrl, null)) !== 'RATE_LIMITED'; i++);
      expect(codes).toContain('RATE_LIMITED');

      const tally = new Map<string, number>();
      for (const code of codes) if (code !== 'OPENED') tally.set(code, (tally.get(code) ?? 0) + 1);
      const expected = UPGRADE_REFUSAL_REASONS.map((reason) => ({ reason, status: String(ErrorCodes[reason].http), value: tally.get(reason) ?? 0 }));
      let text = '';
      await until(async () => {
        text = await served!.metrics();
        return expected.every((e) => metricSum(text, 'ws_upgrades_rejected_total', { reason: e.reason, status: e.status }) === e.value);
      }, 5000, `refusals counted by reason: ${JSON.stringify(expected)}`);
      // Exactly those series: nothing chosen by a client, no reason under another status, no 'other'.
      const exported = metricSeries(text, 'ws_upgrades_rejected_total').map((s) => `${s.labels['reason']}/${s.labels['status']}`);
      expect(new Set(exported)).toEqual(new Set(expected.map((e) => `${e.reason}/${e.status}`)));
    }, 30_000);

    it(`with Redis: the reader's lag is the entry id's age, a malformed entry counts as entry_skipped, a Redis outage as connection errors (${shape.name})`, async () => {
      redis = await startRedis();
      served = await shape.start({ REDIS_URL: redis.url, LOG_LEVEL: 'silent' });
      const before = await served.metrics();
      for (const kind of BUS_ERROR_KINDS) expect(metricSum(before, 'bus_errors_total', { kind }), kind).toBe(0);
      expect(metricSum(before, 'bus_read_lag_seconds_count')).toBe(0);

      const guid = randomGuid();
      const key = eventsKey('autocode', guid);
      const client = await connect(served.wsUrl, userToken());
      clients.push(client);
      await client.join(guid);
      // An entry whose id says it was appended 20 s ago (anyone can XADD with an explicit id past the
      // stream's last), then a malformed one and a good one with ids of now.
      const old = await redis.cli('XADD', key, `${Date.now() - 20_000}-0`, 'type', 'project_message', 'data', '{"n":1}');
      await redis.cli('XADD', key, '*', 'type', 'project_message', 'data', '[1,2]');
      const last = await redis.cli('XADD', key, '*', 'type', 'project_message', 'data', '{"n":2}');
      await client.waitForEvents(guid, 2);
      expect(client.events(guid).map((e) => e.id)).toEqual([old, last]);

      let text = '';
      await until(async () => metricSum((text = await served!.metrics()), 'bus_errors_total', { kind: 'entry_skipped' }) === 1, 5000, 'the malformed entry counted');
      expect(metricSum(text, 'bus_entries_skipped_total')).toBe(1);
      // One read or more (the three entries may come in one read or several): exactly one sample,
      // the 20-second-old entry's, lands between 10 s and 30 s; the others within 10 s.
      const reads = metricSum(text, 'bus_read_lag_seconds_count');
      expect(reads).toBeGreaterThanOrEqual(1);
      expect(metricSum(text, 'bus_read_lag_seconds_bucket', { le: '10' })).toBe(reads - 1);
      expect(metricSum(text, 'bus_read_lag_seconds_bucket', { le: '30' })).toBe(reads);
      expect(metricSum(text, 'bus_read_lag_seconds_sum')).toBeGreaterThanOrEqual(19);
      for (const kind of BUS_ERROR_KINDS.filter((k) => k !== 'entry_skipped')) expect(metricSum(text, 'bus_errors_total', { kind }), kind).toBe(0);

      // Redis goes away: every failed reconnect of the bus's connections is counted.
      await redis.kill();
      await until(async () => metricSum(await served!.metrics(), 'bus_errors_total', { kind: 'connection' }) >= 2, 10_000, 'connection errors counted while Redis is down');
      await redis.restart();
      await until(async () => (await fetch(`${served!.httpUrl}/readyz`)).status === 200, 10_000, 'ready again once Redis is back');
    }, 40_000);

    it(`process_open_fds follows the process's descriptors, one series (${shape.name})`, async () => {
      served = await shape.start({ LOG_LEVEL: 'silent' });
      const fds = async () => {
        const text = await served!.metrics();
        expect(metricSeries(text, 'process_open_fds')).toHaveLength(1);
        return metricSum(text, 'process_open_fds');
      };
      // Settled first: the start's readiness checks leave keep-alive connections that close later, and
      // one closing after this reading would hide sockets below (seen once in a full run).
      let before = await fds();
      for (let i = 0; i < 20; i++) {
        await new Promise((r) => setTimeout(r, 250));
        const now = await fds();
        if (now === before) break;
        before = now;
      }
      expect(before).toBeGreaterThan(0);
      // Each socket is a descriptor of the gateway's process (and, in one thread, of this test's too).
      for (let i = 0; i < 40; i++) clients.push(await connect(served.wsUrl, userToken('*', `fd-user-${i}`)));
      await until(async () => (await fds()) >= before + 40, 10_000, 'the 40 sockets counted');
    }, 30_000);
  }
});
