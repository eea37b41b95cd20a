import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { membershipOf, membershipsOf, putMembership, removeMembership, roomCount, type Connection, type Membership } from '../src/connections/connection.js';

// Only `rooms` is read by these functions; the rest of a Connection does not matter here.
const newConn = () => ({ rooms: null }) as unknown as Connection;

describe("a socket's memberships (one held inline, more in an array)", () => {
  it('behaves as a map from project to its latest membership through any sequence of joins and leaves', () => {
    const guids = ['a', 'b', 'c', 'd'];
    const op = fc.record({ put: fc.boolean(), guid: fc.constantFrom(...guids) });
    fc.assert(
      fc.property(fc.array(op, { maxLength: 40 }), (ops) => {
        const conn = newConn();
        const model = new Map<string, Membership>();
        for (const { put, guid } of ops) {
          if (put) {
            const m: Membership = { guid, joined: false, shard: 0 };
            expect(putMembership(conn, m)).toBe(model.get(guid));
            model.set(guid, m);
          } else {
            const m = membershipOf(conn, guid);
            expect(m).toBe(model.get(guid));
            if (m) removeMembership(conn, m);
            model.delete(guid);
          }
          expect(roomCount(conn)).toBe(model.size);
          expect(new Set(membershipsOf(conn))).toEqual(new Set(model.values()));
          for (const g of guids) expect(membershipOf(conn, g)).toBe(model.get(g));
          // the compact forms: nothing for no room, the membership itself for one
          if (model.size === 0) expect(conn.rooms).toBeNull();
          if (model.size === 1) expect(conn.rooms).toBe([...model.values()][0]);
        }
      }),
    );
  });

  it('removing a superseded membership leaves the current one in place', () => {
    const conn = newConn();
    const old: Membership = { guid: 'a', joined: true, shard: 0 };
    const current: Membership = { guid: 'a', joined: false, shard: 1 };
    putMembership(conn, old);
    expect(putMembership(conn, current)).toBe(old);
    removeMembership(conn, old);
    expect(membershipOf(conn, 'a')).toBe(current);
  });

  it('membershipsOf is a snapshot: leaving rooms while iterating it visits every room once', () => {
    const conn = newConn();
    for (const guid of ['a', 'b', 'c']) putMembership(conn, { guid, joined: true, shard: 0 });
    const seen: string[] = [];
    for (const m of membershipsOf(conn)) {
      seen.push(m.guid);
      removeMembership(conn, m);
    }
    expect(seen).toEqual(['a', 'b', 'c']);
    expect(conn.rooms).toBeNull();
  });
});
