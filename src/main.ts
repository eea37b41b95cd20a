import { ConfigError, parseConfig, type Config } from './config.js';
import { createGateway } from './gateway.js';
import { createLogger } from './logger.js';
import { startWorkerPool } from './workers/pool.js';

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
  let server: { close(): Promise<void> };
  try {
    if (config.workers > 1) {
      // WORKERS uWS apps in worker threads on one port, one bus (src/workers/).
      server = await startWorkerPool(config, log, (workerId) => stop(`worker ${workerId} lost`, 1));
    } else {
      // WORKERS=1: one gateway on this thread, no worker thread at all.
      const gateway = await createGateway(config, { logger: log });
      await gateway.listen();
      server = gateway;
    }
  } catch (err) {
    log.fatal({ err }, 'gateway failed to start');
    process.stderr.write(`autocode-ws-gateway: failed to start: ${(err as Error).message}\n`);
    process.exit(1);
  }

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
    server.close().then(
      () => process.exit(exitCode),
      (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  }
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
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
