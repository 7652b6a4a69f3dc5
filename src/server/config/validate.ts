/**
 * Small validators for the config loader. Every failure is a ConfigError naming the dotted
 * key (`raft.peers[1].raftPort`), so an operator sees exactly which line to fix.
 */
import { ConfigError } from '../../shared/errors.ts';
import { isNodeId, NODE_ID_HINT, type NodeId } from '../../shared/ids.ts';

export type Obj = Record<string, unknown>;

export function isPlainObject(x: unknown): x is Obj {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

export function join(path: string, key: string): string {
  return path === '' ? key : `${path}.${key}`;
}

/** A section that must be a mapping if present; absent → empty mapping. */
export function section(parent: Obj, key: string, path: string): Obj {
  const v = parent[key];
  if (v === undefined || v === null) return {};
  if (!isPlainObject(v))
    throw new ConfigError(join(path, key), `must be a mapping, got ${describe(v)}`);
  return v;
}

/** Refuses keys the schema does not know: a typo must not silently fall back to a default. */
export function noUnknownKeys(o: Obj, allowed: readonly string[], path: string): void {
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k)) {
      throw new ConfigError(join(path, k), `unknown key (allowed here: ${allowed.join(', ')})`);
    }
  }
}

export function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'string')
    return `the string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)}`;
  return `${typeof v} ${String(v)}`;
}

export function str(
  o: Obj,
  key: string,
  path: string,
  opts: {
    default?: string;
    pattern?: RegExp;
    patternHint?: string;
    minLength?: number;
    maxLength?: number;
  } = {},
): string {
  const v = o[key];
  const at = join(path, key);
  if (v === undefined || v === null) {
    if (opts.default !== undefined) return opts.default;
    throw new ConfigError(at, 'is required');
  }
  if (typeof v !== 'string') throw new ConfigError(at, `must be a string, got ${describe(v)}`);
  if (opts.minLength !== undefined && v.length < opts.minLength)
    throw new ConfigError(at, `must be at least ${opts.minLength} characters`);
  if (opts.maxLength !== undefined && v.length > opts.maxLength)
    throw new ConfigError(at, `must be at most ${opts.maxLength} characters`);
  if (opts.pattern && !opts.pattern.test(v))
    throw new ConfigError(
      at,
      `${JSON.stringify(v)} is not valid: ${opts.patternHint ?? `must match ${opts.pattern}`}`,
    );
  return v;
}

/** A node id (src/shared/ids.ts), branded; ConfigError unless it is one. */
export function nodeIdField(o: Obj, key: string, path: string): NodeId {
  const v = str(o, key, path);
  if (isNodeId(v)) return v;
  throw new ConfigError(join(path, key), `${JSON.stringify(v)} is not valid: ${NODE_ID_HINT}`);
}

export function optStr(
  o: Obj,
  key: string,
  path: string,
  opts: { minLength?: number; maxLength?: number } = {},
): string | null {
  const v = o[key];
  if (v === undefined || v === null || v === '') return null;
  return str(o, key, path, opts);
}

export function int(
  o: Obj,
  key: string,
  path: string,
  opts: { default?: number; min: number; max: number },
): number {
  const v = o[key];
  const at = join(path, key);
  if (v === undefined || v === null) {
    if (opts.default !== undefined) return opts.default;
    throw new ConfigError(at, 'is required');
  }
  if (typeof v !== 'number' || !Number.isInteger(v))
    throw new ConfigError(at, `must be an integer, got ${describe(v)}`);
  if (v < opts.min || v > opts.max)
    throw new ConfigError(at, `must be between ${opts.min} and ${opts.max}, got ${v}`);
  return v;
}

export function port(o: Obj, key: string, path: string, def?: number): number {
  return int(o, key, path, { ...(def === undefined ? {} : { default: def }), min: 1, max: 65535 });
}

export function bool(o: Obj, key: string, path: string, def: boolean): boolean {
  const v = o[key];
  if (v === undefined || v === null) return def;
  if (typeof v !== 'boolean')
    throw new ConfigError(join(path, key), `must be true or false, got ${describe(v)}`);
  return v;
}

export function oneOf<T extends string>(
  o: Obj,
  key: string,
  path: string,
  values: readonly T[],
  def: T,
): T {
  const v = o[key];
  if (v === undefined || v === null) return def;
  if (typeof v !== 'string' || !(values as readonly string[]).includes(v)) {
    throw new ConfigError(
      join(path, key),
      `must be one of ${values.join(', ')}, got ${describe(v)}`,
    );
  }
  return v as T;
}

/** A host name or an IPv4/IPv6 literal (no scheme, no port). */
export const HOST_PATTERN =
  /^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})?)*|\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f:]+)$/;
export const HOST_HINT = 'a host name or an IP address, without scheme or port';
