/**
 * Hooks for a service's own tests: the points between the SDK's steps that a test needs to
 * reach — above all the gap between a branch's registration and its try, where an empty
 * rollback and a hanging try happen in production (a slow network, a GC pause). With them a
 * test holds a try after BranchRegister, rolls the transaction back, and watches the fence
 * record an empty rollback and refuse the late try — without wrapping the database pool.
 * `createBranchGate` (testing.ts) is the ready-made use. Production code sets none.
 *
 * A hook is awaited. One that throws fails the step it precedes, as the step itself would:
 * after a registration, the action call rejects (the branch's try never ran); before phase
 * two, the RM answers a retryable failure and the TC delivers again.
 */
import { BadRequestError } from '../../shared/errors.ts';

/** Where a branch stands when a hook is called. */
export interface BranchPoint {
  readonly xid: string;
  readonly branchId: string;
  readonly resourceId: string;
  readonly branchType: 'TCC' | 'SAGA';
  /** The step about to run: try / action (phase one), confirm / cancel / compensate (phase two). */
  readonly op: 'try' | 'action' | 'confirm' | 'cancel' | 'compensate';
}

export interface ClientHooks {
  /** After the TC registered the branch, before its try / action runs. */
  afterBranchRegister?: (branch: BranchPoint) => void | Promise<void>;
  /**
   * After the RM received a phase-two request, before its confirm / cancel / compensate runs (fence
   * included).
   */
  beforePhaseTwo?: (branch: BranchPoint) => void | Promise<void>;
}

export function validateHooks(hooks: unknown): ClientHooks {
  if (hooks === undefined) return {};
  if (typeof hooks !== 'object' || hooks === null)
    throw new BadRequestError('hooks must be an object of functions');
  for (const [name, value] of Object.entries(hooks)) {
    if (name !== 'afterBranchRegister' && name !== 'beforePhaseTwo')
      throw new BadRequestError(`unknown hook ${JSON.stringify(name)}`);
    if (value !== undefined && typeof value !== 'function')
      throw new BadRequestError(`hook ${name} must be a function`);
  }
  return hooks as ClientHooks;
}
