import http from 'node:http';
import type { Logger } from 'pino';

/**
 * /metrics on a port of its own (METRICS_PORT): Prometheus scrapes each instance there, on a network
 * clients never reach, and the public port answers 404 for /metrics. A plain node:http server: one
 * scrape every few seconds, nothing to gain from uWS here, and the worker pool's main thread (which
 * sums every worker's metrics) has no uWS app of its own.
 */
export async function startMetricsServer(options: { host: string; port: number; contentType: string; render: () => Promise<string>; log: Logger }): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' || req.url?.split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: GET /metrics\n');
      return;
    }
    options.render().then(
      (text) => res.writeHead(200, { 'content-type': options.contentType }).end(text),
      (err: unknown) => {
        options.log.error({ err }, 'metrics failed');
        res.writeHead(500, { 'content-type': 'text/plain' }).end('metrics failed\n');
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => resolve());
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : options.port;
  options.log.info({ host: options.host, port }, 'metrics listening (GET /metrics)');
  return {
    port,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
