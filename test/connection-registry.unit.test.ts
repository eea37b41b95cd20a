// The thread's connection registry (src/connections/registry.ts): every socket, and each user's.
import { describe, expect, it } from 'vitest';
import type { Connection } from '../src/connections/connection.js';
import { createConnectionRegistry } from '../src/connections/registry.js';

const conn = (id: number, userId: string) => ({ id, principal: { userId } }) as unknown as Connection;

describe('connection registry', () => {
  it("keeps each user's sockets through adds and removes in any order, one or many, and hands out copies", () => {
    const r = createConnectionRegistry();
    const [a1, a2, a3, b1] = [conn(1, 'a'), conn(2, 'a'), conn(3, 'a'), conn(4, 'b')];
    expect(r.ofUser('a')).toEqual([]);
    r.add(a1);
    r.add(a1); // twice is once
    r.add(b1);
    expect(r.ofUser('a')).toEqual([a1]);
    r.add(a2);
    r.add(a3);
    expect(new Set(r.ofUser('a'))).toEqual(new Set([a1, a2, a3]));
    expect(r.size).toBe(4);
    // A copy: closing the sockets while iterating it cannot disturb it.
    const mine = r.ofUser('a');
    for (const c of mine) r.remove(c);
    expect(mine).toHaveLength(3);
    expect(r.ofUser('a')).toEqual([]);
    r.add(a2);
    r.add(a3);
    r.remove(a2);
    expect(r.ofUser('a')).toEqual([a3]);
    r.remove(a2); // not there: nothing happens
    r.remove(a3);
    expect(r.ofUser('a')).toEqual([]);
    expect(r.ofUser('b')).toEqual([b1]);
    expect([...r.all()]).toEqual([b1]);
    expect(r.size).toBe(1);
  });
});
