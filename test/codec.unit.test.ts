import { describe, expect, it } from 'vitest';
import { negotiateSubprotocol } from '../src/protocol/codec.js';

describe('negotiateSubprotocol', () => {
  it('picks the first subprotocol offered that we speak, JSON when none is offered, null when none fits', () => {
    expect(negotiateSubprotocol('autocode.v1.json')).toEqual({ codec: 'json', protocol: 'autocode.v1.json' });
    expect(negotiateSubprotocol('autocode.v1.msgpack')).toEqual({ codec: 'msgpack', protocol: 'autocode.v1.msgpack' });
    expect(negotiateSubprotocol('chat, autocode.v1.msgpack , autocode.v1.json')).toEqual({ codec: 'msgpack', protocol: 'autocode.v1.msgpack' });
    expect(negotiateSubprotocol(' autocode.v1.json')).toEqual({ codec: 'json', protocol: 'autocode.v1.json' });
    expect(negotiateSubprotocol('')).toEqual({ codec: 'json', protocol: '' });
    expect(negotiateSubprotocol('  ')).toEqual({ codec: 'json', protocol: '' });
    expect(negotiateSubprotocol('chat')).toBeNull();
    expect(negotiateSubprotocol('autocode.v1.JSON')).toBeNull();
  });
});
