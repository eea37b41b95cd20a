// The dashboards and alerts in deploy/ (deploy/prometheus, deploy/grafana), checked by the tools that
// read them: promtool checks and unit-tests the rules and the config, and a real Prometheus scrapes a
// real gateway (WORKERS=2: the summed /metrics of a worker pool; Redis: the bus reader's series) with alerts.yml loaded, so the
// series, the rules and every dashboard query meet the metrics the gateway really exports.
// promtool or prometheus missing is a failure, never a skip: .ci/run installs Debian's prometheus.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { accessSync, constants as fsConstants, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, postEvent, randomGuid, SECRET, until, upgradeStatus, userToken, type TestClient } from './helpers/gateway.js';
import { freePorts } from './helpers/ports.js';
import { spawnGateway, trackChild, type GatewayProcess } from './helpers/processes.js';
import { startRedis, type RedisServer } from './helpers/redis.js';
import { eventsKey } from '../src/redis/keys.js';

const DEPLOY = fileURLToPath(new URL('../deploy/', import.meta.url));
const ALERTS = path.join(DEPLOY, 'prometheus/alerts.yml');
const ALERTS_TEST = path.join(DEPLOY, 'prometheus/alerts.test.yml');
const PROMETHEUS_CONFIG = path.join(DEPLOY, 'prometheus/prometheus.yml');
const DASHBOARD = path.join(DEPLOY, 'grafana/gateway-dashboard.json');
/** Series Prometheus makes itself for every target; the only names a rule or panel may use that the gateway does not export. */
const PROMETHEUS_OWN = new Set(['up']);

function findBinary(name: string): string {
  for (const dir of [...(process.env['PATH'] ?? '').split(path.delimiter), '/usr/bin', '/usr/local/bin']) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      accessSync(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // keep looking
    }
  }
  throw new Error(`${name} not found (PATH, /usr/bin): install Debian's prometheus package (apt-get install prometheus; .ci/run does); this test never skips`);
}

function run(binary: string, args: string[]): { code: number | null; output: string } {
  const result = spawnSync(binary, args, { encoding: 'utf8', timeout: 20_000 });
  if (result.error) throw result.error;
  return { code: result.status, output: `${result.stdout}${result.stderr}` };
}

interface Rule {
  alert: string;
  expr: string;
  labels: { severity: string };
}
const alertRules = (): Rule[] => (parseYaml(readFileSync(ALERTS, 'utf8')) as { groups: { rules: Rule[] }[] }).groups.flatMap((g) => g.rules);

interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { type: string; uid: string };
  gridPos: { h: number; w: number; x: number; y: number };
  targets?: { expr: string; refId: string; datasource?: { uid: string } }[];
}
interface Dashboard {
  uid: string;
  title: string;
  schemaVersion: number;
  panels: Panel[];
  templating: { list: { name: string; type: string; query: unknown }[] };
}
const dashboard = (): Dashboard => JSON.parse(readFileSync(DASHBOARD, 'utf8')) as Dashboard;
const dashboardQueries = (d: Dashboard) => d.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })));

const PROMQL_WORDS = new Set(['and', 'or', 'unless', 'bool', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'offset', 'inf', 'nan']);
/**
 * The metric names a PromQL expression selects: what is left once strings, label matchers, ranges,
 * offsets and grouping label lists are taken out, minus function names (followed by "(") and
 * keywords. Enough for the expressions in deploy/; a name this misses is one the check does not see.
 */
function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\boffset\s+-?[0-9a-z]+/g, ' ')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names = new Set<string>();
  for (const m of bare.matchAll(/(?<![\w.$])[a-zA-Z_:][\w:]*/g)) {
    const after = bare.slice(m.index + m[0].length);
    if (/^\s*\(/.test(after) || PROMQL_WORDS.has(m[0].toLowerCase())) continue;
    names.add(m[0]);
  }
  return [...names];
}

/** Every series name a /metrics answer can have: sample names, and each family's histogram/summary series. */
function exportedNames(text: string): Set<string> {
  const names = new Set<string>();
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)/.exec(line);
    if (type) {
      const [, name, kind] = type as unknown as [string, string, string];
      names.add(name);
      if (kind === 'histogram') for (const s of ['_bucket', '_sum', '_count']) names.add(name + s);
      if (kind === 'summary') for (const s of ['_sum', '_count']) names.add(name + s);
    } else if (line && !line.startsWith('#')) {
      names.add(line.split(/[{ ]/)[0]!);
    }
  }
  return names;
}

describe('metricNames (the check below reads expressions with it)', () => {
  it('finds the selected metrics and nothing else', () => {
    expect(metricNames('sum by (node, le) (rate(foo_bucket{a="b", c=~"x|y"}[5m])) > on (job, node) group_left () 3 * (bar or baz offset 10m) and bool qux{n="rate(x)"}').sort()).toEqual(['bar', 'baz', 'foo_bucket', 'qux']);
    expect(metricNames('histogram_quantile(0.99, sum by (le) (rate(x_seconds_bucket[$__rate_interval])))')).toEqual(['x_seconds_bucket']);
  });
});

describe('deploy/prometheus with promtool', () => {
  let promtool: string;
  beforeAll(() => {
    promtool = findBinary('promtool');
  });

  it('promtool check rules: alerts.yml is valid', () => {
    const { code, output } = run(promtool, ['check', 'rules', ALERTS]);
    expect(code, output).toBe(0);
    expect(output).toContain(`SUCCESS: ${alertRules().length} rules found`);
  });

  it('promtool test rules: each alert fires on its series and stays quiet on the others', () => {
    const { code, output } = run(promtool, ['test', 'rules', ALERTS_TEST]);
    expect(code, output).toBe(0);
    expect(output).toContain('SUCCESS');

    // Every rule of alerts.yml has a case where it fires (each severity) and one where it must not:
    // a new alert without tests fails here.
    interface Case {
      alertname: string;
      exp_alerts: { exp_labels: { severity: string } }[];
    }
    const cases = (parseYaml(readFileSync(ALERTS_TEST, 'utf8')) as { tests: { alert_rule_test: Case[] }[] }).tests.flatMap((t) => t.alert_rule_test);
    const untested = alertRules().flatMap((rule) => {
      const mine = cases.filter((c) => c.alertname === rule.alert);
      const fires = mine.some((c) => c.exp_alerts.some((a) => a.exp_labels.severity === rule.labels.severity));
      const quiet = mine.some((c) => c.exp_alerts.length === 0);
      return fires && quiet ? [] : [`${rule.alert} (${rule.labels.severity}): ${fires ? '' : 'no firing case '}${quiet ? '' : 'no quiet case'}`];
    });
    expect(untested).toEqual([]);
  });

  it('promtool check config: prometheus.yml scrapes gw1..gw3:9464 as the job the rules select, and loads alerts.yml', () => {
    const { code, output } = run(promtool, ['check', 'config', PROMETHEUS_CONFIG]);
    expect(code, output).toBe(0);
    expect(output).toContain(`SUCCESS: ${alertRules().length} rules found`);
    const config = parseYaml(readFileSync(PROMETHEUS_CONFIG, 'utf8')) as { scrape_configs: { job_name: string; static_configs: { targets: string[] }[] }[] };
    const [scrape] = config.scrape_configs;
    expect(scrape?.static_configs.flatMap((s) => s.targets)).toEqual(['gw1:9464', 'gw2:9464', 'gw3:9464']);
    // Every selector in the rules names this job (other services export nodejs_*, up, bus_ready...).
    for (const rule of alertRules()) {
      const selectors = [...rule.expr.matchAll(/\b[a-zA-Z_:][\w:]*\{([^}]*)\}/g)];
      expect(selectors.length, rule.alert).toBeGreaterThan(0);
      for (const [selector, matchers] of selectors) expect(matchers, `${rule.alert}: ${selector}`).toContain(`job="${scrape?.job_name}"`);
    }
  });
});

/** A Prometheus answer's data, failing on an error status. */
async function api<T>(base: string, pathAndQuery: string): Promise<T> {
  const res = await fetch(base + pathAndQuery, { signal: AbortSignal.timeout(5000) });
  const body = (await res.json()) as { status: string; data: T; error?: string };
  if (body.status !== 'success') throw new Error(`${pathAndQuery}: ${body.status} ${body.error ?? ''}`);
  return body.data;
}
interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}
const query = (base: string, q: string) => api<{ resultType: string; result: Sample[] }>(base, `/api/v1/query?query=${encodeURIComponent(q)}`).then((d) => d.result);

interface Prometheus {
  readonly url: string;
  output(): string;
  stop(): Promise<void>;
}

/** deploy/prometheus/prometheus.yml itself, with one target (the test's gateway), 1 s intervals and an absolute rule path. */
async function startPrometheus(metricsTarget: string, port: number): Promise<Prometheus> {
  const binary = findBinary('prometheus');
  const dir = mkdtempSync(path.join(os.tmpdir(), 'prometheus-test-'));
  const config = parseYaml(readFileSync(PROMETHEUS_CONFIG, 'utf8')) as {
    global: Record<string, string>;
    rule_files: string[];
    scrape_configs: { static_configs: { targets: string[] }[] }[];
  };
  config.global = { ...config.global, scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' };
  config.rule_files = config.rule_files.map((f) => path.resolve(path.dirname(PROMETHEUS_CONFIG), f));
  config.scrape_configs[0]!.static_configs = [{ targets: [metricsTarget] }];
  writeFileSync(path.join(dir, 'prometheus.yml'), stringifyYaml(config));
  // Its own port and data directory: a packaged Prometheus on :9090 (Debian starts one on install
  // where it can) neither breaks nor is touched by this test.
  const child: ChildProcess = spawn(
    binary,
    [`--config.file=${path.join(dir, 'prometheus.yml')}`, `--storage.tsdb.path=${path.join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`, '--log.level=warn'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  trackChild(child);
  let output = '';
  child.stdout?.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (output += c.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await until(async () => {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`prometheus exited (code ${child.exitCode}, signal ${child.signalCode}):\n${output}`);
      try {
        return (await fetch(`${url}/-/ready`, { signal: AbortSignal.timeout(1000) })).status === 200;
      } catch {
        return false;
      }
    }, 10_000, `prometheus ready on ${url}`);
  } catch (err) {
    await stop();
    throw err;
  }
  return { url, output: () => output, stop };
}

describe('a real Prometheus scraping a real gateway (WORKERS=2, Redis) with deploy/prometheus/alerts.yml', () => {
  const NODE = 'gw-prom-test';
  let redis: RedisServer;
  let gateway: GatewayProcess;
  let prometheus: Prometheus;
  let metricsPort: number;
  /** When the gateway's series were seen in Prometheus: rule evaluations after it had them to read. */
  let seriesSeenAt = 0;
  let client: TestClient | undefined;

  beforeAll(async () => {
    findBinary('prometheus');
    const [port, metrics, promPort] = (await freePorts(3)) as [number, number, number];
    metricsPort = metrics;
    redis = await startRedis();
    gateway = await spawnGateway({ PORT: String(port), METRICS_PORT: String(metricsPort), HOST: '127.0.0.1', JWT_SECRET: SECRET, LOG_LEVEL: 'error', WORKERS: '2', NODE_ID: NODE, REDIS_URL: redis.url });
    prometheus = await startPrometheus(`127.0.0.1:${metricsPort}`, promPort);
  });
  afterAll(async () => {
    await client?.close();
    await prometheus?.stop();
    await gateway?.stop();
    await redis?.stop();
  });

  it('scrapes the gateway: the target is up and its series arrive (a connection, a refused upgrade, a delivered event, the Redis reader)', async () => {
    const job = 'autocode-ws-gateway';
    const value = async (q: string) => Number((await query(prometheus.url, q))[0]?.value[1] ?? NaN);
    // Counters with a fixed label set are there at 0 before anything happened, so the first event
    // is a rise that rate() and increase() (GatewayBusEntriesSkipped below) can see.
    await until(async () => (await value(`bus_errors_total{job="${job}", node="${NODE}", kind="entry_skipped"}`)) === 0, 10_000, 'bus_errors_total{kind="entry_skipped"} = 0 in Prometheus');
    expect(await value(`ws_upgrades_rejected_total{job="${job}", node="${NODE}", reason="UNAUTHORIZED", status="401"}`)).toBe(0);

    const guid = randomGuid();
    client = await connect(gateway.wsUrl, userToken());
    await client.join(guid);
    expect(await upgradeStatus(gateway.wsUrl, null)).toBe(401);
    expect((await postEvent(gateway.url, guid, { type: 'project_message', data: { n: 1 } })).status).toBe(202);
    await client.waitForEvents(guid, 1);
    // An entry someone appended that is not an event: read, counted and skipped.
    await redis.cli('XADD', eventsKey('autocode', guid), '*', 'type', 'project_message', 'data', 'not json');

    await until(async () => (await value(`ws_connections{job="${job}", node="${NODE}"}`)) === 1, 10_000, 'ws_connections = 1 in Prometheus');
    // Two samples of it, so the dashboard's rate() of it has a series.
    await until(async () => (await value(`ws_upgrades_rejected_total{job="${job}", node="${NODE}", reason="UNAUTHORIZED", status="401"}`)) === 1, 5000, 'a 401 UNAUTHORIZED in Prometheus');
    await until(async () => (await value(`event_delivery_lag_seconds_count{job="${job}", node="${NODE}"}`)) >= 1, 5000, 'a delivery lag sample in Prometheus');
    await until(async () => (await value(`bus_read_lag_seconds_count{job="${job}", node="${NODE}"}`)) >= 1, 5000, 'a Redis reader lag sample in Prometheus');
    await until(async () => (await value(`bus_errors_total{job="${job}", node="${NODE}", kind="entry_skipped"}`)) === 1, 5000, 'the skipped entry in Prometheus');
    expect(await value(`sum(bus_errors_total{job="${job}", node="${NODE}", kind!="entry_skipped"})`)).toBe(0);
    expect(await value(`ws_connections_opened_total{job="${job}", node="${NODE}"}`)).toBeGreaterThanOrEqual(1);
    expect(await value(`gateway_workers{job="${job}", node="${NODE}"}`)).toBe(2);
    expect(await value(`nodejs_eventloop_lag_p99_seconds{job="${job}", node="${NODE}"}`)).toBeGreaterThan(0);

    const targets = await api<{ activeTargets: { health: string; labels: Record<string, string> }[] }>(prometheus.url, '/api/v1/targets');
    expect(targets.activeTargets.map((t) => [t.labels['job'], t.labels['instance'], t.health])).toEqual([[job, `127.0.0.1:${metricsPort}`, 'up']]);
    seriesSeenAt = Date.now();
  });

  it('uses only metrics the gateway exports, in every rule and every dashboard query', async () => {
    const exported = exportedNames(await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text());
    expect(exported.has('ws_connections')).toBe(true);
    const uses = [...alertRules().map((r) => ({ where: `alert ${r.alert}`, expr: r.expr })), ...dashboardQueries(dashboard()).map((q) => ({ where: `panel "${q.panel}"`, expr: q.expr }))];
    const unknown = uses.flatMap(({ where, expr }) => metricNames(expr).filter((n) => !exported.has(n) && !PROMETHEUS_OWN.has(n)).map((n) => `${where}: ${n}`));
    expect(unknown).toEqual([]);
    // Every query names at least one metric (an expression the extractor reads as empty checks nothing).
    expect(uses.filter(({ expr }) => metricNames(expr).length === 0)).toEqual([]);
  });

  it('loads every rule of alerts.yml and evaluates each against the real series without error', async () => {
    interface RuleState {
      name: string;
      health: string;
      lastError?: string;
      lastEvaluation: string;
      labels: Record<string, string>;
      alerts: { labels: Record<string, string>; state: string }[];
    }
    const rules = async () => (await api<{ groups: { name: string; rules: RuleState[] }[] }>(prometheus.url, '/api/v1/rules?type=alert')).groups.flatMap((g) => g.rules);
    // An evaluation of every rule after the gateway's series arrived (1 s interval).
    let loaded: RuleState[] = [];
    await until(async () => (loaded = await rules()).length > 0 && loaded.every((r) => Date.parse(r.lastEvaluation) > seriesSeenAt), 5000, 'every rule evaluated after the series arrived');
    expect(loaded.map((r) => `${r.name}/${r.labels['severity']}`).sort()).toEqual(alertRules().map((r) => `${r.alert}/${r.labels.severity}`).sort());
    expect(loaded.filter((r) => r.health !== 'ok' || r.lastError || r.lastEvaluation.startsWith('0001')).map((r) => `${r.name}: ${r.health} ${r.lastError ?? ''}`)).toEqual([]);

    // The rules read the gateway's real series and labels: this gateway has no AGENTS_URL, so its
    // agents_link_up is 0 against gateway_workers 2 (why alerts.yml says to leave the agents group
    // out without one); the malformed entry fires GatewayBusEntriesSkipped (no `for:`), from the
    // series' 0 to its 1; nothing else is active. The event-loop alert is left out of that: on
    // this shared 2-core machine a busy neighbour can delay the loop itself.
    const active = loaded.flatMap((r) => r.alerts.map((a) => ({ name: r.name, state: a.state, labels: a.labels })));
    expect(active.filter((a) => a.name !== 'GatewayEventLoopDelayHigh').map((a) => `${a.name} ${a.state}`).sort()).toEqual(['AgentsLinkDown pending', 'AgentsLinkDownEverywhere pending', 'GatewayBusEntriesSkipped firing']);
    expect(active.find((a) => a.name === 'AgentsLinkDown')?.labels).toEqual({ alertname: 'AgentsLinkDown', severity: 'warning', job: 'autocode-ws-gateway', instance: `127.0.0.1:${metricsPort}`, node: NODE });
  });

  it('dashboard: importable JSON, and every query runs in Prometheus; the main panels show this gateway', async () => {
    const d = dashboard();
    expect(d.uid).toMatch(/^[\w-]{1,40}$/);
    expect(d.title).toBeTruthy();
    expect(d.schemaVersion).toBeGreaterThanOrEqual(36);
    const vars = new Map(d.templating.list.map((v) => [v.name, v]));
    expect(vars.get('datasource')).toMatchObject({ type: 'datasource', query: 'prometheus' });
    expect(vars.get('node')).toMatchObject({ type: 'query' });
    // One job at a time: "All" would make the overview's sum(up{job=~"$job"}) count every target Prometheus has.
    expect(vars.get('job')).toMatchObject({ type: 'query', includeAll: false, multi: false });
    expect(String(vars.get('node')?.query)).toMatch(/^label_values\(.+, node\)$/);
    expect(new Set(d.panels.map((p) => p.id)).size).toBe(d.panels.length);
    // Titles are how people (and this test) tell panels apart.
    expect(new Set(d.panels.map((p) => p.title)).size).toBe(d.panels.length);
    for (const p of d.panels) {
      expect(p.gridPos, p.title).toBeDefined();
      if (p.type === 'row' || p.type === 'text') continue;
      expect(p.datasource?.uid, p.title).toBe('${datasource}');
      expect(p.targets?.length, p.title).toBeGreaterThan(0);
      // Queries with the $node filter (or a whole-job aggregate of Prometheus's own `up`).
      for (const t of p.targets ?? []) expect(t.expr, p.title).toMatch(/node=~"\$node"|^sum\(up\{job=~"\$job"\}\)$/);
    }

    // As Grafana would send them with every node selected.
    const expand = (expr: string) => expr.replaceAll('$__rate_interval', '1m').replaceAll('$node', '.*').replaceAll('$job', 'autocode-ws-gateway');
    const results = new Map<string, Sample[]>();
    const failures: string[] = [];
    for (const { panel, expr } of dashboardQueries(d)) {
      try {
        results.set(expr, await query(prometheus.url, expand(expr)));
      } catch (err) {
        failures.push(`${panel}: ${(err as Error).message}`);
      }
    }
    expect(failures).toEqual([]);
    const variable = expand(String(vars.get('node')?.query)).match(/^label_values\((.+), node\)$/)?.[1] ?? '';
    expect(await api<string[]>(prometheus.url, `/api/v1/label/node/values?match[]=${encodeURIComponent(variable)}`)).toEqual([NODE]);

    const shown = (title: string, legendIndex = 0) => {
      const panel = d.panels.find((p) => p.title === title);
      const expr = panel?.targets?.[legendIndex]?.expr;
      if (!expr) throw new Error(`no panel "${title}" with a query #${legendIndex}`);
      return (results.get(expr) ?? []).map((s) => ({ ...s.metric, value: Number(s.value[1]) }));
    };
    expect(shown('Open WebSockets')).toEqual([{ node: NODE, value: 1 }]);
    // Every reason is there (at 0 but the one refused), each with its own status.
    const refused = shown('Upgrades refused by reason') as { reason?: string; status?: string; value: number }[];
    expect(refused.map((s) => `${s.reason}/${s.status}`).sort()).toEqual(['FORBIDDEN/403', 'RATE_LIMITED/429', 'TOO_MANY_CONNECTIONS/429', 'UNAUTHORIZED/401', 'UNAVAILABLE/503', 'UNSUPPORTED_PROTOCOL/400', 'USER_BLOCKED/403']);
    expect(refused.filter((s) => s.value > 0).map((s) => s.reason)).toEqual(['UNAUTHORIZED']);
    expect(shown('Redis bus errors').filter((s) => s.value > 0)).toEqual([expect.objectContaining({ node: NODE, kind: 'entry_skipped' })]);
    expect(shown('Redis reader lag')).toEqual([expect.objectContaining({ node: NODE })]);
    expect(shown('Event bus ready')).toEqual([{ node: NODE, value: 1 }]);
    expect(shown('Agents-server links', 1)).toEqual([{ node: NODE, value: 2 }]);
    expect(shown('Event-loop delay')).toEqual([expect.objectContaining({ node: NODE })]);
  });
});
