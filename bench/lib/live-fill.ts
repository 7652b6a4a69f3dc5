/**
 * A state machine filled in-process with live transactions of `bench scale`'s shape: one
 * Begin and one AT branch holding one row, 100 B of application data (bench snapshot,
 * bench takeover). Each command goes through the log's encoding, as apply would see it.
 */
import { decodeCommand, encodeCommand, type Command } from '../../src/coordinator/commands.ts';
import type { CoordinatorStateMachine } from '../../src/coordinator/state-machine.ts';

const DATA = JSON.stringify({ pad: 'x'.repeat(90) });

export interface LiveFillOptions {
  /** Each transaction's timeout, ms. */
  timeoutMs: number;
  /** The begin and register time of transaction `i`. */
  at: (i: number) => number;
  /** The request id of each command (null: none remembered). */
  requestId: () => string | null;
}

export function fillLive(machine: CoordinatorStateMachine, live: number, o: LiveFillOptions): void {
  for (let i = 0; i < live; i++) {
    const xid = `10.0.0.1:8091:${1_000_000_000 + i}`;
    const at = o.at(i);
    const commands = [
      {
        kind: 'Begin',
        xid,
        transactionId: String(1_000_000_000 + i),
        applicationId: 'shop',
        transactionServiceGroup: 'default',
        name: 'scale',
        timeoutMs: o.timeoutMs,
        beginTime: at,
        requestId: o.requestId(),
        term: 1,
      },
      {
        kind: 'RegisterBranch',
        xid,
        branchId: String(2_000_000_000 + i),
        type: 'AT',
        resourceId: 'scale-db',
        lockKey: `t:${i}`,
        applicationData: DATA,
        clientId: 'shop:host:1234:abcd',
        applicationId: 'shop',
        at,
        requestId: o.requestId(),
      },
    ] as Command[];
    for (const c of commands) {
      const outcome = machine.apply(decodeCommand(encodeCommand(c)));
      if (!outcome.ok) throw new Error(`${c.kind} ${i} refused: ${outcome.rejection.message}`);
    }
  }
}
