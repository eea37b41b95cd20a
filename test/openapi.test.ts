import http from 'node:http';
import { Validator } from '@seriousme/openapi-schema-validator';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, producerToken, randomGuid, startGateway, userToken, type StartedGateway } from './helpers/gateway.js';
import { adminToken } from './helpers/admin.js';
import { freePort } from './helpers/ports.js';

/**
 * GET /openapi.json is a valid OpenAPI 3.1 document (checked with @seriousme/openapi-schema-validator
 * against the official 3.1 schema), and every endpoint's real answers, success and error, are
 * documented: the status is listed for the operation and the body matches its schema (ajv's JSON
 * Schema 2020-12, the dialect of OpenAPI 3.1). Every operation must have been seen answering both.
 */

type Doc = { paths: Record<string, Record<string, { responses: Record<string, { content?: Record<string, { schema: object }>; headers?: Record<string, unknown> }> }>> };

const ORIGIN = 'https://app.example';
let g: StartedGateway;
/** A gateway whose Redis is not there: not ready, and its Redis-backed answers are 503s. */
let down: StartedGateway;
let doc: Doc;
const ajv = new Ajv2020({ strict: false, allErrors: true });
ajv.addFormat('date-time', /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/i);
/** `METHOD path` → the statuses seen. */
const seen = new Map<string, Set<number>>();

const pointer = (...parts: string[]) => parts.map((p) => encodeURIComponent(p.replace(/~/g, '~0').replace(/\//g, '~1'))).join('/');

/** Checks one real answer against the document: its status is listed for the operation, its body matches. */
function check(method: string, path: string, res: { status: number; contentType: string; text: string }): void {
  const operation = doc.paths[path]?.[method];
  expect(operation, `${method} ${path} is documented`).toBeDefined();
  const response = operation!.responses[String(res.status)];
  expect(response, `${method} ${path} answered ${res.status}, which is not documented: ${res.text.slice(0, 200)}`).toBeDefined();
  const key = `${method.toUpperCase()} ${path}`;
  if (!seen.has(key)) seen.set(key, new Set());
  seen.get(key)!.add(res.status);
  if (!response!.content) return void expect(res.text).toBe('');
  const mediaType = Object.keys(response!.content).find((t) => res.contentType.startsWith(t));
  expect(mediaType, `${key} ${res.status} answered ${res.contentType}`).toBeDefined();
  const body = mediaType === 'application/json' ? JSON.parse(res.text) : res.text;
  const validate = ajv.getSchema(`openapi#/${pointer('paths', path, method, 'responses', String(res.status), 'content', mediaType!, 'schema')}`);
  expect(validate, `schema of ${key} ${res.status}`).toBeDefined();
  expect(validate!(body), `${key} ${res.status}: ${JSON.stringify(validate!.errors)} in ${res.text.slice(0, 300)}`).toBe(true);
}

/** One request and its check; resolves with the parsed JSON body (or null). */
async function call(server: StartedGateway, method: string, path: string, url: string, init: { body?: string; headers?: Record<string, string> } = {}) {
  const res = await fetch(`${server.httpUrl}${url}`, { method: method.toUpperCase(), headers: init.headers ?? {}, ...(init.body === undefined ? {} : { body: init.body }) });
  const text = await res.text();
  check(method, path, { status: res.status, contentType: res.headers.get('content-type') ?? '', text });
  try {
    return { status: res.status, body: JSON.parse(text) as Record<string, any> };
  } catch {
    return { status: res.status, body: null };
  }
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const jsonBody = (token: string | null, body: unknown) => ({ headers: { 'content-type': 'application/json', ...(token ? bearer(token) : {}) }, body: JSON.stringify(body) });

/** A refused upgrade's answer, for /ws (node:http: fetch may not send Upgrade). */
async function upgrade(server: StartedGateway, query: string, headers: Record<string, string> = {}) {
  const answer = await new Promise<{ status: number; contentType: string; text: string }>((resolve, reject) => {
    const req = http.request(`${server.httpUrl}/ws${query}`, {
      agent: false,
      headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', ...headers },
    });
    req.on('upgrade', (res, socket) => (socket.destroy(), resolve({ status: res.statusCode ?? 0, contentType: '', text: '' })));
    req.on('response', (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, contentType: String(res.headers['content-type'] ?? ''), text }));
    });
    req.on('error', reject);
    req.end();
  });
  check('get', '/ws', answer);
}

beforeAll(async () => {
  g = await startGateway({ ALLOWED_ORIGINS: ORIGIN, TICKETS_PER_USER: '2' });
  down = await startGateway({ REDIS_URL: `redis://127.0.0.1:${await freePort()}` });
  const res = await fetch(`${g.httpUrl}/openapi.json`);
  doc = (await res.json()) as Doc;
  ajv.addSchema(doc, 'openapi');
  check('get', '/openapi.json', { status: res.status, contentType: res.headers.get('content-type') ?? '', text: JSON.stringify(doc) });
}, 60_000);
afterAll(async () => {
  await Promise.all([g?.close(), down?.close()]);
});

describe('the OpenAPI document', () => {
  it('is a valid OpenAPI 3.1 document', async () => {
    const result = await new Validator().validate(doc as unknown as Parameters<Validator["validate"]>[0]);
    expect(result.errors ?? [], JSON.stringify(result.errors)).toEqual([]);
    expect(result.valid).toBe(true);
    expect((doc as unknown as { openapi: string }).openapi).toBe('3.1.0');
  });

  it('documents the answers of health, readiness and metrics', async () => {
    await call(g, 'get', '/healthz', '/healthz');
    await call(g, 'get', '/readyz', '/readyz');
    expect((await call(down, 'get', '/readyz', '/readyz')).status).toBe(503);
    await call(g, 'get', '/metrics', '/metrics');
  });

  it('documents the producer API: one event, a batch, a replay, and every refusal', async () => {
    const path = '/v1/projects/{projectGuid}/events';
    const guid = randomGuid();
    const url = `/v1/projects/${guid}/events`;
    expect((await call(g, 'post', path, url, jsonBody(producerToken(), { type: 'project_message', data: { a: 1 } }))).status).toBe(202);
    expect((await call(g, 'post', path, url, jsonBody(producerToken(), { events: [{ type: 'project_message', data: {} }] }))).body!.ids).toHaveLength(1);
    const keyed = { headers: { 'content-type': 'application/json', 'idempotency-key': 'k1', ...bearer(producerToken()) } };
    await call(g, 'post', path, url, { ...keyed, body: JSON.stringify({ type: 'project_message', data: { n: 1 } }) });
    expect((await call(g, 'post', path, url, { ...keyed, body: JSON.stringify({ type: 'project_message', data: { n: 2 } }) })).body!.error.code).toBe('IDEMPOTENCY_KEY_REUSED');
    expect((await call(g, 'post', path, url, { headers: { 'content-type': 'application/json', ...bearer(producerToken()) }, body: '{not json' })).body!.error.code).toBe('BAD_JSON');
    expect((await call(g, 'post', path, url, jsonBody(producerToken(), { type: 'nope', data: {} }))).status).toBe(400);
    expect((await call(g, 'post', path, '/v1/projects/not-a-guid/events', jsonBody(producerToken(), { type: 'project_message', data: {} }))).body!.error.code).toBe('INVALID_GUID');
    expect((await call(g, 'post', path, url, jsonBody(null, { type: 'project_message', data: {} }))).status).toBe(401);
    expect((await call(g, 'post', path, url, jsonBody(userToken(), { type: 'project_message', data: {} }))).status).toBe(403);
    expect((await call(g, 'post', path, url, { headers: bearer(producerToken()), body: '{}' })).status).toBe(415);
    expect((await call(g, 'post', path, url, { headers: { 'content-type': 'application/json', ...bearer(producerToken()) }, body: `{"type":"project_message","data":{"x":"${'x'.repeat(2_000_000)}"}}` })).status).toBe(413);
    expect((await call(down, 'post', path, url, jsonBody(producerToken(), { type: 'project_message', data: {} }))).status).toBe(503);
  });

  it('documents tickets: the preflight, a ticket, and the refusals', async () => {
    await call(g, 'options', '/v1/tickets', '/v1/tickets', { headers: { origin: ORIGIN } });
    await call(g, 'options', '/v1/tickets', '/v1/tickets', { headers: { origin: 'https://elsewhere.example' } });
    const token = userToken('*', `t-${randomGuid()}`);
    expect((await call(g, 'post', '/v1/tickets', '/v1/tickets', { headers: bearer(token) })).status).toBe(201);
    await call(g, 'post', '/v1/tickets', '/v1/tickets', { headers: bearer(token) });
    expect((await call(g, 'post', '/v1/tickets', '/v1/tickets', { headers: bearer(token) })).status).toBe(429);
    expect((await call(g, 'post', '/v1/tickets', '/v1/tickets')).status).toBe(401);
    expect((await call(down, 'post', '/v1/tickets', '/v1/tickets', { headers: bearer(token) })).status).toBe(503);
  });

  it("documents the WebSocket upgrade's refusals", async () => {
    const c = await connect(g.wsUrl, userToken());
    check('get', '/ws', { status: 101, contentType: '', text: '' });
    await c.close();
    await upgrade(g, '');
    await upgrade(g, `?token=${userToken()}`, { 'sec-websocket-protocol': 'nope' });
    await upgrade(g, `?token=${userToken()}`, { origin: 'https://elsewhere.example' });
    const blocked = `blocked-${randomGuid()}`;
    await call(g, 'post', '/v1/admin/block', '/v1/admin/block', jsonBody(adminToken(), { userId: blocked, until: Date.now() + 60_000 }));
    await upgrade(g, `?token=${userToken('*', blocked)}`);
    expect(seen.get('GET /ws')).toEqual(new Set([101, 400, 401, 403]));
  });

  it('documents the server API: every action, query and refusal', async () => {
    const user = `u-${randomGuid()}`;
    const project = randomGuid();
    const admin = adminToken();
    await call(g, 'post', '/v1/admin/disconnect', '/v1/admin/disconnect', jsonBody(admin, { userId: user, reason: 'r' }));
    await call(g, 'post', '/v1/admin/disconnect', '/v1/admin/disconnect', jsonBody(admin, { user }));
    await call(g, 'post', '/v1/admin/disconnect', '/v1/admin/disconnect', jsonBody(producerToken(), { userId: user }));
    await call(g, 'post', '/v1/admin/disconnect', '/v1/admin/disconnect', { headers: bearer(admin), body: '{}' });
    await call(g, 'post', '/v1/admin/revoke', '/v1/admin/revoke', jsonBody(admin, { userId: user, projectGuid: project }));
    await call(g, 'post', '/v1/admin/revoke', '/v1/admin/revoke', jsonBody(admin, { userId: user, projectGuid: 'x'.repeat(36) }));
    await call(g, 'post', '/v1/admin/revoke', '/v1/admin/revoke', { headers: { 'content-type': 'application/json', ...bearer(admin) }, body: `{"userId":"${'u'.repeat(20_000)}"}` });
    await call(g, 'post', '/v1/admin/block', '/v1/admin/block', jsonBody(admin, { userId: user, until: 0 }));
    await call(g, 'post', '/v1/admin/block', '/v1/admin/block', { headers: { 'content-type': 'application/json', ...bearer(admin) }, body: 'nope' });
    expect((await call(down, 'post', '/v1/admin/block', '/v1/admin/block', jsonBody(admin, { userId: user, until: Date.now() + 1000 }))).status).toBe(503);
    await call(g, 'get', '/v1/admin/info', '/v1/admin/info', { headers: bearer(admin) });
    await call(g, 'get', '/v1/admin/info', '/v1/admin/info');
    const presence = '/v1/admin/projects/{projectGuid}/presence';
    await call(g, 'get', presence, `/v1/admin/projects/${project}/presence`, { headers: bearer(admin) });
    await call(g, 'get', presence, '/v1/admin/projects/nope/presence', { headers: bearer(admin) });
    await call(g, 'get', presence, `/v1/admin/projects/${project}/presence`, { headers: bearer(userToken()) });
    // Redis down: a count of this instance alone is not presented as everyone's.
    expect((await call(down, 'get', presence, `/v1/admin/projects/${project}/presence`, { headers: bearer(admin) })).body!.error.code).toBe('UNAVAILABLE');
    const history = '/v1/admin/projects/{projectGuid}/history';
    await g.gw.publishMany(project, [{ type: 'project_message', data: { i: 1 } }, { type: 'agent_message', data: { i: 2 } }]);
    expect((await call(g, 'get', history, `/v1/admin/projects/${project}/history?limit=1`, { headers: bearer(admin) })).body!.next).toMatch(/^\d+-\d+$/);
    await call(g, 'get', history, `/v1/admin/projects/${project}/history?order=newest`, { headers: bearer(admin) });
    await call(g, 'get', history, `/v1/admin/projects/${project}/history?order=sideways`, { headers: bearer(admin) });
    await call(g, 'get', history, `/v1/admin/projects/${project}/history`);
  });

  it('has seen every documented operation answer with success, and with an error wherever it documents one', () => {
    // Answers no test can provoke without breaking the gateway: a failed metrics render.
    const unprovoked = new Set(['GET /metrics']);
    for (const [path, operations] of Object.entries(doc.paths)) {
      for (const [method, operation] of Object.entries(operations)) {
        const key = `${method.toUpperCase()} ${path}`;
        const statuses = [...(seen.get(key) ?? [])];
        expect(statuses.some((s) => s < 300), `${key} seen succeeding`).toBe(true);
        const documentsErrors = Object.keys(operation.responses).some((s) => Number(s) >= 400);
        if (documentsErrors && !unprovoked.has(key)) expect(statuses.some((s) => s >= 400), `${key} seen refusing`).toBe(true);
      }
    }
  });
});
