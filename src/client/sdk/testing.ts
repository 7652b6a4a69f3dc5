/**
 * A test helper for services: a gate that holds branches at one of the SDK's hook points
 * until the test lets them go.
 *
 *   const gate = createBranchGate({ at: 'afterBranchRegister', resourceId: 'stock.reserve' });
 *   const client = createClient({ ..., hooks: gate.hooks });
 *   const tx = await client.begin();
 *   const call = tx.run(() => reserve({ sku: 'P-1', n: 1 })).catch((e) => e);
 *   const branch = await gate.reached();   // registered with the TC; its try has not run
 *   await tx.rollback();                   // the cancel arrives first: an empty rollback
 *   gate.release();                        // the late try: refused by the fence (hanging)
 *   expect(await call).toBeInstanceOf(BranchRefusedError);
 *
 * A gate holds every matching branch until `release()`; after that, matching branches pass
 * straight through. Branches that do not match (another resource, another op) are never held.
 */
import { BadRequestError } from '../../shared/errors.ts';
import type { BranchPoint, ClientHooks } from './hooks.ts';

/** Branches one gate remembers as reached and not yet taken by `reached()` (a test holds a few). */
export const MAX_GATE_WAITING = 1_024;

export interface BranchGateOptions {
  /**
   * The hook point: after BranchRegister (before the try), or before a phase-two step. Default
   * afterBranchRegister.
   */
  at?: keyof ClientHooks;
  /** Hold only this resource's branches. Default: all. */
  resourceId?: string;
  /** Hold only this step (e.g. 'cancel'). Default: all at that point. */
  op?: BranchPoint['op'];
}

export interface BranchGate {
  /** Pass as `createClient({ hooks })` (or merge into your own hooks). */
  readonly hooks: ClientHooks;
  /** Resolves with the next branch held at the gate (in arrival order). */
  reached(): Promise<BranchPoint>;
  /** Lets every held branch go on, and every later one through. */
  release(): void;
}

export function createBranchGate(options: BranchGateOptions = {}): BranchGate {
  const at = options.at ?? 'afterBranchRegister';
  if (at !== 'afterBranchRegister' && at !== 'beforePhaseTwo')
    throw new BadRequestError('at must be afterBranchRegister or beforePhaseTwo');
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  let released = false;
  const arrived: BranchPoint[] = [];
  const waiting: ((branch: BranchPoint) => void)[] = [];
  const hook = async (branch: BranchPoint): Promise<void> => {
    if (released) return;
    if (options.resourceId !== undefined && branch.resourceId !== options.resourceId) return;
    if (options.op !== undefined && branch.op !== options.op) return;
    const waiter = waiting.shift();
    if (waiter !== undefined) waiter(branch);
    else if (arrived.length < MAX_GATE_WAITING) arrived.push(branch);
    await opened;
  };
  return {
    hooks: { [at]: hook },
    reached() {
      const first = arrived.shift();
      if (first !== undefined) return Promise.resolve(first);
      return new Promise((resolve) => waiting.push(resolve));
    },
    release() {
      released = true;
      open();
    },
  };
}
