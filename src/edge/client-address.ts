import { BlockList, isIP } from 'node:net';

/**
 * The address a request really came from. `X-Forwarded-For` is believed only when the peer is a
 * configured proxy (TRUSTED_PROXIES), and then only as far back as the chain stays inside trusted
 * proxies: the right-most address not ours is the client. Anyone else can write that header, so
 * from anyone else it is ignored.
 */
export function createClientAddressResolver(trustedProxies: readonly string[]): (peer: string, forwardedFor: string) => string {
  if (trustedProxies.length === 0) return (peer) => peer;
  const trusted = new BlockList();
  for (const cidr of trustedProxies) {
    const [address, bits] = cidr.split('/') as [string, string | undefined];
    const type = isIP(address) === 6 ? 'ipv6' : 'ipv4';
    if (bits === undefined) trusted.addAddress(address, type);
    else trusted.addSubnet(address, Number(bits), type);
  }
  const isTrusted = (address: string) => {
    const type = isIP(address);
    return type !== 0 && trusted.check(address, type === 6 ? 'ipv6' : 'ipv4');
  };
  return (peer, forwardedFor) => {
    if (!isTrusted(peer) || !forwardedFor) return peer;
    const hops = forwardedFor.split(',');
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = hops[i]!.trim();
      if (isIP(hop) === 0) return peer; // garbage in the chain: trust none of it
      if (!isTrusted(hop)) return hop;
    }
    return hops[0]!.trim();
  };
}

/** TRUSTED_PROXIES entries: an IPv4/IPv6 address, optionally with a /prefix. */
export function isCidr(value: string): boolean {
  const [address, bits, extra] = value.split('/');
  if (extra !== undefined || !address) return false;
  const family = isIP(address);
  if (family === 0) return false;
  if (bits === undefined) return true;
  const n = Number(bits);
  return /^\d{1,3}$/.test(bits) && n <= (family === 6 ? 128 : 32);
}

/** uWS gives the peer address as text; IPv4 peers of a dual-stack socket come as ::ffff:a.b.c.d. */
export function normalizePeer(text: string): string {
  return text.startsWith('::ffff:') && isIP(text.slice(7)) === 4 ? text.slice(7) : text;
}
