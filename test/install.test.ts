import { execFileSync } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from './helpers/ports.js';
import { REPO_ROOT, spawnGateway } from './helpers/processes.js';

/**
 * The production install (`npm ci --omit=dev`, the Dockerfile's runtime stage) must start the
 * gateway: every package dist/ imports at runtime is a declared dependency.
 */

const pkg = JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };

function serverFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) => {
    const full = path.join(dir, d.name);
    if (d.isDirectory()) return d.name === 'browser' ? [] : serverFiles(full); // dist/browser is browser code
    return d.name.endsWith('.js') ? [full] : [];
  });
}

/** Bare specifiers of static imports, dynamic imports and require() calls in the built server code. */
function bareImports(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const found = [...text.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|\brequire\s*\(\s*|\)\s*\(\s*)['"]([^'"./][^'"]*)['"]/g)].map((m) => m[1]!);
  return found.map((s) => (s.startsWith('@') ? s.split('/').slice(0, 2).join('/') : s.split('/')[0]!));
}

describe('production install', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'gw-omit-dev-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('every bare import in dist/ is a declared dependency or a Node builtin', () => {
    const builtins = new Set(builtinModules);
    const undeclared = serverFiles(path.join(REPO_ROOT, 'dist'))
      .flatMap((f) => bareImports(f).map((name) => ({ file: path.relative(REPO_ROOT, f), name })))
      .filter(({ name }) => !name.startsWith('node:') && !builtins.has(name) && !(name in pkg.dependencies));
    expect(undeclared).toEqual([]);
  });

  it('npm ci --omit=dev in a clean copy loads every server module and serves /healthz', async () => {
    for (const f of ['package.json', 'package-lock.json']) cpSync(path.join(REPO_ROOT, f), path.join(dir, f));
    cpSync(path.join(REPO_ROOT, 'dist'), path.join(dir, 'dist'), { recursive: true });
    execFileSync('npm', ['ci', '--omit=dev', '--no-audit', '--no-fund', '--prefer-offline'], { cwd: dir, stdio: 'pipe', timeout: 120_000 });
    // Modules main.js only loads on demand (the Redis bus) must resolve too. Programs, which run when
    // imported (the gateway, a worker thread, the echo agent), are covered by the import scan above.
    const programs = ['main.js', `workers${path.sep}worker.js`, `agents${path.sep}echo-agent.js`];
    const modules = serverFiles(path.join(dir, 'dist')).filter((f) => !programs.some((p) => f.endsWith(`${path.sep}${p}`)));
    execFileSync(process.execPath, ['--input-type=module', '-e', `for (const f of ${JSON.stringify(modules)}) await import(f);`], { cwd: dir, stdio: 'pipe', timeout: 60_000 });
    // `npm start` there: its prestart builds only where the compiler is installed, and leaves dist/ as it is.
    execFileSync('npm', ['run', 'prestart'], { cwd: dir, stdio: 'pipe', timeout: 60_000 });
    expect(readdirSync(path.join(dir, 'dist'))).toContain('main.js');
    const port = await freePort();
    const gw = await spawnGateway({ PORT: String(port), HOST: '127.0.0.1', JWT_SECRET: 'some-secret-123', LOG_LEVEL: 'warn', AGENTS_URL: 'ws://127.0.0.1:9/none' }, { entry: path.join(dir, 'dist', 'main.js') });
    expect(await (await fetch(`${gw.url}/healthz`)).json()).toMatchObject({ status: 'ok' });
    expect(await gw.stop()).toBe(0);
  }, 180_000);
});
