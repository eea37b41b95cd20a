// Feedback round trip: each VU keeps one WebSocket, joins a project and repeatedly sends
// `user_feedback`, timing how long the gateway's `user_feedback_response` (same `id`) takes: that
// answer comes once the feedback is stored (durable with Redis; see docs/agents.md). The agents'
// own answer, a second `user_feedback_response` with the same id, is not timed here.
//
//   k6 run -e WS_URL=wss://gw.example.com/ws -e JWT_SECRET=<the gateway's secret> k6/feedback-roundtrip.ts
//
// Env: WS_URL and one of JWT_SECRET / TOKENS_FILE / TOKEN (required; lib/auth.ts, a user per VU);
// CONNECT_WITH (ticket); VUS (50), DURATION_S (60), INTERVAL_MS (pause between requests
// of one VU, 1000), TIMEOUT_MS (5000), PROJECTS (10), CONTENT_BYTES (200), P99_MS (500).
import { check } from 'k6';
import exec from 'k6/execution';
import { Counter, Rate, Trend } from 'k6/metrics';
import type { Options } from 'k6/options';
import { clearTimeout, setTimeout } from 'k6/timers';
import { WebSocket } from 'k6/websockets';
import { connectUrl } from './lib/credentials.ts';
import { envNumber, frame, parseFrame, projectGuid, requireEnv, protocolErrors,
  unexpectedCloses,
  wsErrors,
} from './lib/protocol.ts';

const WS_URL = requireEnv('WS_URL');
const VUS = envNumber('VUS', 50);
const DURATION_S = envNumber('DURATION_S', 60);
const INTERVAL_MS = envNumber('INTERVAL_MS', 1000);
const TIMEOUT_MS = envNumber('TIMEOUT_MS', 5000);
const PROJECTS = envNumber('PROJECTS', 10);
const CONTENT = 'k6 feedback '.padEnd(Math.max(1, envNumber('CONTENT_BYTES', 200)), '.');

const roundTrip = new Trend('feedback_rtt', true);
const accepted = new Rate('feedback_accepted');
const durable = new Rate('feedback_durable');
const timeouts = new Counter('feedback_timeouts');
const sent = new Counter('feedback_sent');

export const options: Options = {
  scenarios: {
    feedback: {
      executor: 'per-vu-iterations',
      vus: VUS,
      iterations: 1,
      maxDuration: `${DURATION_S + 30}s`,
      gracefulStop: '10s',
    },
  },
  thresholds: {
    feedback_rtt: [`p(99)<${envNumber('P99_MS', 500)}`],
    feedback_accepted: ['rate>0.99'],
    feedback_timeouts: ['count<1'],
    ws_errors: ['count<1'],
    protocol_errors: ['count<1'],
    unexpected_closes: ['count<1'],
    ticket_errors: ['count<1'],
    checks: ['rate>0.99'],
  },
};

export default function (): void {
  const guid = projectGuid(__VU % PROJECTS);
  const joinId = `join-${__VU}`;
  const endAt = exec.scenario.startTime + DURATION_S * 1000;
  const url = connectUrl(WS_URL);
  if (url === null) return; // the ticket was refused (reported in ticket_errors)
  const ws = new WebSocket(url);
  let opened = false;
  let closingOnPurpose = false;
  let seq = 0;
  // the one request in flight: its id, send time and timeout timer
  let inFlight: { id: string; sentAt: number; timer: number } | undefined;
  let nextTimer: number | undefined;

  const finish = (): void => {
    closingOnPurpose = true;
    if (inFlight) clearTimeout(inFlight.timer);
    if (nextTimer !== undefined) clearTimeout(nextTimer);
    inFlight = undefined;
    ws.close();
  };

  const sendNext = (): void => {
    nextTimer = undefined;
    if (Date.now() >= endAt) {
      finish();
      return;
    }
    const id = `fb-${__VU}-${seq++}`;
    const timer = setTimeout(() => {
      if (inFlight?.id !== id) return;
      inFlight = undefined;
      timeouts.add(1);
      check(false, { 'feedback answered in time': (ok) => ok });
      scheduleNext();
    }, TIMEOUT_MS);
    inFlight = { id, sentAt: Date.now(), timer };
    ws.send(frame('user_feedback', guid, { content: CONTENT, meta: { source: 'k6', vu: __VU } }, id));
    sent.add(1);
  };

  const scheduleNext = (): void => {
    if (!closingOnPurpose) nextTimer = setTimeout(sendNext, INTERVAL_MS);
  };

  ws.addEventListener('open', () => {
    opened = true;
    check(true, { 'ws opened': (ok) => ok });
    ws.send(frame('join_project', guid, {}, joinId));
  });

  ws.addEventListener('message', (event) => {
    if (!('data' in event)) return;
    const now = Date.now();
    for (const env of parseFrame(event.data)) {
      if (env.type === 'join_project' && env.id === joinId) {
        check(env, { 'joined': (e) => e.data !== null });
        sendNext();
      } else if (env.type === 'user_feedback_response' && inFlight && env.id === inFlight.id) {
        roundTrip.add(now - inFlight.sentAt);
        clearTimeout(inFlight.timer);
        inFlight = undefined;
        const ok = env.data?.['accepted'] === true;
        accepted.add(ok);
        durable.add(env.data?.['durable'] === true);
        check(env, { 'feedback accepted': () => ok });
        scheduleNext();
      } else if (env.type === 'error') {
        protocolErrors.add(1);
        console.warn(`VU ${__VU}: error frame for ${String(env.id)}: ${JSON.stringify(env.data)}`);
        if (env.id === joinId) {
          check(false, { 'joined': (ok) => ok });
          finish();
        } else if (inFlight && env.id === inFlight.id) {
          // e.g. RATE_LIMITED: count it as not accepted and carry on
          clearTimeout(inFlight.timer);
          inFlight = undefined;
          accepted.add(false);
          scheduleNext();
        }
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
  });
}
