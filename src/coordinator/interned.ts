/**
 * One copy of the strings that repeat across live transactions (application ids, service
 * groups, transaction names, resource ids, RM client ids): every command decoded from the
 * log brings its own copy of them, and 100,000 live transactions would keep 100,000 copies
 * of "order-service" (issue 19). Interning changes identities, never values, so the state
 * machine stays deterministic and its snapshots byte-identical.
 *
 * Bounded: at most MAX_INTERNED strings of at most MAX_INTERNED_CHARS each; past the bound
 * a string is kept as it came (it costs memory, not correctness). The table is never
 * cleared while the machine lives: the values it holds repeat by nature.
 */
export const MAX_INTERNED = 10_000;
export const MAX_INTERNED_CHARS = 256;

export class Interned {
  private readonly table = new Map<string, string>();

  of(value: string): string {
    const known = this.table.get(value);
    if (known !== undefined) return known;
    if (value.length > MAX_INTERNED_CHARS || this.table.size >= MAX_INTERNED) return value;
    this.table.set(value, value);
    return value;
  }

  get size(): number {
    return this.table.size;
  }
}

/**
 * A copy of `value` that shares no memory with the command it was decoded from, as one flat
 * string on the V8 heap. msgpackr hands out short strings as slices of one string per
 * decoded message, and V8 keeps the whole parent alive while a slice of 13 or more
 * characters lives: a live session holding its xid as such a slice would keep its whole log
 * entry's strings (a batch of commands). A string built by concatenation (a row key) is a
 * cons string until flattened, and stays one (32 bytes) around its flat content after.
 * Strings under 13 characters are always flat copies. JSON keeps every UTF-16 code unit
 * (lone surrogates too); a Buffer's latin1 round trip would be faster but makes external
 * strings, whose bytes sit outside the heap and its figures.
 */
export function detached(value: string): string {
  return value.length < 13 ? value : (JSON.parse(JSON.stringify(value)) as string);
}
