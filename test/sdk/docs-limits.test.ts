/**
 * The limits tables of docs/sdk.md and docs/sdk-fence.md against the constants they
 * document (src/client/sdk/limits.ts, src/client/tc/limits.ts, src/client/fence/limits.ts,
 * and the few in context.ts and the propagation helpers). A row is `| \`NAME\` | value | … |`;
 * in the tables headed `| constant | value |`, the value is read as a quantity ("60 000 ms", "5 s",
 * "24 h 10 min", "16 KiB", "1 024", "2^64 − 1", `text`) and must equal the constant. Every constant
 * of the three limits modules must have a row: the docs cannot fall behind the code again.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import * as context from '../../src/client/context.ts';
import * as fenceLimits from '../../src/client/fence/limits.ts';
import * as incoming from '../../src/client/propagation/incoming.ts';
import * as sdkLimits from '../../src/client/sdk/limits.ts';
import * as tcLimits from '../../src/client/tc/limits.ts';
import { REPO_ROOT } from '../ops/helpers.ts';

const DOCS = ['docs/sdk.md', 'docs/sdk-fence.md'];

/** Every documented constant, by name (a name defined twice must agree). */
const CONSTANTS: Record<string, unknown> = {
  MAX_XID_CHARS: context.MAX_XID_CHARS,
  MAX_LOGGED_HEADER_CHARS: incoming.MAX_LOGGED_HEADER_CHARS,
  MAX_XID_VALUES: incoming.MAX_XID_VALUES,
  ...fenceLimits,
  ...tcLimits,
  ...sdkLimits,
};
const MUST_BE_DOCUMENTED = [sdkLimits, tcLimits, fenceLimits].flatMap((m) => Object.keys(m));

const UNITS: Record<string, number> = {
  ms: 1,
  s: 1_000,
  min: 60_000,
  h: 3_600_000,
  day: 86_400_000,
  days: 86_400_000,
  B: 1,
  bytes: 1,
  KiB: 1024,
  MiB: 1024 * 1024,
};

/** A documented value as a number, bigint or string. */
export function parseDocValue(text: string): number | bigint | string {
  const cell = text.trim();
  const code = /^`([^`]*)`$/.exec(cell);
  if (code) return code[1]!;
  const power = /^2\^(\d+)\s*[−-]\s*(\d+)$/.exec(cell);
  if (power) return (1n << BigInt(power[1]!)) - BigInt(power[2]!);
  // "24 h 10 min", "60 000 ms", "1 024" (thin or plain spaces group digits)
  const parts = cell.replace(/(\d)[\s\u202f\u00a0](?=\d{3}\b)/g, '$1').split(/\s+/);
  let total = 0;
  for (let i = 0; i < parts.length; i++) {
    const n = Number(parts[i]);
    if (!Number.isFinite(n)) throw new Error(`cannot read "${cell}" as a value`);
    const unit = parts[i + 1];
    if (unit !== undefined && unit in UNITS) {
      total += n * UNITS[unit]!;
      i++;
    } else if (unit === undefined) total += n;
    else throw new Error(`unknown unit "${unit}" in "${cell}"`);
  }
  return total;
}

function documentedRows(): { doc: string; name: string; value: string }[] {
  const rows: { doc: string; name: string; value: string }[] = [];
  for (const doc of DOCS) {
    const text = readFileSync(resolve(REPO_ROOT, doc), 'utf8');
    // Rows of the tables whose header reads "| constant | value | …".
    let inLimits = false;
    for (const line of text.split('\n')) {
      if (!line.startsWith('|')) inLimits = false;
      else if (/^\|\s*constant\s*\|\s*value\s*\|/.test(line)) inLimits = true;
      const m = /^\|\s*`([A-Z][A-Z0-9_]+)`\s*\|\s*([^|]+?)\s*\|/.exec(line);
      if (inLimits && m) rows.push({ doc, name: m[1]!, value: m[2]! });
    }
  }
  return rows;
}

describe('the docs’ limits tables match the code', () => {
  const rows = documentedRows();

  it('the value parser reads the forms the tables use', () => {
    expect(parseDocValue('60 000 ms')).toBe(60_000);
    expect(parseDocValue('24 h 10 min')).toBe(87_000_000);
    expect(parseDocValue('16 KiB')).toBe(16_384);
    expect(parseDocValue('1 024')).toBe(1_024);
    expect(parseDocValue('2^64 − 1')).toBe((1n << 64n) - 1n);
    expect(parseDocValue('`concord_fence`')).toBe('concord_fence');
    expect(() => parseDocValue('ten seconds')).toThrow();
  });

  it.each(rows.map((r) => [`${r.doc}: ${r.name} = ${r.value}`, r] as const))('%s', (_, row) => {
    expect(Object.hasOwn(CONSTANTS, row.name), `${row.name} is not a constant of the SDK`).toBe(
      true,
    );
    expect(parseDocValue(row.value)).toEqual(CONSTANTS[row.name]);
  });

  it('every constant of the SDK, TC-client and fence limits has a row', () => {
    const documented = new Set(rows.map((r) => r.name));
    expect(MUST_BE_DOCUMENTED.filter((name) => !documented.has(name))).toEqual([]);
  });
});
