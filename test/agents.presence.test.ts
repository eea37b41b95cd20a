// Presence follows every way a socket leaves a project: leave_project, a refreshed token that no
// longer grants it, close. The agents-server must never keep listing a user in a project they left.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, randomGuid, sign, startGateway, until, userToken } from './helpers/gateway.js';
import { presenceOn, startAgentsStandIn } from './helpers/agents-server.js';
import { startRedis, type RedisServer } from './helpers/redis.js';

let redis: RedisServer;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
});

describe.each([
  { store: 'without Redis', env: (): Record<string, string> => ({}) },
  { store: 'with Redis', env: (): Record<string, string> => ({ REDIS_URL: redis.url }) },
])('presence $store', ({ env }) => {
  it('drops a user from a project when an auth_refresh takes the project away, and keeps their other project', async () => {
    const standIn = await startAgentsStandIn();
    const g = await startGateway({ AGENTS_URL: standIn.url, ...env() });
    try {
      await until(() => standIn.openLinks().length === 1, 5000, 'link');
      const link = standIn.openLinks()[0]!;
      const [kept, revoked] = [randomGuid(), randomGuid()];
      const user = `refresher-${randomGuid()}`;
      const c = await connect(g.wsUrl, userToken([kept, revoked], user));
      await c.join(kept);
      await c.join(revoked);
      await until(() => (presenceOn(link).get(revoked) ?? []).includes(user) && (presenceOn(link).get(kept) ?? []).includes(user), 5000, 'online in both');
      const refreshed = await c.request({ type: 'auth_refresh', id: 'r', data: { token: sign({ sub: user, projects: [kept] }) } });
      expect(refreshed.type).toBe('auth_refresh');
      await until(() => !(presenceOn(link).get(revoked) ?? []).includes(user), 5000, 'gone from the revoked project');
      expect(presenceOn(link).get(kept)).toContain(user);
      await c.close();
    } finally {
      await g.close();
      await standIn.stop();
    }
  });
});
