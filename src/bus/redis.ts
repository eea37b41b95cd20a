import type { Logger } from 'pino';
import type { Config } from '../config.js';
import type { EventBus, EventSink } from './bus.js';

export interface RedisBusOptions {
  redis: NonNullable<Config['redis']>;
  stream: Config['stream'];
  nodeId: string;
  log: Logger;
}

export function createRedisBus(_sink: EventSink, _options: RedisBusOptions): EventBus {
  throw new Error('Redis bus not implemented yet');
}
