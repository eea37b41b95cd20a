import { ConfigError, parseConfig, type Config } from './config.js';
import { createLogger } from './logger.js';

/** The only module that reads the environment or touches the process. */
async function main(): Promise<void> {
  let config: Config;
  try {
    config = parseConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`autocode-ws-gateway: configuration error: ${err.message}\n`);
      process.exit(78); // EX_CONFIG
    }
    throw err;
  }
  const log = createLogger(config.logLevel, config.nodeId);

  let stopping = false;
  function stop(signal: string, exitCode = 0): void {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    const force = setTimeout(() => {
      log.error('shutdown timed out, exiting');
      process.exit(1);
    }, config.shutdownGraceMs + 5000);
    force.unref();
    // A signal during start-up (workers still coming up) waits for the start, then drains.
    started.then((server) => server.close()).then(
      () => process.exit(exitCode),
      (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  }
  // Installed before listening: with WORKERS > 1 the port answers as soon as the first worker
  // listens, and a SIGTERM from then on must drain, not kill.
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));

  const started: Promise<{ close(): Promise<void> }> = (async () => {
    if (config.workers > 1) {
      // WORKERS uWS apps in worker threads on one port, one bus (src/workers/). Imported here, not at
      // the top: a configuration error then exits before the pool's graph is loaded (~0.3 s here).
      const { startWorkerPool } = await import('./workers/pool.js');
      return startWorkerPool(config, log, (workerId) => stop(`worker ${workerId} lost`, 1));
    }
    // WORKERS=1: one gateway on this thread, no worker thread at all.
    // Imported here, not at the top: with WORKERS the main thread never builds a gateway, and loading
    // gateway.js's graph (~0.45 s here) before the workers start would delay every start and restart.
    const { createGateway } = await import('./gateway.js');
    const gateway = await createGateway(config, { logger: log });
    await gateway.listen();
    return gateway;
  })();
  try {
    await started;
  } catch (err) {
    log.fatal({ err }, 'gateway failed to start');
    process.stderr.write(`autocode-ws-gateway: failed to start: ${(err as Error).message}\n`);
    process.exit(1);
  }
  process.on('uncaughtException', (err) => {
    log.fatal({ err }, 'uncaught exception');
    process.exit(1);
  });
  process.on('unhandledRejection', (err) => {
    log.fatal({ err }, 'unhandled rejection');
    process.exit(1);
  });
}

void main();
