// Proves the Redis test helpers work against real redis-server processes.
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { freePort, freePorts } from './ports.js';
import {
  keysOnDistinctMasters,
  masterPortForKey,
  startRedis,
  startRedisCluster,
  type RedisCluster,
  type RedisServer,
} from './redis.js';

describe('ports helpers', () => {
  it('returns distinct usable ports', async () => {
    const one = await freePort();
    expect(one).toBeGreaterThan(0);
    const many = await freePorts(5);
    expect(new Set(many).size).toBe(5);
  });
});

describe('startRedis', () => {
  it('starts, kills, restarts on the same port (empty), and stops', async () => {
    let server: RedisServer | undefined;
    try {
      server = await startRedis();
      expect(server.url).toBe(`redis://127.0.0.1:${server.port}`);
      expect(existsSync(server.dir)).toBe(true);

      expect(await server.cli('SET', 'selftest:key', 'hello')).toBe('OK');
      expect(await server.cli('GET', 'selftest:key')).toBe('hello');

      const firstPid = server.pid;
      await server.kill();
      expect(server.pid).toBeUndefined();
      await expect(server.cli('PING')).rejects.toThrow(/Connection refused|Could not connect/);

      await server.restart();
      expect(server.pid).not.toBe(firstPid);
      expect(await server.cli('PING')).toBe('PONG');
      // no persistence: the restart wiped the data
      expect(await server.cli('GET', 'selftest:key')).toBe('');

      const dir = server.dir;
      await server.stop();
      await server.stop(); // idempotent
      expect(existsSync(dir)).toBe(false);
      await expect(server.cli('PING')).rejects.toThrow();
    } finally {
      await server?.stop();
    }
  });

  it('starts on a requested port', async () => {
    const port = await freePort();
    const server = await startRedis({ port });
    try {
      expect(server.port).toBe(port);
      expect(await server.cli('PING')).toBe('PONG');
    } finally {
      await server.stop();
    }
  });
});

describe('startRedisCluster', () => {
  it('forms a 3-master cluster and maps keys to masters', async () => {
    let cluster: RedisCluster | undefined;
    try {
      cluster = await startRedisCluster();
      expect(cluster.ports).toHaveLength(3);
      expect(cluster.nodes).toEqual(cluster.ports.map((port) => ({ host: '127.0.0.1', port })));

      for (const port of cluster.ports) {
        expect(await cluster.cli(port, 'CLUSTER', 'INFO')).toMatch(/cluster_state:ok/);
      }

      const picked = await keysOnDistinctMasters(cluster, 2, 'selftest:');
      const [a, b] = picked;
      expect(a).toBeDefined();
      expect(b).toBeDefined();
      if (!a || !b) return;
      expect(a.port).not.toBe(b.port);
      expect(await masterPortForKey(cluster, a.key)).toBe(a.port);
      expect(await masterPortForKey(cluster, b.key)).toBe(b.port);

      // the owner really serves the key (no MOVED); another master redirects
      expect(await cluster.cli(a.port, 'SET', a.key, 'x')).toBe('OK');
      expect(await cluster.cli(b.port, 'GET', a.key)).toMatch(/^MOVED \d+ 127\.0\.0\.1:\d+$/);
      expect(await cluster.cli(a.port, '-c', 'GET', a.key)).toBe('x');
    } finally {
      await cluster?.stop();
    }
  }, 20_000);
});
