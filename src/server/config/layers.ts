/**
 * Where configuration values come from, and in what order (later wins):
 *
 *   default  <  file (YAML, optional)  <  environment (CONCORD_<KEY>)  <  flag (--set, --log-level)
 *
 * The file's string values may refer to environment variables: `${VAR}` (an error when
 * VAR is unset), `${VAR:-default}` (the default when VAR is unset or empty); `$${` is a
 * literal `${`. Text values (environment, flags, substitutions) are read as their key's
 * type (keys.ts); the validator then checks them like file values, and an error names the
 * variable or flag the value came from.
 */
import { parse as parseYaml } from 'yaml';
import { ConfigError } from '../../shared/errors.ts';
import {
  CONFIG_KEYS,
  CONFIG_SECTIONS,
  ENV_ALIASES,
  envNameOf,
  typeOfKey,
  type ConfigKey,
  type KeyType,
} from './keys.ts';
import { isPlainObject, type Obj } from './validate.ts';

/** Where a value came from, for error messages: `CONCORD_SERVER_HTTP_PORT`, `--set raft.tickMs`. */
export type Sources = Map<string, string>;

/** Longest text value accepted from the environment or a flag. */
export const MAX_TEXT_VALUE_CHARS = 64 * 1024;

/** A text value as its key's type; text that does not fit stays text (the validator names it). */
export function fromText(
  key: string,
  text: string,
  type: KeyType | null = typeOfKey(key),
): unknown {
  if (text.length > MAX_TEXT_VALUE_CHARS)
    throw new ConfigError(key, `the value is longer than ${MAX_TEXT_VALUE_CHARS} characters`);
  switch (type) {
    case 'int':
      return /^-?\d{1,16}$/.test(text.trim()) ? Number(text.trim()) : text;
    case 'number':
      return /^-?\d+(\.\d+)?$/.test(text.trim()) ? Number(text.trim()) : text;
    case 'bool': {
      const t = text.trim().toLowerCase();
      if (t === 'true' || t === '1' || t === 'yes' || t === 'on') return true;
      if (t === 'false' || t === '0' || t === 'no' || t === 'off') return false;
      return text;
    }
    case 'peers':
      return peersFromText(key, text);
    default:
      return text;
  }
}

/**
 * `raft.peers` as text: `node1@127.0.0.1:9091:8091:7091,node2@…` (id@host:raftPort:tcPort:httpPort,
 * IPv6 as `[::1]`), or a YAML/JSON list of mappings.
 */
export function peersFromText(key: string, text: string): unknown {
  const t = text.trim();
  if (t === '') return [];
  if (t.startsWith('[')) {
    try {
      return parseYaml(t) as unknown;
    } catch (err) {
      throw new ConfigError(key, `is not a valid YAML/JSON list: ${(err as Error).message}`);
    }
  }
  return t.split(',').map((entry, i) => {
    const m = /^([^@\s]+)@(\[[^\]]+\]|[^:\s]+):(\d+):(\d+):(\d+)$/.exec(entry.trim());
    if (!m)
      throw new ConfigError(
        `${key}[${i}]`,
        `${JSON.stringify(entry.slice(0, 80))} must be id@host:raftPort:tcPort:httpPort`,
      );
    const host = m[2]!.startsWith('[') ? m[2]!.slice(1, -1) : m[2]!;
    return {
      nodeId: m[1],
      host,
      raftPort: Number(m[3]),
      tcPort: Number(m[4]),
      httpPort: Number(m[5]),
    };
  });
}

// ------------------------------------------------------------------ ${VAR} in the file

const REF = /\$\$\{|\$\{([^}]*)\}|\$\{/g;
const VAR_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** One string with its `${…}` references replaced; `changed` says whether it held any. */
export function substitute(
  key: string,
  s: string,
  env: NodeJS.ProcessEnv,
): { value: string; changed: boolean } {
  let changed = false;
  const value = s.replace(REF, (match, inner: string | undefined) => {
    if (match === '$${') {
      changed = true;
      return '${';
    }
    if (inner === undefined)
      throw new ConfigError(key, `has an unclosed "\${" (write $\${ for a literal one)`);
    changed = true;
    const sep = inner.indexOf(':-');
    const name = sep < 0 ? inner : inner.slice(0, sep);
    if (!VAR_NAME.test(name))
      throw new ConfigError(
        key,
        `\${${inner.slice(0, 40)}} is not a reference: write \${VAR} or \${VAR:-default}`,
      );
    const v = env[name];
    if (sep >= 0) return v === undefined || v === '' ? inner.slice(sep + 2) : v;
    if (v === undefined)
      throw new ConfigError(
        key,
        `refers to \${${name}}, which is not set (give a default: \${${name}:-value})`,
      );
    return v;
  });
  return { value, changed };
}

/** The parsed file with every string's references replaced, each read as its key's type. */
export function substituteTree(node: unknown, env: NodeJS.ProcessEnv, path = ''): unknown {
  if (typeof node === 'string') {
    const { value, changed } = substitute(path || '(root)', node, env);
    if (!changed) return node;
    // An emptied value is absent (the default applies): `authToken: ${TOKEN:-}`.
    if (value === '' && typeOfKey(path) !== 'string') return undefined;
    return fromText(path, value);
  }
  if (Array.isArray(node)) return node.map((v, i) => substituteTree(v, env, `${path}[${i}]`));
  if (isPlainObject(node)) {
    const out: Obj = {};
    for (const [k, v] of Object.entries(node))
      out[k] = substituteTree(v, env, path === '' ? k : `${path}.${k}`);
    return out;
  }
  return node;
}

// ------------------------------------------------------------------ environment and flags

/** Sets a dotted key in a raw config, creating its sections. */
export function setKey(raw: Obj, key: string, value: unknown): void {
  const parts = key.split('.');
  let at: Obj = raw;
  for (const p of parts.slice(0, -1)) {
    const next = at[p];
    if (!isPlainObject(next)) at[p] = {};
    at = at[p] as Obj;
  }
  at[parts.at(-1)!] = value;
}

/** Reads a dotted key of a raw config (undefined when a section is missing). */
export function getKey(raw: Obj, key: string): unknown {
  let at: unknown = raw;
  for (const p of key.split('.')) {
    if (!isPlainObject(at)) return undefined;
    at = at[p];
  }
  return at;
}

/**
 * The environment's values over the raw config. Empty variables count as unset. A
 * `CONCORD_<SECTION>_…` variable that names no key is an error (a typo must not be ignored).
 */
export function applyEnv(raw: Obj, env: NodeJS.ProcessEnv, sources: Sources): void {
  const byEnv = new Map<string, ConfigKey>(
    (Object.keys(CONFIG_KEYS) as ConfigKey[]).map((k) => [envNameOf(k), k]),
  );
  const sectionPrefixes = CONFIG_SECTIONS.map((s) => `${envNameOf(s)}_`);
  for (const name of Object.keys(env).sort()) {
    if (!sectionPrefixes.some((p) => name.startsWith(p)) || byEnv.has(name)) continue;
    throw new ConfigError(
      name,
      `is not a configuration variable; each key's is CONCORD_ and the key in upper snake case (${suggest(name, [...byEnv.keys()])})`,
    );
  }
  for (const [name, key] of byEnv) {
    const text = env[name];
    if (text === undefined || text === '') continue;
    setKey(raw, key, fromText(key, text));
    sources.set(key, name);
  }
  // Aliases: only where the key's own variable is unset.
  for (const [alias, key] of Object.entries(ENV_ALIASES)) {
    const text = env[alias];
    if (text === undefined || text === '' || sources.has(key)) continue;
    if (key === 'store.db.url' && getKey(raw, 'store.mode') !== 'db') continue;
    setKey(raw, key, fromText(key, text));
    sources.set(key, alias);
  }
}

/** `key=value` of a `--set` flag. */
export function parseSetFlag(flag: string): { key: ConfigKey; text: string } {
  const eq = flag.indexOf('=');
  const key = eq < 0 ? flag : flag.slice(0, eq);
  if (eq < 0) throw new ConfigError(key, 'a --set flag must be key=value');
  if (!Object.hasOwn(CONFIG_KEYS, key))
    throw new ConfigError(
      key,
      `is not a configuration key (${suggest(key, Object.keys(CONFIG_KEYS))})`,
    );
  return { key: key as ConfigKey, text: flag.slice(eq + 1) };
}

/** Flag values over the raw config (they win over everything). */
export function applyFlags(
  raw: Obj,
  flags: ReadonlyArray<{ key: ConfigKey; text: string; flag: string }>,
  sources: Sources,
): void {
  for (const f of flags) {
    setKey(raw, f.key, fromText(f.key, f.text));
    sources.set(f.key, f.flag);
  }
}

/** An error for a key whose value came from the environment or a flag names where it came from. */
export function withSource(err: unknown, sources: Sources): unknown {
  if (!(err instanceof ConfigError)) return err;
  for (const [key, source] of sources) {
    if (err.key !== key && !err.key.startsWith(`${key}[`) && !err.key.startsWith(`${key}.`))
      continue;
    const prefix = `config key "${err.key}": `;
    const text = err.message.startsWith(prefix) ? err.message.slice(prefix.length) : err.message;
    return new ConfigError(err.key, `${text} (set by ${source})`, { cause: err });
  }
  return err;
}

/** The closest known name (same letters, or a few edits away), as a hint. */
function suggest(name: string, known: readonly string[]): string {
  const norm = (s: string) => s.toLowerCase().replace(/[^a-z0-9]/g, '');
  const n = norm(name);
  let best: { name: string; d: number } | null = null;
  for (const k of known) {
    const d = editDistance(n, norm(k));
    if (d <= 3 && (best === null || d < best.d)) best = { name: k, d };
  }
  return best ? `did you mean ${best.name}?` : 'see docs/operations.md';
}

/** Levenshtein distance, for short names. */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++)
      cur[j] = Math.min(
        prev[j]! + 1,
        cur[j - 1]! + 1,
        prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
    prev = cur;
  }
  return prev[b.length]!;
}
