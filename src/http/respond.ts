import type { HttpRequest, HttpResponse } from 'uWebSockets.js';
import { ErrorCodes, type ErrorCode } from '../errors.js';
import { statusLine } from '../uws.js';

/** Guards a response that may be answered after an await: uWS forbids touching an aborted one. */
export interface PendingResponse {
  readonly res: HttpResponse;
  aborted: boolean;
  /** Reading from the connection is paused until this response is written (see holdReads). */
  paused: boolean;
}

export function pending(res: HttpResponse): PendingResponse {
  const p: PendingResponse = { res, aborted: false, paused: false };
  res.onAborted(() => {
    p.aborted = true;
  });
  return p;
}

export function sendJson(p: PendingResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (p.aborted) return;
  p.res.cork(() => {
    // Before end(): after it the response must not be touched.
    if (p.paused) p.res.resume();
    p.res.writeStatus(statusLine(status)).writeHeader('content-type', 'application/json');
    for (const [k, v] of Object.entries(headers)) p.res.writeHeader(k, v);
    p.res.end(JSON.stringify(body));
  });
}

export function sendError(p: PendingResponse, code: ErrorCode, message: string = ErrorCodes[code].message, headers: Record<string, string> = {}): void {
  sendJson(p, ErrorCodes[code].http, { error: { code, message } }, headers);
}

/**
 * For a request answered asynchronously: stops reading from its connection until the answer is
 * written. uWS answers pipelined requests only synchronously; a request that arrives while an
 * earlier one on the same connection is still unanswered makes uWS close the connection with no
 * answer to either (uWebSockets' HttpContext: "denying async pipelining"). Paused, a request sent
 * behind this one waits in the kernel and is read after our answer. (One that arrived in the same
 * read as this one is parsed at once all the same: see settledRead.)
 */
export function holdReads(p: PendingResponse): void {
  if (p.aborted || p.paused) return;
  p.paused = true;
  p.res.pause();
}

/**
 * Resolves once uWS has parsed the rest of the read that carried this request, with false if that
 * closed the connection (a pipelined request behind this one). Call it before any side effect of a
 * request answered asynchronously: a request that will get no answer must not have changed anything,
 * or a client retrying it (a POST with no answer) would append twice.
 */
export function settledRead(p: PendingResponse): Promise<boolean> {
  return new Promise((resolve) => setImmediate(() => resolve(!p.aborted)));
}

/** Collects a request body up to `limit` bytes; resolves null if the client aborted. */
export function readBody(p: PendingResponse, limit: number): Promise<Buffer | 'too_large' | null> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    p.res.onData((chunk, isLast) => {
      if (!over) {
        size += chunk.byteLength;
        // uWS reuses the chunk's memory after this callback returns: copy it.
        if (size > limit) over = true;
        else chunks.push(Buffer.from(chunk.slice(0)));
      }
      if (isLast) {
        // The answer will come after an await: no further request is read until it is written.
        holdReads(p);
        resolve(over ? 'too_large' : Buffer.concat(chunks));
      }
    });
    p.res.onAborted(() => {
      p.aborted = true;
      resolve(null);
    });
  });
}

/**
 * Refuses request framing two parsers could read differently (request smuggling behind a proxy):
 * Content-Length given twice (even with equal values), Content-Length beside Transfer-Encoding, a
 * Transfer-Encoding other than plain `chunked`. uWS exposes every header line through forEach,
 * duplicates included, while getHeader shows only the first. Also requires a JSON body's type.
 */
export function framingProblem(req: HttpRequest, needsJsonBody: boolean): { code: ErrorCode; message: string } | null {
  let lengths = 0;
  let encodings = 0;
  let encoding = '';
  let contentType = '';
  req.forEach((name, value) => {
    if (name === 'content-length') lengths++;
    else if (name === 'transfer-encoding') (encodings++, (encoding = value));
    else if (name === 'content-type') contentType = value;
  });
  if (lengths > 1) return { code: 'MALFORMED_REQUEST', message: 'Content-Length given more than once' };
  if (encodings > 1 || (encodings === 1 && encoding.trim().toLowerCase() !== 'chunked')) return { code: 'MALFORMED_REQUEST', message: 'only a single Transfer-Encoding: chunked is accepted' };
  if (lengths && encodings) return { code: 'MALFORMED_REQUEST', message: 'Content-Length and Transfer-Encoding together' };
  if (needsJsonBody && contentType.split(';')[0]!.trim().toLowerCase() !== 'application/json') {
    return { code: 'UNSUPPORTED_MEDIA_TYPE', message: 'send Content-Type: application/json' };
  }
  return null;
}
