export { createGateway, type Gateway, type GatewayDeps } from './gateway.js';
export { parseConfig, ConfigError, type Config } from './config.js';
export { ErrorCodes, CloseCodes, type ErrorCode } from './errors.js';
export { SUBPROTOCOLS } from './protocol/codec.js';
export { EVENT_TYPES, CLIENT_TYPES, type Envelope, type EventType } from './protocol/messages.js';
export { createProducer, type Producer, type ProducerOptions } from './bus/producer.js';
export { eventsKey } from './redis/keys.js';
