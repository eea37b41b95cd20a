import ipaddr from 'ipaddr.js';

/**
 * The client a request comes from, as the edge limits count it.
 *
 * - `X-Forwarded-For` is believed only when the peer is a configured proxy (TRUSTED_PROXIES), and
 *   then only as far back as the chain stays inside trusted proxies: the right-most hop not ours is
 *   the client. Every header line counts (HAProxy's `option forwardfor` appends a line of its own
 *   instead of merging): the lines are one list, in order, as RFC 9110 says of repeated fields.
 * - Addresses are compared in one canonical form (ipaddr.js): `::ffff:a.b.c.d` and the other IPv6
 *   spellings of an IPv4 address are that IPv4 address; IPv6 is compressed and lower-cased, its zone
 *   dropped. An IPv6 client is its /`ipv6Prefix` network (default /64): one subscriber line gets a
 *   whole /64, so counting single addresses would let one client be 2^64 of them.
 * - A trusted proxy's own address is never a client: requests it makes itself (no header, or a chain
 *   of proxies only) are not capped, rate limited or penalized by address.
 * - A hop that is not an address (garbage written by a client behind a proxy that passes headers on
 *   unchecked) makes the client "unparsable": all such clients share one key, so garbage buys nothing.
 */
export interface ClientAddress {
  /** The key the per-address limits count; null for a trusted proxy's own requests. */
  readonly key: string | null;
  /** The client's address for logs (canonical), or the proxy's when key is null. */
  readonly address: string;
}

export interface ClientAddressOptions {
  readonly trustedProxies: readonly string[];
  /** IPv6 clients are grouped by this prefix length (1-128; 128 = every address its own client). */
  readonly ipv6Prefix: number;
  /**
   * Called once per peer address seen sending X-Forwarded-For while not trusted and itself a private,
   * loopback or link-local address: most likely a proxy someone forgot to list in TRUSTED_PROXIES,
   * which makes every client behind it one client.
   */
  readonly onUntrustedForwarder?: (peer: string) => void;
}

/** The key shared by every client whose forwarded address could not be read. */
export const UNPARSABLE_CLIENT = 'unparsable-forwarded-for';

type Parsed = ipaddr.IPv4 | ipaddr.IPv6;

/** Parses one address as a proxy or uWS writes it (`a.b.c.d`, IPv6, `[v6]`, `a.b.c.d:port`, `[v6]:port`), canonical; null if it is none. */
export function parseAddress(text: string): Parsed | null {
  let s = text.trim();
  if (s.startsWith('[')) {
    const end = s.indexOf(']');
    if (end < 0) return null;
    s = s.slice(1, end);
  } else if (s.indexOf(':') > 0 && s.indexOf(':') === s.lastIndexOf(':') && s.includes('.')) {
    s = s.slice(0, s.indexOf(':')); // a.b.c.d:port
  }
  if (!ipaddr.isValid(s)) return null;
  try {
    const parsed = ipaddr.process(s);
    if (parsed.kind() === 'ipv6') (parsed as ipaddr.IPv6).zoneId = undefined;
    return parsed;
  } catch {
    return null;
  }
}

/** A CIDR as [network, bits] in the form addresses are compared in (an IPv4-mapped IPv6 range becomes IPv4). */
function parseCidr(cidr: string): [Parsed, number] {
  const [address, bits] = cidr.split('/') as [string, string | undefined];
  const raw = ipaddr.parse(address);
  const width = raw.kind() === 'ipv6' ? 128 : 32;
  const n = bits === undefined ? width : Number(bits);
  if (raw.kind() === 'ipv6' && (raw as ipaddr.IPv6).isIPv4MappedAddress() && n >= 96) return [(raw as ipaddr.IPv6).toIPv4Address(), n - 96];
  return [raw, n];
}

const PRIVATE_RANGES = new Set(['private', 'loopback', 'linkLocal', 'uniqueLocal', 'carrierGradeNat']);

export function createClientAddressResolver(options: ClientAddressOptions): (peer: string, forwardedFor: string) => ClientAddress {
  const trusted = options.trustedProxies.map(parseCidr);
  const isTrusted = (a: Parsed) => trusted.some(([net, bits]) => net.kind() === a.kind() && a.match(net, bits));
  const warned = new Set<string>();

  /** The key of a client address: the address itself, or its IPv6 network. */
  function keyOf(a: Parsed): string {
    if (a.kind() === 'ipv4' || options.ipv6Prefix >= 128) return a.toString();
    const bytes = a.toByteArray();
    for (let bit = options.ipv6Prefix; bit < 128; bit++) bytes[bit >> 3]! &= ~(0x80 >> (bit & 7));
    return `${ipaddr.fromByteArray(bytes).toString()}/${options.ipv6Prefix}`;
  }

  // The peer is resolved on every upgrade; clients mostly come back from the same few addresses, so
  // what a peer resolves to by itself (parsed, trusted or not, its key) is kept, a bounded number of them.
  interface Peer {
    readonly parsed: Parsed;
    readonly trusted: boolean;
    /** What the peer is when its X-Forwarded-For does not count (untrusted), or null when it is a proxy of ours. */
    readonly alone: ClientAddress;
  }
  const peers = new Map<string, Peer | null>();
  function peerOf(text: string): Peer | null {
    let peer = peers.get(text);
    if (peer === undefined) {
      if (peers.size >= 10_000) peers.clear();
      const parsed = parseAddress(text);
      const trustedPeer = parsed !== null && trusted.length > 0 && isTrusted(parsed);
      peer = parsed && { parsed, trusted: trustedPeer, alone: trustedPeer ? { key: null, address: parsed.toString() } : { key: keyOf(parsed), address: parsed.toString() } };
      peers.set(text, peer);
    }
    return peer;
  }

  return (peerText, forwardedFor) => {
    const known = peerOf(peerText);
    // uWS always gives an address; a peer we cannot read still counts, under its own text.
    if (!known) return { key: peerText, address: peerText };
    const peer = known.parsed;
    if (!known.trusted) {
      if (forwardedFor && options.onUntrustedForwarder && !warned.has(known.alone.address) && warned.size < 100 && PRIVATE_RANGES.has(peer.range())) {
        warned.add(known.alone.address);
        options.onUntrustedForwarder(known.alone.address);
      }
      return known.alone;
    }
    if (!forwardedFor) return known.alone;
    const hops = forwardedFor.split(',');
    let nearest = peer;
    for (let i = hops.length - 1; i >= 0; i--) {
      const text = hops[i]!.trim();
      if (text === '') continue;
      const hop = parseAddress(text);
      if (!hop) return { key: UNPARSABLE_CLIENT, address: UNPARSABLE_CLIENT };
      if (!isTrusted(hop)) return { key: keyOf(hop), address: hop.toString() };
      nearest = hop;
    }
    // Only proxies of ours in the chain: a request one of them made itself.
    return { key: null, address: nearest.toString() };
  };
}
