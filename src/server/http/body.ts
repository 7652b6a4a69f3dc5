/**
 * Request-edge helpers: a bounded body reader, JSON parsing that answers 400 rather than
 * throwing, and a constant-time bearer-token check.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { BadRequestError, UnauthorizedError } from '../../shared/errors.ts';
import { PayloadTooLargeError } from './errors.ts';

/**
 * Reads the whole body, refusing more than `limitBytes` (by Content-Length up front, and
 * by counting as it streams, for chunked bodies). Never buffers more than the limit.
 */
export function readBody(req: IncomingMessage, limitBytes: number): Promise<Buffer> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limitBytes) {
    req.resume();
    return Promise.reject(new PayloadTooLargeError(limitBytes));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    req.on('data', (chunk: Buffer) => {
      if (done) return;
      size += chunk.length;
      if (size > limitBytes) {
        done = true;
        chunks.length = 0;
        // Stop buffering; drain the rest so the answer can still be written.
        req.resume();
        reject(new PayloadTooLargeError(limitBytes));
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (done) return;
      done = true;
      resolve(Buffer.concat(chunks, size));
    });
    req.on('error', (err) => {
      if (done) return;
      done = true;
      reject(new BadRequestError(`request body could not be read: ${err.message}`, { cause: err }));
    });
    req.on('aborted', () => {
      if (done) return;
      done = true;
      reject(new BadRequestError('request aborted'));
    });
  });
}

/**
 * Parses a JSON object body. An empty body is `{}`. The Content-Type is not insisted on
 * (curl's -d sends form-urlencoded): a body that parses as a JSON object is accepted,
 * anything else → BadRequestError.
 */
export function parseJsonObject(body: Buffer): Record<string, unknown> {
  if (body.length === 0) return {};
  let v: unknown;
  try {
    v = JSON.parse(body.toString('utf8'));
  } catch (err) {
    throw new BadRequestError(`malformed JSON body: ${(err as Error).message}`, { cause: err });
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v))
    throw new BadRequestError('the JSON body must be an object');
  return v as Record<string, unknown>;
}

export function isFormBody(req: IncomingMessage): boolean {
  return (
    (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase() ===
    'application/x-www-form-urlencoded'
  );
}

/** Upper bound on fields of a form body. */
export const MAX_FORM_FIELDS = 32;

/** Parses an application/x-www-form-urlencoded body (Seata's clients send the watch so). */
export function parseForm(body: Buffer): Record<string, string> {
  const params = new URLSearchParams(body.toString('utf8'));
  const out: Record<string, string> = {};
  let n = 0;
  for (const [k, v] of params) {
    if (++n > MAX_FORM_FIELDS)
      throw new BadRequestError(`form body has more than ${MAX_FORM_FIELDS} fields`);
    out[k] = v;
  }
  return out;
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

/**
 * Checks `Authorization: Bearer <token>` against the configured token in constant time
 * (both sides hashed to the same length first, so neither length nor content leaks).
 * No configured token → every authenticated endpoint is refused.
 */
export function requireBearer(req: IncomingMessage, configured: string | null): void {
  if (configured === null) {
    throw new UnauthorizedError(
      'this node has no http.authToken configured; authenticated endpoints are disabled',
    );
  }
  const header = req.headers.authorization;
  const m = typeof header === 'string' ? /^Bearer[ ]+(\S+)\s*$/i.exec(header) : null;
  const given = m?.[1] ?? '';
  const ok = timingSafeEqual(digest(given), digest(configured));
  if (!m || !ok) throw new UnauthorizedError();
}
