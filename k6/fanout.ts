// Fan-out: SUBSCRIBERS WebSocket clients join rooms and stay connected for the whole test while a
// producer scenario POSTs events to the HTTP producer API. Measures delivery latency from the
// envelope `timestamp` (set when the event was published) to its arrival at the client.
//
//   k6 run -e WS_URL=wss://gw.example.com/ws -e JWT_SECRET=<the gateway's secret> k6/fanout.ts
//
// Env: WS_URL and one of JWT_SECRET / TOKENS_FILE / TOKEN (required; lib/auth.ts, a user per VU);
// PRODUCER_TOKEN (required unless JWT_SECRET mints one per producer VU); CONNECT_WITH (ticket);
// HTTP_URL (producer API and tickets, default derived from WS_URL);
// SUBSCRIBERS (200), ROOMS (10), ROOMS_PER_CLIENT (1), DURATION_S (120), WARMUP_S (10),
// PUBLISH_RATE (events/s over all rooms, 50), EVENT_TYPE (project_message), PAYLOAD_BYTES (256),
// PING_S (25), P95_MS (250), P99_MS (1000).
//
// Latency is client clock minus the gateway's timestamp: run k6 on a host with a synced clock.
import { check } from 'k6';
import exec from 'k6/execution';
import http from 'k6/http';
import { Counter, Rate, Trend } from 'k6/metrics';
import type { Options } from 'k6/options';
import { clearInterval, setInterval, setTimeout } from 'k6/timers';
import { WebSocket } from 'k6/websockets';
import {
  compareEventIds,
  envNumber,
  envString,
  frame,
  httpBaseUrl,
  isEvent,
  parseFrame,
  projectGuid,
  requireEnv,
  protocolErrors,
  unexpectedCloses,
  wsErrors,
} from './lib/protocol.ts';
import { connectUrl, producerAuth, tokens } from './lib/credentials.ts';

const WS_URL = requireEnv('WS_URL');
// Fail at the start, not on every publish, when the producer has no token (PRODUCER_TOKEN, or JWT_SECRET to mint one).
tokens.producerFor(1);
const HTTP_URL = httpBaseUrl(WS_URL);
const SUBSCRIBERS = envNumber('SUBSCRIBERS', 200);
const ROOMS = envNumber('ROOMS', 10);
const ROOMS_PER_CLIENT = Math.min(envNumber('ROOMS_PER_CLIENT', 1), ROOMS);
const DURATION_S = envNumber('DURATION_S', 120);
const WARMUP_S = envNumber('WARMUP_S', 10);
const PUBLISH_RATE = envNumber('PUBLISH_RATE', 50);
const EVENT_TYPE = envString('EVENT_TYPE', 'project_message');
const PAYLOAD = 'x'.repeat(envNumber('PAYLOAD_BYTES', 256));
const PING_S = envNumber('PING_S', 25);

const deliveryLatency = new Trend('delivery_latency', true);
const eventsReceived = new Counter('events_received');
const framesReceived = new Counter('frames_received');
const batchedFrames = new Counter('batched_frames');
const outOfOrder = new Counter('out_of_order_events');
const joinOk = new Rate('join_ok');
const published = new Counter('events_published');
const publishErrors = new Counter('publish_errors');

export const options: Options = {
  scenarios: {
    subscribers: {
      executor: 'per-vu-iterations',
      exec: 'subscriber',
      vus: SUBSCRIBERS,
      iterations: 1,
      maxDuration: `${DURATION_S + 30}s`,
      gracefulStop: '10s',
    },
    producer: {
      executor: 'constant-arrival-rate',
      exec: 'producer',
      startTime: `${WARMUP_S}s`,
      duration: `${Math.max(1, DURATION_S - WARMUP_S - 5)}s`,
      rate: PUBLISH_RATE,
      timeUnit: '1s',
      preAllocatedVUs: Math.max(5, Math.ceil(PUBLISH_RATE / 10)),
      maxVUs: Math.max(50, PUBLISH_RATE * 2),
    },
  },
  thresholds: {
    delivery_latency: [`p(95)<${envNumber('P95_MS', 250)}`, `p(99)<${envNumber('P99_MS', 1000)}`],
    events_received: ['count>0'],
    ws_errors: ['count<1'],
    protocol_errors: ['count<1'],
    out_of_order_events: ['count<1'],
    unexpected_closes: ['count<1'],
    publish_errors: ['count<1'],
    ticket_errors: ['count<1'],
    join_ok: ['rate>0.99'],
    checks: ['rate>0.99'],
    'http_req_failed{scenario:producer}': ['rate<0.01'],
  },
};

/** Rooms of subscriber VU `vu`: ROOMS_PER_CLIENT consecutive room numbers, spread evenly. */
function roomsOf(vu: number): string[] {
  const rooms: string[] = [];
  for (let k = 0; k < ROOMS_PER_CLIENT; k++) rooms.push(projectGuid((vu + k) % ROOMS));
  return rooms;
}

export function subscriber(): void {
  const rooms = roomsOf(__VU);
  const lastId = new Map<string, string>();
  const pendingJoins = new Set<string>();
  const endAt = exec.scenario.startTime + DURATION_S * 1000;
  const url = connectUrl(WS_URL);
  if (url === null) {
    joinOk.add(false); // this subscriber never joins: the ticket was refused (reported)
    return;
  }
  const ws = new WebSocket(url);
  let opened = false;
  let closingOnPurpose = false;
  let pingTimer: number | undefined;

  const finish = (): void => {
    closingOnPurpose = true;
    if (pingTimer !== undefined) clearInterval(pingTimer);
    ws.close();
  };

  ws.addEventListener('open', () => {
    opened = true;
    check(true, { 'ws opened': (ok) => ok });
    rooms.forEach((guid, i) => {
      const id = `join-${__VU}-${i}`;
      pendingJoins.add(id);
      ws.send(frame('join_project', guid, {}, id));
    });
    pingTimer = setInterval(() => ws.send(frame('ping', null, {})), PING_S * 1000);
    setTimeout(finish, Math.max(1000, endAt - Date.now()));
  });

  ws.addEventListener('message', (event) => {
    if (!('data' in event)) return;
    const now = Date.now();
    const envelopes = parseFrame(event.data);
    framesReceived.add(1);
    if (envelopes.length > 1) batchedFrames.add(1);
    for (const env of envelopes) {
      if (isEvent(env)) {
        eventsReceived.add(1);
        const sent = Date.parse(env.timestamp);
        if (Number.isFinite(sent)) deliveryLatency.add(Math.max(0, now - sent));
        if (env.projectGuid !== null && env.id !== null) {
          const previous = lastId.get(env.projectGuid);
          if (previous !== undefined && compareEventIds(env.id, previous) <= 0) outOfOrder.add(1);
          lastId.set(env.projectGuid, env.id);
        }
      } else if (env.type === 'join_project' && env.id !== null && pendingJoins.delete(env.id)) {
        joinOk.add(true);
        const latest = env.data?.['latestId'];
        if (env.projectGuid !== null && typeof latest === 'string' && latest !== '') lastId.set(env.projectGuid, latest);
      } else if (env.type === 'error') {
        protocolErrors.add(1);
        if (env.id !== null && pendingJoins.delete(env.id)) joinOk.add(false);
        console.warn(`VU ${__VU}: error frame ${JSON.stringify(env.data)}`);
      }
    }
  });

  ws.addEventListener('error', (event) => {
    wsErrors.add(1);
    if ('error' in event) console.warn(`VU ${__VU}: ws error: ${event.error}`);
  });

  ws.addEventListener('close', () => {
    if (!opened) check(false, { 'ws opened': (ok) => ok });
    if (!closingOnPurpose) {
      unexpectedCloses.add(1);
      finish();
    }
    pendingJoins.forEach(() => joinOk.add(false));
    pendingJoins.clear();
  });
}

let loggedPublishFailures = 0; // per VU

export function producer(): void {
  const room = exec.scenario.iterationInTest % ROOMS;
  const guid = projectGuid(room);
  const body = JSON.stringify({
    type: EVENT_TYPE,
    data: { seq: exec.scenario.iterationInTest, sentAt: Date.now(), payload: PAYLOAD },
  });
  const res = http.post(`${HTTP_URL}/v1/projects/${guid}/events`, body, {
    headers: { 'Content-Type': 'application/json', Authorization: producerAuth() },
    tags: { name: 'POST /v1/projects/:projectGuid/events' },
  });
  const ok = check(res, {
    'publish 202': (r) => r.status === 202,
    'publish returns id': (r) => {
      try {
        const parsed: unknown = r.json();
        return typeof parsed === 'object' && parsed !== null && typeof (parsed as { id?: unknown }).id === 'string';
      } catch {
        return false;
      }
    },
  });
  if (ok) {
    published.add(1);
  } else {
    publishErrors.add(1);
    if (loggedPublishFailures++ < 3) console.warn(`publish failed: HTTP ${res.status} ${String(res.body)}`);
  }
}

export function setup(): void {
  console.info(
    `fanout: ${SUBSCRIBERS} subscribers x ${ROOMS_PER_CLIENT} of ${ROOMS} rooms, ${PUBLISH_RATE} events/s ` +
      `for ${DURATION_S - WARMUP_S - 5}s via ${HTTP_URL}; expected deliveries ≈ events_published x ${(
        (SUBSCRIBERS * ROOMS_PER_CLIENT) /
        ROOMS
      ).toFixed(1)}`,
  );
}
