/** Strict query-parameter reading shared by the HTTP API and the console's API. */
import { BadRequestError } from '../../shared/errors.ts';

/**
 * The query's parameters; an unknown or repeated one is refused (a typo must not widen a
 * list). With `dropEmpty`, a parameter given empty is absent.
 */
export function strictQuery(
  url: URL,
  allowed: readonly string[],
  options: { dropEmpty: boolean },
): Record<string, string | undefined> {
  const out: Record<string, string> = {};
  for (const [k, v] of url.searchParams) {
    if (!allowed.includes(k))
      throw new BadRequestError(
        `unknown query parameter ${JSON.stringify(k.slice(0, 64))} (allowed: ${allowed.join(', ')})`,
      );
    if (k in out) throw new BadRequestError(`query parameter ${k} is given twice`);
    if (!options.dropEmpty || v !== '') out[k] = v;
  }
  return out;
}
