import { createSigner } from 'fast-jwt';
import type { Logger } from 'pino';
import type { TemplatedApp } from 'uWebSockets.js';
import type { Config } from '../config.js';
import { pending, sendJson } from './respond.js';

/**
 * DEV MODE: on only when the gateway verifies HS* tokens with a secret that starts with `dev-`
 * (like the README's `JWT_SECRET=dev-secret-change-me`). Then POST /dev/token mints a token for
 * anyone who can reach the gateway, which is what a local try-out wants and a deployment must never
 * have: a production secret is random and never starts with `dev-`.
 */
export function isDevMode(config: Config): boolean {
  return config.jwt.key.startsWith('dev-') && config.jwt.algorithms.every((a) => a.startsWith('HS'));
}

export const DEV_TOKEN_SUBJECT = 'dev-user';
const DEV_TOKEN_TTL_S = { min: 10, max: 86_400, default: 3_600 };

/** POST /dev/token: a token for anyone who can reach the gateway (DEV MODE only; the caller checks). */
export function registerDevTokenRoute(app: TemplatedApp, config: Config, log: Logger): void {
  log.warn('DEV MODE: JWT_SECRET starts with "dev-", so POST /dev/token mints tokens for anyone; never use such a secret in a deployment');
  const { jwt } = config;
  app.post('/dev/token', (res, req) => {
    const asked = Number(new URLSearchParams(req.getQuery() ?? '').get('ttl') ?? DEV_TOKEN_TTL_S.default);
    const ttlS = Math.min(DEV_TOKEN_TTL_S.max, Math.max(DEV_TOKEN_TTL_S.min, Number.isFinite(asked) ? Math.floor(asked) : DEV_TOKEN_TTL_S.default));
    const sign = createSigner({
      key: jwt.key,
      algorithm: jwt.algorithms[0] as 'HS256',
      expiresIn: ttlS * 1000,
      ...(jwt.issuer ? { iss: jwt.issuer } : {}),
      ...(jwt.audience ? { aud: jwt.audience } : {}),
    });
    const token = sign({ sub: DEV_TOKEN_SUBJECT, projects: '*', scope: 'events:publish' });
    sendJson(pending(res), 200, { token, sub: DEV_TOKEN_SUBJECT, expiresInS: ttlS, devMode: true }, { 'cache-control': 'no-store' });
  });
}
