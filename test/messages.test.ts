import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CODECS } from '../src/protocol/codec.js';
import { EVENT_TYPES } from '../src/protocol/messages.js';
import { envelopeJson, eventData, type ProjectEvent } from '../src/protocol/events.js';

describe('events that keep only their JSON', () => {
  it('eventData() reads back exactly the data spliced into the envelope, and both codecs encode the same envelope', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...EVENT_TYPES),
        fc.uuid(),
        fc.date({ min: new Date(0), max: new Date(8.64e15), noInvalidDate: true }),
        fc.tuple(fc.nat(), fc.nat()),
        fc.dictionary(fc.string(), fc.jsonValue()),
        (type, projectGuid, date, [ms, seq], data) => {
          const head = { id: `${ms}-${seq}`, projectGuid, type, timestamp: date.toISOString() };
          const lean: ProjectEvent = { ...head, json: envelopeJson(head, JSON.stringify(data)) };
          const full: ProjectEvent = { ...head, data };
          expect(eventData(lean)).toEqual(data);
          expect(JSON.parse(CODECS.json.encodeEvent(lean) as string)).toEqual(JSON.parse(CODECS.json.encodeEvent(full) as string));
          expect(CODECS.msgpack.encodeEvent(lean)).toEqual(CODECS.msgpack.encodeEvent({ ...full }));
        },
      ),
      { numRuns: 300, seed: 3 },
    );
  });
});
