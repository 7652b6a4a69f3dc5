/** Parsers of the benchmarks' command-line options (commander's `.option(…, parser)`). */

/** A parser of a comma-separated list of `allowed` values. */
export const list =
  <T extends string>(allowed: readonly T[], what: string) =>
  (v: string): T[] => {
    const items = v
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
    for (const i of items)
      if (!allowed.includes(i as T))
        throw new Error(`unknown ${what} ${i} (one of ${allowed.join(', ')})`);
    return items as T[];
  };

/** A parser of a positive integer. */
export const positive =
  (what: string) =>
  (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1)
      throw new Error(`${what} must be a positive integer, got ${v}`);
    return n;
  };
