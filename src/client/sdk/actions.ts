/**
 * TCC and Saga actions. Both are two-phase branches of the same shape:
 *
 *            phase one (in the caller)        phase two (the TC, on the RM channel)
 *   TCC      try                              confirm (commit) | cancel (rollback)
 *   Saga     action (the forward step)        nothing (commit) | compensate (rollback)
 *
 * Calling an action inside a global transaction registers a branch (BranchRegister, the
 * arguments as its applicationData) and then runs phase one with the xid bound. The TC
 * later sends commit or rollback for that branch to an RM of this application serving the
 * resource (this process, a sibling replica, or this service after a restart — never
 * another application that named an action the same); the dispatcher (rm.ts)
 * runs phase two with the arguments decoded from the applicationData. On rollback the TC
 * walks the branches in reverse registration order, so compensations run newest first.
 *
 * With a fence (src/client/fence, PostgreSQL or MySQL, in the service's own database) each
 * step runs inside the fence's local transaction, together with the business write it is
 * handed as `ctx.tx`:
 * - a repeated confirm/cancel/compensate does nothing (idempotent);
 * - a cancel/compensate whose try/action never ran records an empty rollback and skips the
 *   callback (the rollback of a branch that failed, or never got to run, phase one);
 * - a try/action that arrives after its cancel/compensate is refused (hanging prevention):
 *   the call throws BranchRefusedError.
 * Without a fence those three cases are the action's own job (see docs/sdk.md).
 *
 * A failed phase one: without a fence the try may have done part of its work (nothing
 * undoes it), so the branch stays and its cancel runs when the transaction rolls back, as
 * in Seata and dtm. Under a fence the step's local transaction rolled back entirely, so
 * the branch is reported PhaseOne_Failed and the TC drops it from phase two (neither
 * confirm nor cancel) — see reportPhaseOneFailed.
 */
import {
  ATTR_BRANCH_ID,
  ATTR_BRANCH_TYPE,
  ATTR_RESOURCE_ID,
  ATTR_XID,
  SpanKind,
  inSpan,
} from '../tracing.ts';
import { assert, BadRequestError } from '../../shared/errors.ts';
import { currentContext, runWithoutXid, runWithXid, type Xid } from '../context.ts';
// Not the fence barrel (../fence/index.ts): that one re-exports the pg and mysql2 fences,
// whose declarations would make every SDK user's type check need both drivers' types.
import type { Fence } from '../fence/core.ts';
import { ConfirmWithoutTryError, FenceError } from '../fence/errors.ts';
import type { FenceOp } from '../fence/key.ts';
import type { Logger } from '../logger.ts';
import { IllegalStatusError } from '../tc/errors.ts';
import { decodeActionContext, encodeActionContext } from './action-context.ts';
import {
  BranchRefusedError,
  GlobalTimeoutError,
  NoGlobalTransactionError,
  UnretryableBranchError,
  inPhase,
} from './errors.ts';
import type { BranchPoint, ClientHooks } from './hooks.ts';
import { validateResourceId, type ResourceManager } from './rm.ts';
import { BranchStatus, isGlobalStatus, isTimeoutRollback } from '../../shared/tc-vocabulary.ts';
import type { PhaseTwoRequest, TcPort } from '../tc/port.ts';
import type { InflightTracker } from './tracker.ts';

/**
 * What every step of an action is told. `tx` is the fence's transaction handle (undefined without a
 * fence).
 */
export interface ActionContext<Tx = undefined> {
  readonly xid: string;
  readonly branchId: string;
  readonly resourceId: string;
  readonly branchType: 'TCC' | 'SAGA';
  /** Run the business write through it: it commits (or rolls back) together with the fence row. */
  readonly tx: Tx;
}

type Step<A, R, Tx> = (args: A, ctx: ActionContext<Tx>) => R | Promise<R>;

interface NameOrResourceId {
  /**
   * The resource id the branch is registered under; every replica of the service must use the same
   * one.
   */
  name?: string;
  /** Same as `name` (Seata's word). Give one of the two. */
  resourceId?: string;
}

export interface TccActionDefinition<A, R, Tx = undefined> extends NameOrResourceId {
  /** Phase one: reserve. Its result is returned to the caller. */
  try: Step<A, R, Tx>;
  /** Phase two on commit: use what try reserved. Receives try's arguments as JSON. */
  confirm: Step<A, unknown, Tx>;
  /** Phase two on rollback: release what try reserved. Receives try's arguments as JSON. */
  cancel: Step<A, unknown, Tx>;
  /** createPgFence / createMysqlFence on the service's own database. */
  fence?: Fence<Tx>;
}

export interface SagaActionDefinition<A, R, Tx = undefined> extends NameOrResourceId {
  /** The forward step; its result is returned to the caller. */
  action: Step<A, R, Tx>;
  /** Undoes the forward step on rollback. Receives the action's arguments as JSON. */
  compensate: Step<A, unknown, Tx>;
  fence?: Fence<Tx>;
}

/** A registered action: call it inside a global transaction. */
export type BranchAction<A, R> = ((args: A) => Promise<R>) & {
  readonly resourceId: string;
  readonly branchType: 'TCC' | 'SAGA';
};

export interface ActionDeps {
  tc: TcPort;
  rm: ResourceManager;
  clientId: string;
  /** The client's application: its branches' phase two goes only to RMs of it. */
  applicationId: string;
  logger: Logger;
  tracker: InflightTracker;
  /** Throws ClientClosedError once the client is closed for good. */
  assertUsable: () => void;
  /** Test hooks (hooks.ts); {} in production. */
  hooks: ClientHooks;
}

interface Spec<A, R, Tx> {
  resourceId: string;
  branchType: 'TCC' | 'SAGA';
  fence: Fence<Tx> | undefined;
  phaseOneOp: FenceOp;
  phaseOne: Step<A, R, Tx>;
  /** undefined: nothing to do on commit (Saga). */
  commit: { op: FenceOp; step: Step<A, unknown, Tx> } | undefined;
  rollback: { op: FenceOp; step: Step<A, unknown, Tx> };
}

function resourceIdOf(def: NameOrResourceId): string {
  if (def.name !== undefined && def.resourceId !== undefined && def.name !== def.resourceId) {
    throw new BadRequestError(
      `give name or resourceId, not two different ones (${def.name}, ${def.resourceId})`,
    );
  }
  return validateResourceId(def.resourceId ?? def.name);
}

function requireFunction(value: unknown, what: string): void {
  if (typeof value !== 'function') throw new BadRequestError(`${what} must be a function`);
}

function requireFence(fence: unknown): void {
  if (
    fence !== undefined &&
    (typeof fence !== 'object' ||
      fence === null ||
      typeof (fence as { run?: unknown }).run !== 'function')
  ) {
    throw new BadRequestError('fence must be a Fence (createPgFence or createMysqlFence)');
  }
}

export function registerTcc<A, R, Tx>(
  deps: ActionDeps,
  def: TccActionDefinition<A, R, Tx>,
): BranchAction<A, R> {
  if (typeof def !== 'object' || def === null)
    throw new BadRequestError('tcc.register needs { name, try, confirm, cancel, fence? }');
  const resourceId = resourceIdOf(def);
  requireFunction(def.try, 'try');
  requireFunction(def.confirm, 'confirm');
  requireFunction(def.cancel, 'cancel');
  requireFence(def.fence);
  return registerAction(deps, {
    resourceId,
    branchType: 'TCC',
    fence: def.fence,
    phaseOneOp: 'try',
    phaseOne: def.try,
    commit: { op: 'confirm', step: def.confirm },
    rollback: { op: 'cancel', step: def.cancel },
  });
}

export function registerSaga<A, R, Tx>(
  deps: ActionDeps,
  def: SagaActionDefinition<A, R, Tx>,
): BranchAction<A, R> {
  if (typeof def !== 'object' || def === null)
    throw new BadRequestError('saga.register needs { name, action, compensate, fence? }');
  const resourceId = resourceIdOf(def);
  requireFunction(def.action, 'action');
  requireFunction(def.compensate, 'compensate');
  requireFence(def.fence);
  return registerAction(deps, {
    resourceId,
    branchType: 'SAGA',
    fence: def.fence,
    phaseOneOp: 'action',
    phaseOne: def.action,
    commit: undefined,
    rollback: { op: 'compensate', step: def.compensate },
  });
}

function registerAction<A, R, Tx>(deps: ActionDeps, spec: Spec<A, R, Tx>): BranchAction<A, R> {
  const action = new RegisteredAction(deps, spec);
  deps.rm.register({
    resourceId: spec.resourceId,
    branchType: spec.branchType,
    phaseTwo: (request: PhaseTwoRequest) => action.phaseTwo(request),
  });
  return Object.assign((args: A) => action.call(args), {
    resourceId: spec.resourceId,
    branchType: spec.branchType,
  }) as BranchAction<A, R>;
}

type Fenced<T> = { ran: true; value: T } | { ran: false; outcome: string };

/** One registered action: its phase one (in the caller) and its phase two (from the TC). */
class RegisteredAction<A, R, Tx> {
  private readonly log: Logger;

  constructor(
    private readonly deps: ActionDeps,
    private readonly spec: Spec<A, R, Tx>,
  ) {
    this.log = deps.logger.child({ component: 'rm', resourceId: spec.resourceId });
  }

  /** A call of the action: a branch of the caller's global transaction, then phase one. */
  async call(args: A): Promise<R> {
    const { deps, spec } = this;
    deps.assertUsable();
    const context = currentContext();
    if (context === undefined) throw new NoGlobalTransactionError(spec.resourceId);
    const { xid, signal } = context;
    // The transaction's scope is over for this process (timeout, rollback): refused here,
    // before anything reaches the TC.
    if (signal?.aborted) throw signal.reason;
    const applicationData = encodeActionContext(spec.resourceId, args);
    return deps.tracker.run(() =>
      inSpan(
        `concord.branch.${spec.phaseOneOp}`,
        {
          [ATTR_XID]: xid,
          [ATTR_BRANCH_TYPE]: spec.branchType,
          [ATTR_RESOURCE_ID]: spec.resourceId,
        },
        async (span) => {
          await deps.rm.ensureReady();
          const branchId = await this.registerBranch(xid, applicationData, signal);
          span.setAttribute(ATTR_BRANCH_ID, branchId);
          this.log.debug({ xid, branchId }, 'branch registered');
          return this.phaseOne(args, xid, branchId, signal);
        },
      ),
    );
  }

  /** Phase two as the TC sends it: the commit or rollback step, fenced, bound to no xid. */
  async phaseTwo(request: PhaseTwoRequest): Promise<void> {
    const spec = this.spec;
    const phase = request.kind === 'commit' ? spec.commit : spec.rollback;
    if (phase === undefined) return; // Saga commit: the forward action already was the commit.
    const args = decodeActionContext(spec.resourceId, request.applicationData) as A;
    await this.deps.hooks.beforePhaseTwo?.(this.pointOf(request.xid, request.branchId, phase.op));
    // Phase two belongs to no transaction scope: a call it makes must not carry the xid
    // (the transaction is decided; a downstream service must not try to join it).
    const result = await inSpan(
      `concord.branch.${phase.op}`,
      {
        [ATTR_XID]: request.xid,
        [ATTR_BRANCH_ID]: request.branchId,
        [ATTR_BRANCH_TYPE]: spec.branchType,
        [ATTR_RESOURCE_ID]: spec.resourceId,
      },
      () =>
        this.phaseTwoStep(request, phase.op, () =>
          runWithoutXid(() =>
            this.fenced(phase.op, request.xid, request.branchId, async (ctx) =>
              phase.step(args, ctx),
            ),
          ),
        ),
      SpanKind.SERVER,
    );
    if (!result.ran)
      this.log.debug(
        { xid: request.xid, branchId: request.branchId, op: phase.op, outcome: result.outcome },
        'fence skipped phase two',
      );
  }

  private contextOf(xid: string, branchId: string, tx: Tx): ActionContext<Tx> {
    return {
      xid,
      branchId,
      resourceId: this.spec.resourceId,
      branchType: this.spec.branchType,
      tx,
    };
  }

  private pointOf(xid: string, branchId: string, op: FenceOp): BranchPoint {
    return {
      xid,
      branchId,
      resourceId: this.spec.resourceId,
      branchType: this.spec.branchType,
      op,
    };
  }

  /** Runs `step` inside the fence (or bare) and says whether it ran. */
  private async fenced<T>(
    op: FenceOp,
    xid: string,
    branchId: string,
    step: (ctx: ActionContext<Tx>) => Promise<T>,
  ): Promise<Fenced<T>> {
    const fence = this.spec.fence;
    if (fence === undefined)
      return { ran: true, value: await step(this.contextOf(xid, branchId, undefined as Tx)) };
    let value: T | undefined;
    const outcome = await fence.run({ xid, branchId, op }, async (tx) => {
      value = await step(this.contextOf(xid, branchId, tx));
    });
    return outcome === 'executed' ? { ran: true, value: value as T } : { ran: false, outcome };
  }

  /**
   * Runs a phase-two step; a confirm the fence refused (no try) becomes an unretryable failure,
   * logged loudly.
   */
  private async phaseTwoStep<T>(
    request: PhaseTwoRequest,
    op: FenceOp,
    run: () => Promise<T>,
  ): Promise<T> {
    try {
      return await run();
    } catch (err) {
      if (!(err instanceof ConfirmWithoutTryError)) throw err;
      this.log.error(
        { xid: request.xid, branchId: request.branchId, found: err.found, err },
        `${op} refused: the branch has no try; the business ${op} was NOT run, and the branch is reported unretryable for an operator`,
      );
      throw new UnretryableBranchError(err.message, { cause: err });
    }
  }

  private async reportPhaseOneFailed(xid: Xid, branchId: string): Promise<void> {
    try {
      await this.deps.tc.branchReport({ xid, branchId, status: BranchStatus.PhaseOne_Failed });
    } catch (err) {
      // Best effort: the branch stays registered, and its phase two goes through the fence.
      this.log.warn(
        { xid, branchId, err },
        'could not report the failed phase one; the branch is left to phase two',
      );
    }
  }

  /**
   * BranchRegister; a refusal because the transaction timed out becomes GlobalTimeoutError:
   * the TC names a Timeout* status, or (still Begin, past its deadline) this process's own
   * timer has fired by the time the refusal arrives.
   */
  private async registerBranch(
    xid: Xid,
    applicationData: string,
    signal: AbortSignal | undefined,
  ): Promise<string> {
    const { deps, spec } = this;
    try {
      return await inPhase('branch', xid, () =>
        deps.tc.branchRegister({
          xid,
          branchType: spec.branchType,
          resourceId: spec.resourceId,
          lockKey: '',
          applicationData,
          clientId: deps.clientId,
          applicationId: deps.applicationId,
        }),
      );
    } catch (err) {
      if (!(err instanceof IllegalStatusError)) throw err;
      const status = err.globalStatus;
      if (isGlobalStatus(status) && isTimeoutRollback(status))
        throw new GlobalTimeoutError(xid, status, 0, { cause: err });
      const local: unknown = signal?.reason;
      if (local instanceof GlobalTimeoutError)
        throw new GlobalTimeoutError(xid, local.status, local.timeoutMs, { cause: err });
      throw err;
    }
  }

  /** Phase one of a registered branch: the hook, then the step (fenced), bound to the xid. */
  private async phaseOne(
    args: A,
    xid: Xid,
    branchId: string,
    signal: AbortSignal | undefined,
  ): Promise<R> {
    const spec = this.spec;
    let result: Fenced<R>;
    try {
      await this.deps.hooks.afterBranchRegister?.(this.pointOf(xid, branchId, spec.phaseOneOp));
      result = await runWithXid(
        xid,
        () => this.fenced(spec.phaseOneOp, xid, branchId, async (ctx) => spec.phaseOne(args, ctx)),
        { branchType: spec.branchType, signal },
      );
    } catch (err) {
      // Under a fence, an error from the step itself means its local transaction rolled
      // back entirely: there is nothing to confirm or cancel. Saying so (PhaseOne_Failed)
      // makes the TC drop the branch in phase two — so a transaction committed anyway
      // (noRollbackFor) never confirms a try that did not happen. A FenceError may hide a
      // commit whose outcome is unknown: then the branch stays, and its cancel (an empty
      // rollback, or a real one) decides.
      if (spec.fence !== undefined && !(err instanceof FenceError))
        await this.reportPhaseOneFailed(xid, branchId);
      throw err;
    }
    if (result.ran) return result.value;
    if (result.outcome === 'hangingRefused')
      throw new BranchRefusedError(xid, branchId, spec.resourceId);
    // 'duplicate' or 'emptyRollback' for a try: impossible for a branch id the TC just issued.
    assert(
      false,
      `fence answered ${result.outcome} for the ${spec.phaseOneOp} of a new branch ${xid}/${branchId}`,
    );
  }
}
