// Who the client is, as the edge limits count it (src/edge/client-address.ts).
import { describe, expect, it } from 'vitest';
import { createClientAddressResolver, UNPARSABLE_CLIENT } from '../src/edge/client-address.js';

describe('client address', () => {
  const behindProxy = createClientAddressResolver({ trustedProxies: ['10.0.0.0/8', '127.0.0.1'], ipv6Prefix: 64 });

  it('reads every X-Forwarded-For line as one list: the right-most untrusted hop over all of them', () => {
    // HAProxy's `option forwardfor` adds its own line after the client's: "<client's line>,<proxy's line>".
    expect(behindProxy('127.0.0.1', '198.51.100.9,203.0.113.7').key).toBe('203.0.113.7');
    expect(behindProxy('127.0.0.1', '198.51.100.9, 10.1.2.3,203.0.113.7, 10.9.9.9').key).toBe('203.0.113.7');
    // Trusted hops are skipped; the first untrusted one from the right is the client.
    expect(behindProxy('10.0.0.5', '203.0.113.7, 10.0.0.4').key).toBe('203.0.113.7');
  });

  it('believes the header only from a trusted peer', () => {
    const direct = createClientAddressResolver({ trustedProxies: ['10.0.0.0/8'], ipv6Prefix: 64 });
    expect(direct('198.51.100.1', '203.0.113.7').key).toBe('198.51.100.1');
  });

  it('counts the spellings of one IPv4 address as one client', () => {
    const none = createClientAddressResolver({ trustedProxies: [], ipv6Prefix: 64 });
    const keys = ['127.0.0.1', '::ffff:127.0.0.1', '0:0:0:0:0:ffff:7f00:1', '::FFFF:7F00:0001', '0000:0000:0000:0000:0000:ffff:127.0.0.1'].map((p) => none(p, '').key);
    expect(new Set(keys)).toEqual(new Set(['127.0.0.1']));
    // Forwarded hops too, including the forms inet_aton reads and a port some proxies append.
    const hops = ['203.0.113.7', '::ffff:203.0.113.7', '203.0.113.7:51234', '[::ffff:cb00:7107]:443'].map((h) => behindProxy('127.0.0.1', h).key);
    expect(new Set(hops)).toEqual(new Set(['203.0.113.7']));
  });

  it('groups IPv6 clients by their /64 (configurable), in canonical form', () => {
    const keys = ['2001:db8:1:2::1', '2001:DB8:1:2:ffff:ffff:ffff:ffff', '2001:0db8:0001:0002:0000:0000:0000:00aa', 'fe80::1%eth0'].map((a) => behindProxy('127.0.0.1', a).key);
    expect(keys.slice(0, 3)).toEqual(['2001:db8:1:2::/64', '2001:db8:1:2::/64', '2001:db8:1:2::/64']);
    expect(keys[3]).toBe('fe80::/64');
    expect(behindProxy('127.0.0.1', '2001:db8:1:3::1').key).toBe('2001:db8:1:3::/64');
    const perAddress = createClientAddressResolver({ trustedProxies: [], ipv6Prefix: 128 });
    expect(perAddress('2001:db8::1', '').key).toBe('2001:db8::1');
    const per48 = createClientAddressResolver({ trustedProxies: [], ipv6Prefix: 48 });
    expect(per48('2001:db8:1:ffff::1', '').key).toBe('2001:db8:1::/48');
  });

  it('never counts a trusted proxy as a client: its own requests have no address key', () => {
    expect(behindProxy('127.0.0.1', '')).toEqual({ key: null, address: '127.0.0.1' });
    expect(behindProxy('::ffff:10.1.1.1', '10.2.2.2')).toEqual({ key: null, address: '10.2.2.2' });
  });

  it('makes every client with an unreadable forwarded hop one client', () => {
    expect(behindProxy('127.0.0.1', 'evil, 203.0.113.7').key).toBe('203.0.113.7'); // garbage left of the client: never read
    expect(behindProxy('127.0.0.1', '203.0.113.7, not-an-ip').key).toBe(UNPARSABLE_CLIENT);
    expect(behindProxy('127.0.0.1', '1.2.3.4.5').key).toBe(UNPARSABLE_CLIENT);
  });

  it('warns once per untrusted private peer that sends X-Forwarded-For', () => {
    const warned: string[] = [];
    const resolve = createClientAddressResolver({ trustedProxies: [], ipv6Prefix: 64, onUntrustedForwarder: (peer) => warned.push(peer) });
    resolve('172.18.0.5', '203.0.113.7');
    resolve('172.18.0.5', '203.0.113.8');
    resolve('::ffff:172.18.0.5', '203.0.113.8');
    resolve('198.51.100.1', '203.0.113.7'); // public peer: a client writing the header itself, not a forgotten proxy
    resolve('172.18.0.6', '');
    expect(warned).toEqual(['172.18.0.5']);
  });
});
