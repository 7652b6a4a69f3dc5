/** Query-parameter parsing of the console's API: strict, bounded, typed errors. */
import { BadRequestError } from '../../shared/errors.ts';
import { GlobalStatus, isGlobalStatus } from '../../shared/tc-vocabulary.ts';
import { strictQuery } from '../http/query.ts';

/** Characters of a text filter at most. */
export const MAX_FILTER_CHARS = 256;

/** The query's parameters; an unknown or repeated one is refused. Empty values are absent. */
export function queryOf(url: URL, allowed: readonly string[]): Record<string, string | undefined> {
  return strictQuery(url, allowed, { dropEmpty: true });
}

export function textParam(name: string, v: string | undefined): string | null {
  if (v === undefined) return null;
  if (v.length > MAX_FILTER_CHARS)
    throw new BadRequestError(`${name} must be at most ${MAX_FILTER_CHARS} characters`);
  return v;
}

export function intParam(name: string, v: string | undefined, min: number, max: number): number {
  if (v === undefined) return min;
  if (!/^\d{1,15}$/.test(v)) throw new BadRequestError(`${name} must be a whole number`);
  const n = Number(v);
  if (n < min || n > max) throw new BadRequestError(`${name} must be ${min}..${max}, got ${n}`);
  return n;
}

export function optIntParam(
  name: string,
  v: string | undefined,
  min: number,
  max: number,
): number | null {
  return v === undefined ? null : intParam(name, v, min, max);
}

export function boolParam(name: string, v: string | undefined): boolean {
  if (v === undefined || v === 'false' || v === '0') return false;
  if (v === 'true' || v === '1') return true;
  throw new BadRequestError(`${name} must be true or false`);
}

export function statusParam(v: string | undefined): GlobalStatus | null {
  if (v === undefined) return null;
  if (!isGlobalStatus(v) || v === GlobalStatus.Unknown)
    throw new BadRequestError(`status ${JSON.stringify(v.slice(0, 64))} is not a global status`);
  return v;
}
