// A worker thread holding a port bus (src/workers/port-bus.ts, compiled: dist/workers/port-bus.js),
// wired the way src/workers/worker.ts wires it, and driven by the test thread through a small RPC
// (test/helpers/bus-contract.ts is the other end).
//
// Messages on this thread's port:
//   test → worker: the pool's ToWorker messages the port bus needs (`reply`, `bus-events`), and
//                  { kind: 'rpc', id, calls: [[method, ...args], ...] }: EventBus calls run one after
//                  another in this thread, each awaited before the next starts (as a gateway's own
//                  code would), with nothing else of this thread's event loop run in between.
//   worker → test: the pool's FromWorker messages (`call`, `bus-unwatch`); { kind: 'hello' } once;
//                  { kind: 'sink', guid, events } for every batch the sink receives; { kind: 'mark',
//                  method, args, value } when a call resolved; { kind: 'rpc-result', id, ok, ... }.
// One port carries all of them in order, so the test sees the sink's batches and the calls'
// resolutions in the order this thread saw them.
import { parentPort, workerData } from 'node:worker_threads';

/** @type {{ dist: string, appendChannel: import('../../dist/workers/messages.js').SyncChannel }} */
const { dist, appendChannel } = workerData;
const { createPortBus } = await import(new URL('workers/port-bus.js', dist).href);
const { createMainCaller } = await import(new URL('workers/main-calls.js', dist).href);
const { createSyncCaller } = await import(new URL('workers/sync-calls.js', dist).href);
const { GatewayError } = await import(new URL('errors.js', dist).href);

const port = /** @type {import('node:worker_threads').MessagePort} */ (parentPort);
const send = (message) => port.postMessage(message);
const caller = createMainCaller(send);
const append = createSyncCaller(appendChannel);
const portBus = createPortBus(caller, append, send, (guid, events) => send({ kind: 'sink', guid, events }));
const bus = portBus.bus;

/** Whether publish() settles within the microtasks of its caller (what appendsInline promises). */
async function publishSettlesInline(guid, events) {
  let settled = false;
  const done = bus.publish(guid, events).then(
    () => (settled = true),
    () => (settled = true),
  );
  for (let i = 0; i < 20; i++) await Promise.resolve();
  const inline = settled;
  await done;
  return inline;
}

async function run(calls) {
  const values = [];
  for (const [method, ...args] of calls) {
    const value = method === 'publishSettlesInline' ? await publishSettlesInline(...args) : await bus[method](...args);
    values.push(value);
    send({ kind: 'mark', method, args: method === 'publish' ? [args[0]] : args, value: value ?? null });
  }
  return values;
}

port.on('message', (message) => {
  switch (message.kind) {
    case 'reply':
      return caller.receive(message);
    case 'bus-events':
      return portBus.receive(message);
    case 'rpc':
      return void run(message.calls).then(
        (values) => send({ kind: 'rpc-result', id: message.id, ok: true, values, ready: bus.isReady() }),
        (err) =>
          send({
            kind: 'rpc-result',
            id: message.id,
            ok: false,
            message: err?.message ?? String(err),
            code: err instanceof GatewayError ? err.code : undefined,
            retryAfterS: err instanceof GatewayError ? err.retryAfterS : undefined,
            ready: bus.isReady(),
          }),
      );
  }
});

send({ kind: 'hello', busKind: bus.kind, appendsInline: bus.appendsInline, ready: bus.isReady() });
