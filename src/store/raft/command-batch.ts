/**
 * The Raft entry format of coordinator commands. An entry holds either one encoded command
 * (a msgpack map: the only format before batching, so old logs replay unchanged) or a
 * batch of commands submitted in one event-loop turn (DESIGN.md: "Commands of one
 * event-loop turn share one Raft entry"). A batch is a msgpack array; its elements are
 * either the encoded commands themselves (each a msgpack map: the entry is an array header
 * followed by the commands' bytes, so one unpack decodes the whole batch), or — the first
 * batch format, still read — msgpack bins each holding an encoded command. Applying a
 * batch applies its commands in order and answers one outcome per command; a refused
 * command changes nothing, so it leaves the others in its entry untouched.
 */
import { Packr } from 'msgpackr';
import {
  commandEnvelope,
  decodeCommand,
  type Command,
  type CoordinatorStateMachine,
  type Outcome,
} from '../../coordinator/index.ts';
import { AssertionFailure } from '../../shared/errors.ts';
import { ownedCopy } from '../../shared/msgpack-buffer.ts';
import { latencyTrace } from '../../shared/latency-trace.ts';

/** Bytes of encoded commands one entry may carry (a single larger command travels alone). */
export const MAX_ENTRY_BYTES = 1024 * 1024;
/** Commands one entry may carry. */
export const MAX_COMMANDS_PER_ENTRY = 1_024;

const packr = new Packr({ useRecords: false, mapsAsObjects: true, moreTypes: false });

/**
 * One entry for encoded commands: a lone command as itself, several as a msgpack array
 * whose elements are their bytes as they are (no re-encoding; one copy into the entry).
 */
export function encodeEntry(commands: readonly Uint8Array[]): Uint8Array {
  const n = commands.length;
  if (n === 0) throw new AssertionFailure('an entry needs at least one command');
  // A lone command's bytes are a view of msgpackr's shared pack buffer (encodeCommand): the
  // log keeps the entry until the next snapshot, so it gets a copy of its own size.
  if (n === 1) return ownedCopy(commands[0]!);
  if (n > 0xffff) throw new AssertionFailure(`a batch of ${n} commands exceeds a msgpack array16`);
  const head = n < 16 ? 1 : 3;
  let bytes = head;
  for (const c of commands) bytes += c.length;
  const out = Buffer.allocUnsafe(bytes);
  if (n < 16) out[0] = 0x90 | n;
  else {
    out[0] = 0xdc;
    out.writeUInt16BE(n, 1);
  }
  let at = head;
  for (const c of commands) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** The first batch format (elements are msgpack bins of encoded commands): tests and old logs. */
export function encodeBinBatchEntry(commands: readonly Uint8Array[]): Uint8Array {
  return packr.pack(commands);
}

/** True when the entry is a batch (a msgpack array), not a lone command (a msgpack map). */
export function isBatchEntry(data: Uint8Array): boolean {
  const first = data[0];
  return (
    first !== undefined && ((first >= 0x90 && first <= 0x9f) || first === 0xdc || first === 0xdd)
  );
}

/** The commands of a batch entry, in order, in either batch format. */
function batchCommands(data: Uint8Array): Command[] {
  let parts: unknown;
  try {
    parts = packr.unpack(data);
  } catch (err) {
    throw new AssertionFailure(`command batch does not decode: ${(err as Error).message}`);
  }
  if (!Array.isArray(parts) || parts.length === 0)
    throw new AssertionFailure('command batch is not an array of commands');
  if (parts[0] instanceof Uint8Array) {
    if (!parts.every((p) => p instanceof Uint8Array))
      throw new AssertionFailure('command batch mixes encoded and plain commands');
    return (parts as Uint8Array[]).map((p) => decodeCommand(p));
  }
  return parts.map((p) => {
    if (p instanceof Uint8Array)
      throw new AssertionFailure('command batch mixes encoded and plain commands');
    return commandEnvelope(p);
  });
}

/**
 * Applies an entry: a lone command answers its outcome, a batch an array of outcomes in
 * order. An entry that does not decode is a corrupt log: AssertionFailure (the driver
 * fail-stops).
 */
export function applyEntry(
  machine: CoordinatorStateMachine,
  data: Uint8Array,
): Outcome<unknown> | Outcome<unknown>[] {
  if (!isBatchEntry(data)) return machine.apply(decodeCommand(data));
  return batchCommands(data).map((command) => machine.apply(command));
}

/**
 * Gathers the submits of one event-loop turn into entries of at most MAX_ENTRY_BYTES and
 * MAX_COMMANDS_PER_ENTRY, proposes each entry once, and hands every submitter the outcome
 * of its own command (or the entry's failure: not leader, dropped).
 */
export class SubmitBatcher {
  private pending: {
    data: Uint8Array;
    resolve: (v: unknown) => void;
    reject: (e: unknown) => void;
  }[] = [];
  private scheduled = false;
  /** Entries proposed and commands they carried (for metrics and tests). */
  readonly counts = { entries: 0, commands: 0 };

  constructor(private readonly propose: (data: Uint8Array) => Promise<unknown>) {}

  /** Resolves with the command's own apply outcome once its entry is applied. */
  add(data: Uint8Array): Promise<unknown> {
    const done = new Promise<unknown>((resolve, reject) =>
      this.pending.push({ data, resolve, reject }),
    );
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
    return done;
  }

  private flush(): void {
    this.scheduled = false;
    const pending = this.pending;
    latencyTrace?.('st.flush', pending.length);
    this.pending = [];
    let start = 0;
    while (start < pending.length) {
      let end = start + 1;
      let bytes = pending[start]!.data.length;
      while (
        end < pending.length &&
        end - start < MAX_COMMANDS_PER_ENTRY &&
        bytes + pending[end]!.data.length <= MAX_ENTRY_BYTES
      ) {
        bytes += pending[end]!.data.length;
        end += 1;
      }
      this.proposeEntry(pending.slice(start, end));
      start = end;
    }
  }

  private proposeEntry(batch: SubmitBatcher['pending']): void {
    this.counts.entries += 1;
    this.counts.commands += batch.length;
    let proposed: Promise<unknown>;
    try {
      proposed = this.propose(encodeEntry(batch.map((p) => p.data)));
    } catch (err) {
      proposed = Promise.reject(err);
    }
    proposed.then(
      (result) => {
        if (batch.length === 1) return batch[0]!.resolve(result);
        if (!Array.isArray(result) || result.length !== batch.length) {
          const err = new AssertionFailure(
            `a batch of ${batch.length} commands was answered with something else`,
          );
          for (const p of batch) p.reject(err);
          return;
        }
        batch.forEach((p, i) => p.resolve(result[i]));
      },
      (err: unknown) => {
        for (const p of batch) p.reject(err);
      },
    );
  }
}
