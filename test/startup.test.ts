import { describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../src/config.js';
import { runToExit, spawnGateway } from './helpers/processes.js';
import { freePort } from './helpers/ports.js';
import { createSigner } from 'fast-jwt';
import { connect } from './helpers/gateway.js';

describe('startup', () => {
  // The refusals to start are processes of their own with no port bound (PORT is never listened on
  // before the check): they run at once, as most of each is node starting.
  it.concurrent('refuses to start on the uWebSockets.js pure-JS fallback, with a clear message', async () => {
    const port = await freePort();
    const run = await runToExit([], { UWS_USE_FALLBACK: '1', JWT_SECRET: 'some-secret-123', PORT: String(port), LOG_LEVEL: 'silent' });
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/pure-JS fallback, not the native binary/);
    expect(run.stderr).toMatch(/refuses to start/);
  });

  it.concurrent.each([
    [{ PORT: 'eighty' }, /invalid PORT/],
    [{ PORT: '70000' }, /invalid PORT/],
    [{ JWT_SECRET: '' }, /set JWT_SECRET .* or JWT_PUBLIC_KEY/],
    [{ JWT_SECRET: 'short' }, /invalid JWT_SECRET/],
    [{ JWT_PUBLIC_KEY: 'not a pem', JWT_SECRET: '' }, /JWT_PUBLIC_KEY must be a PEM/],
    [{ HEARTBEAT_INTERVAL_S: '30', IDLE_TIMEOUT_S: '10' }, /HEARTBEAT_INTERVAL_S .* must be smaller than IDLE_TIMEOUT_S/],
    [{ REDIS_URL: 'http://nope' }, /invalid REDIS_URL/],
    [{ LOG_LEVEL: 'loud' }, /invalid LOG_LEVEL/],
  ])('exits with code 78 and names the problem for %j', async (env, message) => {
    const run = await runToExit([], { JWT_SECRET: 'some-secret-123', LOG_LEVEL: 'silent', ...env });
    expect(run.code).toBe(78);
    expect(run.stderr).toMatch(/configuration error/);
    expect(run.stderr).toMatch(message);
  });

  it('parses a config once, typed, with documented defaults, and freezes it', () => {
    const config = parseConfig({ JWT_SECRET: 'some-secret-123' });
    expect(config).toMatchObject({ port: 8080, host: '0.0.0.0', heartbeatIntervalMs: 25000, idleTimeoutMs: 60000, maxPayloadBytes: 65536, logLevel: 'info' });
    expect(config.jwt.algorithms).toEqual(['HS256']);
    expect(config.redis).toBeUndefined();
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.jwt)).toBe(true);
    expect(() => parseConfig({ JWT_SECRET: 'some-secret-123', JWT_ALGORITHMS: 'RS256' })).toThrow(ConfigError);
  });

  it('npm start path: serves with no Redis configured and stops cleanly on SIGTERM', async () => {
    const port = await freePort();
    const gw = await spawnGateway({ PORT: String(port), HOST: '127.0.0.1', JWT_SECRET: 'some-secret-123', LOG_LEVEL: 'info' });
    const ready = await fetch(`${gw.url}/readyz`);
    expect(await ready.json()).toMatchObject({ ready: true, bus: 'memory' });
    expect(await gw.stop('SIGTERM')).toBe(0);
    expect(gw.output()).toMatch(/"msg":"gateway closed"/);
  });

  // How fast the restart serves is measured, not asserted (timings belong in bench/; a fully loaded
  // test run stretches them): what must hold is that the port is free for it at once.
  it('a restart in place after SIGTERM with 500 clients connected binds the same port at once and serves', async () => {
    const port = await freePort();
    const env = { PORT: String(port), HOST: '0.0.0.0', JWT_SECRET: 'some-secret-123', LOG_LEVEL: 'warn' };
    const old = await spawnGateway(env);
    const token = createSigner({ key: 'some-secret-123' })({ sub: 'u', projects: '*' });
    const clients = await Promise.all(Array.from({ length: 500 }, () => connect(`ws://127.0.0.1:${port}/ws`, token)));
    expect(await old.stop('SIGTERM')).toBe(0);
    expect((await Promise.all(clients.map((c) => c.closed))).every((c) => c.code === 1001)).toBe(true);
    const restarted = await spawnGateway(env);
    expect(restarted.output()).not.toMatch(/could not listen|already in use/);
    expect((await fetch(`${restarted.url}/healthz`)).status).toBe(200);
    await restarted.stop();
  });

  it('refuses a port another process listens on, with a clear message, unless REUSE_PORT=true asks to share it', async () => {
    const port = await freePort();
    const env = { PORT: String(port), HOST: '127.0.0.1', JWT_SECRET: 'some-secret-123', LOG_LEVEL: 'warn' };
    const first = await spawnGateway(env);
    try {
      const second = await runToExit([], env);
      expect(second.code).toBe(1);
      expect(second.stderr).toMatch(new RegExp(`port ${port} on 127.0.0.1 is already in use by another process`));
      const sharing = await spawnGateway({ ...env, REUSE_PORT: 'true' });
      expect((await fetch(`${sharing.url}/healthz`)).status).toBe(200);
      await sharing.stop();
    } finally {
      await first.stop();
    }
  });
});
