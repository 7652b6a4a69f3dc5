/**
 * Asking before an operator action: `--yes` skips the question; without it the question
 * needs a terminal (a script that forgot `--yes` fails instead of hanging or acting).
 */
import { createInterface } from 'node:readline/promises';
import type { Readable, Writable } from 'node:stream';
import { BadRequestError } from '../shared/errors.ts';

export interface ConfirmOptions {
  /** The operator passed --yes. */
  yes: boolean;
  input?: Readable & { isTTY?: boolean };
  output?: Writable;
}

/** True when the operator agreed: "y" or "yes" (any case). */
export function isYes(answer: string): boolean {
  return /^\s*y(es)?\s*$/i.test(answer);
}

export async function confirm(question: string, o: ConfirmOptions): Promise<boolean> {
  if (o.yes) return true;
  const input = o.input ?? process.stdin;
  const output = o.output ?? process.stderr;
  if (input.isTTY !== true)
    throw new BadRequestError(
      'this command asks for confirmation, and stdin is not a terminal: pass --yes to go ahead',
    );
  const rl = createInterface({ input, output });
  try {
    return isYes(await rl.question(`${question} [y/N] `));
  } finally {
    rl.close();
  }
}
