// Event ids are Redis Stream ids "<ms>-<seq>" and must be compared numerically: as plain strings
// "999-0" > "1000-0". Comparing digit strings by length first, then lexically, is exact for any
// size (no Number precision limit, no BigInt needed).

const ID_RE = /^0*(\d+)-0*(\d+)$/;

export function isEventId(id: unknown): id is string {
  return typeof id === 'string' && ID_RE.test(id);
}

function cmpDigits(a: string, b: string): number {
  if (a.length !== b.length) return a.length - b.length;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Negative if a < b, 0 if equal, positive if a > b. Malformed ids compare as "0-0". */
export function compareEventIds(a: string, b: string): number {
  const ma = ID_RE.exec(a);
  const mb = ID_RE.exec(b);
  const [ams, aseq] = ma ? [ma[1]!, ma[2]!] : ['0', '0'];
  const [bms, bseq] = mb ? [mb[1]!, mb[2]!] : ['0', '0'];
  return cmpDigits(ams, bms) || cmpDigits(aseq, bseq);
}
