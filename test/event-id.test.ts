import { describe, expect, it } from 'vitest';
import { compareIds, isEventId, nextEventId } from '../src/protocol/event-id.js';

describe('event ids', () => {
  it('compares ids numerically, part by part', () => {
    const sorted = ['0-0', '0-1', '1-0', '9-5', '10-0', '999-99', '1000-0', '1700000000000-0', '1700000000000-2', '1700000000000-10', '1700000000001-0'];
    for (let i = 0; i < sorted.length; i++) {
      for (let j = 0; j < sorted.length; j++) {
        expect(Math.sign(compareIds(sorted[i]!, sorted[j]!)), `${sorted[i]} vs ${sorted[j]}`).toBe(Math.sign(i - j));
      }
    }
  });

  it('accepts only canonical ids', () => {
    for (const ok of ['0-0', '1700000000000-0', '123456789012345-123456789012345']) expect(isEventId(ok)).toBe(true);
    for (const bad of ['', '1', '-1', '01-0', '1-01', '1-', 'a-0', '1-0-0', '1234567890123456-0', ' 1-0', 1]) expect(isEventId(bad)).toBe(false);
  });

  it('mints ids that never go backwards', () => {
    let id = '0-0';
    for (let i = 0; i < 1000; i++) {
      const next = nextEventId(id);
      expect(compareIds(next, id)).toBeGreaterThan(0);
      id = next;
    }
    expect(compareIds(nextEventId('99999999999999-7'), '99999999999999-7')).toBeGreaterThan(0);
    expect(nextEventId('99999999999999-7')).toBe('99999999999999-8');
  });
});
