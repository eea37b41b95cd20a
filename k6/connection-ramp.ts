// Connection ramp: VUs ramp up, each opens one WebSocket, joins a project and holds the
// connection (app-level pings keep it alive), then reconnects when its hold time is over.
//
//   k6 run -e WS_URL=wss://gw.example.com/ws -e JWT_SECRET=<the gateway's secret> k6/connection-ramp.ts
//
// Env: WS_URL and one of JWT_SECRET / TOKENS_FILE / TOKEN (required; lib/auth.ts, a user per VU);
// CONNECT_WITH (ticket); TARGET_VUS (1000), RAMP_UP (2m), HOLD (3m), RAMP_DOWN (30s),
// HOLD_S (seconds one connection stays open, 60), PING_S (25), PROJECTS (rooms spread over, 100),
// P95_CONNECT_MS (500), JOIN_TIMEOUT_MS (5000).
import { check, sleep } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';
import type { Options } from 'k6/options';
import { clearInterval, clearTimeout, setInterval, setTimeout } from 'k6/timers';
import { WebSocket } from 'k6/websockets';
import { connectUrl } from './lib/credentials.ts';
import { envNumber, envString, frame, parseFrame, projectGuid, requireEnv, protocolErrors,
  unexpectedCloses,
  wsErrors,
} from './lib/protocol.ts';

const WS_URL = requireEnv('WS_URL');
const HOLD_S = envNumber('HOLD_S', 60);
const PING_S = envNumber('PING_S', 25);
const PROJECTS = envNumber('PROJECTS', 100);
const JOIN_TIMEOUT_MS = envNumber('JOIN_TIMEOUT_MS', 5000);

const joinAck = new Trend('join_ack_ms', true);
const joinOk = new Rate('join_ok');

export const options: Options = {
  scenarios: {
    ramp: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: [
        { duration: envString('RAMP_UP', '2m'), target: envNumber('TARGET_VUS', 1000) },
        { duration: envString('HOLD', '3m'), target: envNumber('TARGET_VUS', 1000) },
        { duration: envString('RAMP_DOWN', '30s'), target: 0 },
      ],
      gracefulRampDown: '5s',
      gracefulStop: '5s',
    },
  },
  thresholds: {
    ws_connecting: [`p(95)<${envNumber('P95_CONNECT_MS', 500)}`],
    checks: ['rate>0.99'],
    join_ok: ['rate>0.99'],
    join_ack_ms: ['p(95)<500'],
    ws_errors: ['count<1'],
    ticket_errors: ['count<1'],
  },
};

export default function (): void {
  const guid = projectGuid(__VU % PROJECTS);
  const requestId = `join-${__VU}-${__ITER}`;
  const url = connectUrl(WS_URL);
  if (url === null) {
    sleep(1); // the ticket was refused (reported): this VU tries again next iteration, without hammering
    return;
  }
  const ws = new WebSocket(url);
  let sentAt = 0;
  let opened = false;
  let joinSettled = false; // ack, error or timeout recorded in join_ok
  let closingOnPurpose = false;
  let pingTimer: number | undefined;
  let holdTimer: number | undefined;
  let joinTimer: number | undefined;

  const finish = (): void => {
    closingOnPurpose = true;
    if (pingTimer !== undefined) clearInterval(pingTimer);
    if (holdTimer !== undefined) clearTimeout(holdTimer);
    if (joinTimer !== undefined) clearTimeout(joinTimer);
    ws.close();
  };

  ws.addEventListener('open', () => {
    opened = true;
    check(true, { 'ws opened': (ok) => ok });
    sentAt = Date.now();
    ws.send(frame('join_project', guid, {}, requestId));
    joinTimer = setTimeout(() => {
      if (!joinSettled) {
        joinSettled = true;
        joinOk.add(false);
        check(false, { 'join acked in time': (ok) => ok });
        finish();
      }
    }, JOIN_TIMEOUT_MS);
    pingTimer = setInterval(() => ws.send(frame('ping', null, {})), PING_S * 1000);
    holdTimer = setTimeout(finish, HOLD_S * 1000);
  });

  ws.addEventListener('message', (event) => {
    if (!('data' in event)) return;
    for (const env of parseFrame(event.data)) {
      if (env.type === 'join_project' && env.id === requestId && !joinSettled) {
        joinSettled = true;
        joinAck.add(Date.now() - sentAt);
        joinOk.add(true);
        check(env, { 'join ack has latestId': (e) => e.data !== null && 'latestId' in e.data });
      } else if (env.type === 'error') {
        protocolErrors.add(1);
        if (env.id === requestId && !joinSettled) {
          joinSettled = true;
          joinOk.add(false);
          finish();
        }
      }
    }
  });

  const reportOpenFailure = (): void => {
    if (opened) return;
    opened = true; // report once
    closingOnPurpose = true;
    check(false, { 'ws opened': (ok) => ok });
  };

  ws.addEventListener('error', (event) => {
    wsErrors.add(1);
    reportOpenFailure(); // an error before 'open' is a failed handshake (e.g. HTTP 401 for a bad TOKEN)
    if ('error' in event) console.warn(`VU ${__VU}: ws error: ${event.error}`);
  });

  ws.addEventListener('close', () => {
    reportOpenFailure();
    if (!closingOnPurpose) {
      unexpectedCloses.add(1);
      check(false, { 'connection closed by us': (ok) => ok });
      finish();
    }
  });
}
