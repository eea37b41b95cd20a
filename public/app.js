// The live project page: an example integration of the browser client library (served by the
// gateway at /client/index.js) and an operator's quick check of a gateway. Plain ES module, no
// build step, no dependencies; MessagePack uses msgpackr's ES modules, served at /vendor/msgpackr/.
// Everything the server sends is rendered with textContent, never as HTML.
import { createGatewayClient, tokenExpiryMs } from '/client/index.js';

const $ = (id) => document.getElementById(id);
const MAX_ROWS = 500; // the table keeps the newest rows; the counter counts them all
const RECENT_KEY = 'autocode.recentProjects';

let client = null;
let joinedGuid = null;
let eventCount = 0;

// ---- setup ----

const config = await fetch('/app-config.json').then((r) => r.json()).catch(() => ({ devMode: false, wsPath: '/ws' }));
if (config.devMode) {
  $('dev-badge').hidden = false;
  $('dev-box').hidden = false;
}
renderRecent();
const lastGuid = loadRecent()[0];
if (lastGuid) $('guid').value = lastGuid;

let mintedToken = false; // true while the token field holds a token this page minted (dev mode)
$('mint').addEventListener('click', () => void mintToken().catch((err) => setInfo('token-info', String(err))));
$('token').addEventListener('input', () => { mintedToken = false; });

async function mintToken() {
  const res = await fetch('/dev/token', { method: 'POST' });
  if (!res.ok) throw new Error(`minting a dev token failed: HTTP ${res.status}`);
  const { token, sub, expiresInS } = await res.json();
  $('token').value = token;
  mintedToken = true;
  setInfo('token-info', `dev token for "${sub}", all projects, valid ${Math.round(expiresInS / 60)} min (renewed before it expires)`);
  return token;
}
$('connect').addEventListener('click', () => void connect());
$('disconnect').addEventListener('click', disconnect);
$('new-guid').addEventListener('click', () => { $('guid').value = crypto.randomUUID(); });
$('join').addEventListener('click', () => void openProject($('guid').value.trim()));
$('send-feedback').addEventListener('click', () => void sendFeedback());
$('resync-dismiss').addEventListener('click', () => { $('resync-notice').hidden = true; });

// ---- connection ----

async function connect() {
  const token = $('token').value.trim();
  if (!token) return setInfo('token-info', 'paste a token first (or mint one in dev mode)');
  disconnect();
  const msgpack = $('encoding').value === 'msgpack' ? await loadMsgpack() : undefined;
  const wsUrl = new URL(config.wsPath ?? '/ws', location.href);
  wsUrl.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  client = createGatewayClient({
    url: wsUrl.toString(),
    // A real app asks its backend for a fresh token here. The page can only do that in dev mode
    // with a minted token; a pasted token is used as it is until it expires (then 4401, shown below).
    // The library trades it for a one-time ticket (POST /v1/tickets, token in a header) before each
    // connect, so the token never appears in a URL or a proxy's access log.
    getToken: () => (mintedToken ? mintToken() : $('token').value.trim()),
    protocol: msgpack ? 'msgpack' : 'json',
    msgpack,
  });
  const exp = tokenExpiryMs(token);
  setInfo('token-info', exp ? `token expires ${new Date(exp).toLocaleTimeString()}` : 'token has no exp');
  showState('connecting');
  client.on('state', showState);
  client.on('disconnect', ({ code, reason }) => { $('last-close').textContent = `${code}${reason ? ` (${reason})` : ''} at ${time()}`; });
  client.on('error', (err) => logFeedback(`error ${err.code}: ${err.message}`, 'error'));
  // Answers the agents-server addressed to this user (not room events): feedback replies, direct messages.
  client.on('reply', (env) => {
    const data = env.data ?? {};
    logFeedback(`agent: ${data.text ?? data.content ?? JSON.stringify(data)}${data.status ? ` [${data.status}]` : ''}`, 'reply');
  });
  $('disconnect').disabled = false;
  $('join').disabled = false;
  const guid = $('guid').value.trim();
  if (guid) await openProject(guid);
}

function disconnect() {
  client?.close();
  client = null;
  joinedGuid = null;
  $('disconnect').disabled = true;
  $('join').disabled = true;
  $('send-feedback').disabled = true;
  showState('idle');
}

async function loadMsgpack() {
  const { Packr } = await import('/vendor/msgpackr/pack.js');
  // Plain maps, as the gateway speaks them (no msgpackr records).
  const packr = new Packr({ useRecords: false, mapsAsObjects: true });
  return { encode: (value) => packr.pack(value), decode: (bytes) => packr.unpack(bytes) };
}

function showState(state) {
  const el = $('state');
  el.textContent = state === 'idle' ? 'signed out' : state;
  el.dataset.state = state;
  el.className = `state state-${state}`;
  $('protocol').textContent = client?.protocol || '–';
}

// ---- project ----

async function openProject(guid) {
  if (!client) return;
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(guid)) {
    return setInfo('join-info', 'enter a GUID like 1b4e28ba-2fa1-11d2-883f-0016d3cca427');
  }
  if (joinedGuid && joinedGuid !== guid.toLowerCase()) client.leave(joinedGuid);
  if (joinedGuid !== guid.toLowerCase()) resetProjectView();
  joinedGuid = guid.toLowerCase();
  rememberProject(joinedGuid);
  setInfo('join-info', `joining ${joinedGuid}…`);
  try {
    const ack = await client.join(joinedGuid, { event: onEvent, resync: onResync });
    setInfo('join-info', `joined ${joinedGuid}; history up to ${ack.latestId}; live from here`);
    $('project').dataset.joined = joinedGuid;
    $('send-feedback').disabled = false;
  } catch (err) {
    setInfo('join-info', `join failed: ${err.code ?? ''} ${err.message}`);
    joinedGuid = null;
  }
}

function resetProjectView() {
  eventCount = 0;
  $('event-rows').replaceChildren();
  for (const id of ['stage', 'status', 'last-id']) $(id).textContent = '–';
  $('event-count').textContent = '0';
  $('resync-notice').hidden = true;
  delete $('project').dataset.joined;
}

function onEvent(env) {
  eventCount++;
  $('event-count').textContent = String(eventCount);
  $('last-id').textContent = env.id;
  const data = env.data ?? {};
  if (env.type === 'project_stage_update') $('stage').textContent = String(data.stage ?? data.name ?? JSON.stringify(data));
  if (env.type === 'project_status_change') $('status').textContent = String(data.status ?? JSON.stringify(data));
  if (env.type === 'agent_message') logFeedback(`agent: ${data.text ?? data.content ?? JSON.stringify(data)}`, 'reply');

  const row = document.createElement('tr');
  row.className = `ev ev-${env.type}`;
  row.dataset.id = env.id;
  for (const text of [env.id, env.timestamp ? new Date(env.timestamp).toLocaleTimeString() : '', env.type, JSON.stringify(data)]) {
    const cell = document.createElement('td');
    cell.textContent = text;
    row.append(cell);
  }
  const rows = $('event-rows');
  rows.prepend(row);
  while (rows.childElementCount > MAX_ROWS) rows.lastElementChild.remove();
}

function onResync({ since, latestId }) {
  $('resync-since').textContent = since;
  $('resync-latest').textContent = latestId ?? 'the newest event';
  $('resync-notice').hidden = false;
}

// ---- feedback ----

async function sendFeedback() {
  const content = $('feedback-text').value.trim();
  if (!client || !joinedGuid || !content) return;
  logFeedback(`you: ${content}`, 'sent');
  try {
    const res = await client.sendFeedback(joinedGuid, content);
    // status "accepted": stored in Redis, survives restarts; "queued": in this gateway's memory only.
    const how = res.status === 'accepted' ? 'stored durably, waiting for the agents' : res.status === 'queued' ? 'queued in memory (no Redis: not durable)' : `not accepted${res.reason ? `: ${res.reason}` : ''}`;
    logFeedback(`ack: status=${res.status ?? 'none'} durable=${res.durable ?? false} feedbackId=${res.feedbackId ?? '-'} (${how})`, res.accepted ? 'ack' : 'error');
    $('feedback-text').value = '';
  } catch (err) {
    logFeedback(`failed: ${err.code} ${err.message}`, 'error');
  }
}

function logFeedback(text, kind) {
  const li = document.createElement('li');
  li.className = `log-${kind}`;
  li.textContent = `${time()}  ${text}`;
  $('feedback-log').prepend(li);
}

// ---- helpers ----

function setInfo(id, text) { $(id).textContent = text; }
function time() { return new Date().toLocaleTimeString(); }

function loadRecent() {
  try { return JSON.parse(localStorage.getItem(RECENT_KEY) ?? '[]'); } catch { return []; }
}
function rememberProject(guid) {
  const list = [guid, ...loadRecent().filter((g) => g !== guid)].slice(0, 10);
  localStorage.setItem(RECENT_KEY, JSON.stringify(list));
  renderRecent();
}
function renderRecent() {
  $('recent-guids').replaceChildren(...loadRecent().map((g) => Object.assign(document.createElement('option'), { value: g })));
}

document.body.dataset.ready = 'true';
