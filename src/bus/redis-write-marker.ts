import { ReplyError, type Redis } from 'ioredis';

/**
 * A per-master marker that changes whenever a stream on that master may have got entries: the
 * `calls` counters of INFO commandstats for every command that can put entries into a stream key.
 * Redis counts a command run inside a script, a function or MULTI as a call of that command, so a
 * producer's XADD moves the marker whichever way it was sent. One command per master, whatever the
 * number of watched keys: the resync compares it with the marker read before its last sweep of that
 * master, and sweeps the master's watched streams only when it moved (docs/redis-wakeup.md).
 *
 * Why these commands: an entry appears in a stream only through XADD, or by the whole key being
 * replaced (RESTORE, which a slot migration's MIGRATE runs on the target as RESTORE-ASKING; RENAME,
 * COPY, MOVE, SWAPDB). CONFIG RESETSTAT zeroes the counters: it is in the marker so that a reset
 * followed by as many XADDs as before still reads as a change. A restarted Redis also starts from
 * zero, but our subscriber connection to it dropped, and every resubscribe re-reads its keys.
 */
const STREAM_WRITERS = ['xadd', 'restore', 'restore-asking', 'rename', 'renamenx', 'copy', 'move', 'swapdb', 'config|resetstat'] as const;

/** The marker from an `INFO commandstats` reply: `name=calls` for each stream writer, 0 when never called. */
export function writeMarkerOf(commandstats: string): string {
  const calls = new Map<string, string>();
  for (const m of commandstats.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) calls.set(m[1]!, m[2]!);
  return STREAM_WRITERS.map((name) => `${name}=${calls.get(name) ?? '0'}`).join(',');
}

/**
 * Reads the master's marker; null when Redis refuses INFO (an ACL, a renamed command), in which
 * case the caller sweeps every time, as without a marker. Connection problems reject.
 */
export async function readWriteMarker(conn: Redis): Promise<string | null> {
  try {
    return writeMarkerOf(await conn.info('commandstats'));
  } catch (err) {
    if (err instanceof ReplyError) return null;
    throw err;
  }
}
