// deploy/nginx.conf's access log keeps credentials out: a real nginx with that file (upstreams, port
// and paths replaced, as in nginx.test.ts) in front of a real gateway; sockets opened with ?token=
// and with ?ticket= must be logged by path only (other requests as nginx's `combined` logs them).
// nginx missing is a failure, never a skip.
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, chmodSync, constants as fsConstants, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, startGateway, until, userToken, type StartedGateway } from './helpers/gateway.js';
import { freePort } from './helpers/ports.js';
import { trackChild } from './helpers/processes.js';

function findNginx(): string {
  for (const dir of [...(process.env['PATH'] ?? '').split(path.delimiter), '/usr/sbin', '/usr/local/sbin', '/usr/local/nginx/sbin']) {
    if (!dir) continue;
    try {
      accessSync(path.join(dir, 'nginx'), fsConstants.X_OK);
      return path.join(dir, 'nginx');
    } catch {
      // keep looking
    }
  }
  throw new Error('nginx not found (PATH, /usr/sbin): install it (apt-get install nginx-light; .ci/run does)');
}

/**
 * deploy/nginx.conf with the same replacements as nginx.test.ts, except that logging is kept and sent
 * into `dir`: the access log the file names (nginx's default path) becomes a file there. A file naming
 * no access log gets nginx's default, the `combined` format (full request line), written there too.
 */
function nginxConfig(dir: string, port: number, upstream: number): string {
  let conf = readFileSync(new URL('../deploy/nginx.conf', import.meta.url), 'utf8');
  const replace = (pattern: RegExp, replacement: string) => {
    if (!pattern.test(conf)) throw new Error(`deploy/nginx.conf no longer matches ${String(pattern)}: update this test`);
    conf = conf.replace(pattern, replacement);
  };
  const defaultLog = /^\s*access_log /m.test(conf) ? [] : [`  access_log ${dir}/default-access.log combined;`];
  replace(/^worker_processes .*;$/m, `worker_processes 1;\npid ${dir}/nginx.pid;\nerror_log ${dir}/error.log info;`);
  replace(/worker_connections \d+;/, 'worker_connections 1024;');
  replace(/^http \{$/m, ['http {', ...defaultLog, ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${dir}/${t};`)].join('\n'));
  replace(/(^\s*server gw\d:8080 .*;\n)+/m, `    server 127.0.0.1:${upstream};\n`);
  replace(/^(\s*)listen 8080;$/m, `$1listen 127.0.0.1:${port};`);
  conf = conf.replace(/\/var\/log\/nginx\/access\.log/g, `${dir}/access.log`);
  return conf;
}

/** Every access log line nginx wrote into `dir`, whatever file the configuration chose. */
function accessLines(dir: string): string[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('access.log'))
    .flatMap((f) => readFileSync(path.join(dir, f), 'utf8').split('\n').filter(Boolean));
}

describe('deploy/nginx.conf access log', () => {
  let gw: StartedGateway;
  let child: ChildProcess;
  let dir: string;
  let base: string;

  beforeAll(async () => {
    gw = await startGateway();
    dir = mkdtempSync(path.join(os.tmpdir(), 'nginx-log-test-'));
    chmodSync(dir, 0o755); // nginx's workers (unprivileged when the master is root) use the temp paths
    const port = await freePort();
    base = `127.0.0.1:${port}`;
    writeFileSync(path.join(dir, 'nginx.conf'), nginxConfig(dir, port, gw.port));
    child = spawn(findNginx(), ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-e', path.join(dir, 'error.log'), '-g', 'daemon off;'], { stdio: 'ignore' });
    trackChild(child);
    await until(async () => {
      if (child.exitCode !== null) throw new Error(`nginx exited: ${readFileSync(path.join(dir, 'error.log'), 'utf8')}`);
      return fetch(`http://${base}/healthz`, { signal: AbortSignal.timeout(1000) }).then((r) => r.status === 200, () => false);
    }, 10_000, 'nginx to answer');
  }, 30_000);

  afterAll(async () => {
    if (child && child.exitCode === null) {
      child.kill('SIGQUIT');
      await new Promise((r) => child.once('exit', r));
    }
    await gw?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('logs WebSocket upgrades by path only: neither a ?token= JWT nor a ?ticket= reaches the log', async () => {
    const token = userToken('*', 'nginx-log-user');
    const viaQuery = await connect(`ws://${base}/ws`, token); // the opt-out: the JWT in the URL
    const res = await fetch(`http://${base}/v1/tickets`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(201);
    const { ticket } = (await res.json()) as { ticket: string };
    const viaTicket = await connect(`ws://${base}/ws?ticket=${ticket}`, null);
    expect((await fetch(`http://${base}/healthz?probe=1`)).status).toBe(200); // other paths keep their query
    // nginx writes a proxied WebSocket's line when the connection ends.
    await viaQuery.close();
    await viaTicket.close();
    await until(() => accessLines(dir).filter((l) => l.includes('/ws')).length >= 2, 5000, 'both /ws lines in the access log');

    const lines = accessLines(dir);
    const ws = lines.filter((l) => l.includes('/ws'));
    expect(ws).toHaveLength(2);
    for (const line of ws) expect(line).toMatch(/"GET \/ws HTTP\/1\.1" 101 /);
    expect(lines.some((l) => l.includes('"POST /v1/tickets HTTP/1.1" 201 '))).toBe(true);
    expect(lines.some((l) => l.includes('"GET /healthz?probe=1 HTTP/1.1" 200 '))).toBe(true);
    for (const line of lines) {
      expect(line).not.toContain(token);
      expect(line).not.toContain(ticket);
      expect(line).not.toMatch(/[?&](token|ticket)=/);
    }
  });
});
