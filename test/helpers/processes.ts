// Child processes for tests: the gateway (`node dist/main.js`) and a shared registry that kills
// every child we started when the test process goes away, even after a failure.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { GENEROUS_EDGE_LIMITS } from './gateway.js';
import { freePorts } from './ports.js';

/** Repository root (this file lives in <root>/test/helpers/). */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));
/** The built gateway entry point. */
export const GATEWAY_MAIN = fileURLToPath(new URL('../../dist/main.js', import.meta.url));

// ---------------------------------------------------------------------------------------------
// Cleanup registry: children are SIGKILLed and cleanup hooks run synchronously on exit/signals.
// ---------------------------------------------------------------------------------------------

const trackedChildren = new Set<ChildProcess>();
const exitCleanups = new Set<() => void>();
let hooksInstalled = false;

function isRunning(child: ChildProcess): boolean {
  return child.exitCode === null && child.signalCode === null;
}

function cleanupSync(): void {
  for (const child of trackedChildren) {
    if (isRunning(child)) {
      try {
        child.kill('SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  trackedChildren.clear();
  for (const fn of exitCleanups) {
    try {
      fn();
    } catch {
      // best effort
    }
  }
  exitCleanups.clear();
}

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.once('exit', cleanupSync);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const onSignal = (): void => {
      cleanupSync();
      // If nobody else handles this signal, restore the default behaviour (terminate).
      if (process.listenerCount(signal) === 1) {
        process.removeListener(signal, onSignal);
        process.kill(process.pid, signal);
      }
    };
    process.on(signal, onSignal);
  }
}

/** Kill `child` with SIGKILL if it is still running when this process exits or is signalled. */
export function trackChild(child: ChildProcess): void {
  installHooks();
  trackedChildren.add(child);
  child.once('exit', () => trackedChildren.delete(child));
}

/** Run `fn` synchronously at process exit (after tracked children are killed). Returns an unregister function. */
export function registerExitCleanup(fn: () => void): () => void {
  installHooks();
  exitCleanups.add(fn);
  return () => {
    exitCleanups.delete(fn);
  };
}

// ---------------------------------------------------------------------------------------------
// Output capture
// ---------------------------------------------------------------------------------------------

/** Keeps the last `max` lines written to the streams attached to it. */
export class LineRing {
  private readonly lines: string[] = [];
  private readonly partial = new Map<string, string>();
  private readonly listeners = new Set<(line: string) => void>();

  constructor(private readonly max = 200) {}

  attach(stream: NodeJS.ReadableStream | null, name: string): void {
    if (stream === null) return;
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      const text = (this.partial.get(name) ?? '') + chunk;
      const parts = text.split('\n');
      this.partial.set(name, parts.pop() ?? '');
      for (const line of parts) this.push(line.replace(/\r$/, ''));
    });
    stream.on('end', () => {
      const rest = this.partial.get(name);
      if (rest) this.push(rest);
      this.partial.delete(name);
    });
  }

  private push(line: string): void {
    this.lines.push(line);
    if (this.lines.length > this.max) this.lines.splice(0, this.lines.length - this.max);
    for (const listener of this.listeners) listener(line);
  }

  /** Subscribe to new complete lines; returns an unsubscribe function. */
  onLine(listener: (line: string) => void): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  snapshot(): string[] {
    const rest = [...this.partial.values()].filter((p) => p.length > 0);
    return [...this.lines, ...rest];
  }

  toString(): string {
    return this.snapshot().join('\n');
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------------------
// Gateway
// ---------------------------------------------------------------------------------------------

export interface SpawnGatewayOptions {
  /** HTTP path polled until it answers 200. Default `/healthz`. */
  readyPath?: string;
  /** How long to wait for readiness. Default 10 000 ms. */
  timeoutMs?: number;
  /** Script to run instead of dist/main.js (absolute, or relative to the repo root). */
  entry?: string;
}

export interface GatewayProcess {
  readonly port: number;
  /** `http://127.0.0.1:PORT` */
  readonly url: string;
  /** `ws://127.0.0.1:PORT/ws` */
  readonly wsUrl: string;
  readonly pid: number;
  /** The last ~200 lines of stdout+stderr. */
  output(): string;
  /** Resolves with the first captured output line matching `pattern` (already captured lines count). */
  waitForOutput(pattern: RegExp | string, timeoutMs?: number): Promise<string>;
  /** Sends `signal` (default SIGTERM), SIGKILL after 5 s; resolves with the exit code (null if killed by a signal). */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  /** Resolves with the exit code (null if killed by a signal) once the process has exited. */
  readonly exited: Promise<number | null>;
}

function resolveEntry(entry: string | undefined): string {
  const file = entry === undefined ? GATEWAY_MAIN : path.resolve(REPO_ROOT, entry);
  if (!existsSync(file)) {
    throw new Error(`${file} does not exist: run \`npm run build\` first`);
  }
  return file;
}

function matches(pattern: RegExp | string, line: string): boolean {
  return typeof pattern === 'string' ? line.includes(pattern) : pattern.test(line);
}

/**
 * Start `node dist/main.js` with `process.env` merged with `env` (env wins; `env.PORT` is required)
 * and wait until `GET http://127.0.0.1:PORT<readyPath>` answers 200.
 * Rejects with the captured output if the process exits first or the timeout passes (the process
 * is then killed).
 */
export async function spawnGateway(
  env: Record<string, string>,
  opts: SpawnGatewayOptions = {},
): Promise<GatewayProcess> {
  const portText = env['PORT'];
  const port = Number(portText);
  if (portText === undefined || !Number.isInteger(port) || port <= 0) {
    throw new Error(`spawnGateway: env.PORT must be set to a port number (got ${String(portText)})`);
  }
  const readyPath = opts.readyPath ?? '/healthz';
  // Generous: a WORKERS=2 start is ~1.6 s of CPU, and shutdown.test starts four at once on two cores
  // beside the other test file (10 s was passed twice in loaded full runs). A gateway that never
  // answers still fails, only later.
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const entry = resolveEntry(opts.entry);

  const child = spawn(process.execPath, [entry], {
    cwd: REPO_ROOT,
    // One thread per gateway process unless a test asks for WORKERS: the suites that start three
    // processes would otherwise run six uWS threads on two cores (test/workers.test.ts covers WORKERS).
    env: { ...process.env, ...GENEROUS_EDGE_LIMITS, WORKERS: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  trackChild(child);
  const ring = new LineRing(200);
  ring.attach(child.stdout, 'stdout');
  ring.attach(child.stderr, 'stderr');

  let spawnError: Error | undefined;
  const exited = new Promise<number | null>((resolve) => {
    child.once('close', (code) => resolve(code));
    child.once('error', (err) => {
      spawnError = err;
      if (child.pid === undefined) resolve(null);
    });
  });
  let hasExited = false;
  void exited.then(() => {
    hasExited = true;
  });

  const base = `http://127.0.0.1:${port}`;
  const describe = (why: string): Error =>
    new Error(
      `gateway (${entry}, port ${port}) ${why}` +
        (spawnError ? `\nspawn error: ${spawnError.message}` : '') +
        `\n--- output (last lines) ---\n${ring.toString()}`,
    );

  const deadline = Date.now() + timeoutMs;
  let lastProblem = 'no answer yet';
  for (;;) {
    if (hasExited) {
      throw describe(`exited before ${readyPath} answered 200 (exit code ${String(child.exitCode)}, signal ${String(child.signalCode)})`);
    }
    try {
      const res = await fetch(base + readyPath, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer().catch(() => undefined);
      if (res.status === 200) break;
      lastProblem = `HTTP ${res.status}`;
    } catch (err) {
      lastProblem = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    }
    if (Date.now() >= deadline) {
      child.kill('SIGKILL');
      await exited;
      throw describe(`did not answer 200 on ${readyPath} within ${timeoutMs} ms (last: ${lastProblem})`);
    }
    await Promise.race([sleep(50), exited]);
  }

  let stopping: Promise<number | null> | undefined;
  const pid = child.pid;
  if (pid === undefined) throw describe('has no pid');

  return {
    port,
    url: base,
    wsUrl: `ws://127.0.0.1:${port}/ws`,
    pid,
    exited,
    output: () => ring.toString(),
    waitForOutput(pattern, waitMs = 5000) {
      const already = ring.snapshot().find((line) => matches(pattern, line));
      if (already !== undefined) return Promise.resolve(already);
      return new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => {
          off();
          reject(describe(`printed no line matching ${String(pattern)} within ${waitMs} ms`));
        }, waitMs);
        const off = ring.onLine((line) => {
          if (matches(pattern, line)) {
            clearTimeout(timer);
            off();
            resolve(line);
          }
        });
      });
    },
    stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (stopping) return stopping;
      stopping = (async () => {
        if (!hasExited) {
          child.kill(signal);
          const killTimer = setTimeout(() => child.kill('SIGKILL'), 5000);
          try {
            await exited;
          } finally {
            clearTimeout(killTimer);
          }
        }
        return exited;
      })();
      return stopping;
    },
  };
}

export interface RunResult {
  /** Exit code, or null when the process was killed by a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Run `node dist/main.js ...args` (cwd = repo root, env = process.env merged with `env`) to
 * completion and collect its output. Meant for tests that expect the gateway to refuse to start.
 * If it is still running after `timeoutMs` it is SIGKILLed and the promise rejects with its output.
 */
export async function runToExit(
  args: string[],
  env: Record<string, string>,
  timeoutMs = 10_000,
  opts: { entry?: string } = {},
): Promise<RunResult> {
  const entry = resolveEntry(opts.entry);
  const child = spawn(process.execPath, [entry, ...args], {
    cwd: REPO_ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  trackChild(child);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));

  return new Promise<RunResult>((resolve, reject) => {
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.once('error', (err) => {
      if (child.pid === undefined) {
        clearTimeout(timer);
        reject(err);
      }
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (timedOut) {
        reject(
          new Error(
            `${entry} ${args.join(' ')} was still running after ${timeoutMs} ms (killed)` +
              `\n--- stdout ---\n${stdout}\n--- stderr ---\n${stderr}`,
          ),
        );
      } else {
        resolve({ code, signal, stdout, stderr });
      }
    });
  });
}

/** `count` gateway processes on free ports sharing one Redis, as a load balancer would see them. */
export async function spawnGatewaysOnRedis(redisUrl: string, count: number, jwtSecret: string, env: Record<string, string> = {}): Promise<GatewayProcess[]> {
  const ports = await freePorts(count);
  return Promise.all(
    ports.map((port, i) =>
      spawnGateway({ PORT: String(port), HOST: '127.0.0.1', JWT_SECRET: jwtSecret, REDIS_URL: redisUrl, LOG_LEVEL: 'warn', NODE_ID: `gw-${i}`, ...env }),
    ),
  );
}
