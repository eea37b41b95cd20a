// The front end's files, served by the gateway itself: the live project page (public/), the
// browser client library and the protocol modules it imports (dist/browser/, built by
// `npm run build`), and msgpackr's browser-safe ES modules for the page's MessagePack option.
//
// Path safety by construction: the allowed folders are listed once at startup and every file gets
// its own exact route, so a request can only ever name one of those files (`..`, encoded dots,
// symlinks out of the folder: no route, the catch-all 404).
//
// Caching: the file names are not content-hashed, so a long max-age would keep a stale client
// after a deploy. Every response carries a strong ETag (hash of the content) and
// `Cache-Control: no-cache`: browsers keep the file and revalidate it, which costs a 304 with no body.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, extname, join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import type { HttpResponse, TemplatedApp } from 'uWebSockets.js';
import type { Config } from '../config.js';
import { isDevMode, registerDevTokenRoute } from './dev-token.js';
import { pending, sendJson } from './respond.js';

/** Repository (or installed package) root: this file is src/http/static.ts or dist/http/static.js. */
const PACKAGE_ROOT = fileURLToPath(new URL('../../', import.meta.url));

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
};

// The page talks to this gateway only; no inline scripts or styles, no framing.
const PAGE_CSP = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

interface StaticFile {
  body: Buffer;
  etag: string;
  headers: Record<string, string>;
}

export interface StaticDeps {
  readonly config: Config;
  readonly log: Logger;
  /** Where public/ and dist/browser/ live; defaults to the package root. */
  readonly root?: string;
}

/** Registers the page, the client modules and (in DEV MODE) the dev-token endpoint. Call before the catch-all 404. */
export function registerStaticRoutes(app: TemplatedApp, deps: StaticDeps): void {
  const root = deps.root ?? PACKAGE_ROOT;
  const files = new Map<string, StaticFile>();
  const add = (url: string, path: string, extraHeaders: Record<string, string> = {}) => {
    const type = CONTENT_TYPES[extname(path)];
    if (!type || files.has(url)) return;
    const body = readFileSync(path);
    const etag = `"${createHash('sha256').update(body).digest('base64url').slice(0, 22)}"`;
    files.set(url, { body, etag, headers: { 'content-type': type, 'cache-control': 'no-cache', 'x-content-type-options': 'nosniff', ...extraHeaders } });
  };

  const publicDir = join(root, 'public');
  for (const path of listFiles(publicDir)) {
    const url = '/' + relative(publicDir, path).split(sep).join('/');
    add(url, path, url.endsWith('.html') ? { 'content-security-policy': PAGE_CSP } : {});
  }
  const indexHtml = files.get('/index.html');
  if (indexHtml) files.set('/', indexHtml);

  // Only .js and source maps: the .d.ts files are for compilers, not browsers.
  const browserDir = join(root, 'dist', 'browser');
  const browserFiles = listFiles(browserDir).filter((p) => p.endsWith('.js') || p.endsWith('.js.map'));
  for (const path of browserFiles) add('/' + relative(browserDir, path).split(sep).join('/'), path);
  if (browserFiles.length === 0) deps.log.warn({ dir: browserDir }, 'browser client not built (npm run build): /client/index.js will answer 404');

  const msgpackr = packageDir('msgpackr');
  if (msgpackr) for (const name of ['pack.js', 'unpack.js']) add(`/vendor/msgpackr/${name}`, join(msgpackr, name));

  for (const [url, file] of files) app.get(url, (res, req) => serveFile(res, file, req.getHeader('if-none-match')));

  const devMode = isDevMode(deps.config);
  app.get('/app-config.json', (res) => sendJson(pending(res), 200, { devMode, wsPath: '/ws' }, { 'cache-control': 'no-store' }));
  if (devMode) registerDevTokenRoute(app, deps.config, deps.log);
}

function serveFile(res: HttpResponse, file: StaticFile, ifNoneMatch: string): void {
  res.cork(() => {
    const notModified = ifNoneMatch !== '' && ifNoneMatch.split(',').some((tag) => tag.trim().replace(/^W\//, '') === file.etag);
    res.writeStatus(notModified ? '304 Not Modified' : '200 OK');
    res.writeHeader('etag', file.etag);
    for (const [k, v] of Object.entries(file.headers)) res.writeHeader(k, v);
    if (notModified) res.endWithoutBody();
    else res.end(file.body);
  });
}

/** Regular files under `dir`, recursively; symlinks are not followed out of it. */
function listFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...listFiles(path));
    else if (entry.isFile()) out.push(path);
  }
  return out;
}

/** Directory of an installed package (wherever npm hoisted it), or null. */
function packageDir(name: string): string | null {
  try {
    let dir = dirname(createRequire(import.meta.url).resolve(name));
    while (!existsSync(join(dir, 'package.json'))) {
      const up = dirname(dir);
      if (up === dir) return null;
      dir = up;
    }
    return statSync(dir).isDirectory() ? dir : null;
  } catch {
    return null;
  }
}
