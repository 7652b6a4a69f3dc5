/** Builders of well-formed commands for state-machine tests (override any field). */
import type {
  AcquireDriverCommand,
  BeginCommand,
  BranchPhaseTwoResultCommand,
  ChangeGlobalStatusCommand,
  Command,
  FinishGlobalCommand,
  Outcome,
  RegisterBranchCommand,
} from '../../src/coordinator/commands.ts';
import type { CoordinatorStateMachine } from '../../src/coordinator/state-machine.ts';
import { BranchStatus, GlobalStatus } from '../../src/coordinator/types.ts';

export const T0 = 1_700_000_000_000;

export function beginCmd(n: number, over: Partial<BeginCommand> = {}): BeginCommand {
  return {
    kind: 'Begin',
    xid: `10.0.0.1:8091:${n}`,
    transactionId: String(n),
    applicationId: 'app',
    transactionServiceGroup: 'group',
    name: 'tx',
    timeoutMs: 60_000,
    beginTime: T0,
    requestId: null,
    ...over,
  };
}

export function registerCmd(
  xid: string,
  branchId: string,
  lockKey: string,
  over: Partial<RegisterBranchCommand> = {},
): RegisterBranchCommand {
  return {
    kind: 'RegisterBranch',
    xid,
    branchId,
    type: 'TCC',
    resourceId: 'db',
    lockKey,
    applicationData: '',
    clientId: 'rm',
    applicationId: 'app',
    at: T0 + 1,
    requestId: null,
    ...over,
  };
}

export function changeCmd(
  xid: string,
  from: GlobalStatus,
  to: GlobalStatus,
  over: Partial<ChangeGlobalStatusCommand> = {},
): ChangeGlobalStatusCommand {
  return { kind: 'ChangeGlobalStatus', xid, from, to, at: T0 + 2, term: 1, ...over };
}

export function resultCmd(
  xid: string,
  branchId: string,
  status: BranchStatus,
  term = 1,
): BranchPhaseTwoResultCommand {
  return { kind: 'BranchPhaseTwoResult', xid, branchId, status, term };
}

export function finishCmd(
  xid: string,
  status: GlobalStatus,
  over: Partial<FinishGlobalCommand> = {},
): FinishGlobalCommand {
  return { kind: 'FinishGlobal', xid, status, at: T0 + 3, term: 1, ...over };
}

export function acquireCmd(xid: string, term: number): AcquireDriverCommand {
  return { kind: 'AcquireDriver', xid, term };
}

/** Applies and expects success; returns the value. */
export function applyOk<C extends Command>(machine: CoordinatorStateMachine, command: C): unknown {
  const outcome: Outcome<unknown> = machine.apply(command);
  if (!outcome.ok)
    throw new Error(
      `${command.kind} refused: ${outcome.rejection.code} ${outcome.rejection.message}`,
    );
  return outcome.value;
}

export { BranchStatus, GlobalStatus };
