/** How the TC's observers (metrics, the console's timeline) wrap the store and the RM gateway. */
import type {
  BranchGateway,
  BranchSession,
  BranchStatus,
  Command,
  SessionStore,
} from '../coordinator/index.ts';

/**
 * The store with `submit` replaced and every other method bound to the store, each bound
 * once (the coordinator reads them on its hot path); other properties read through.
 */
export function withSubmit<S extends SessionStore>(store: S, submit: SessionStore['submit']): S {
  const bound = new Map<PropertyKey, { of: unknown; fn: unknown }>();
  return new Proxy(store, {
    get(target, prop) {
      if (prop === 'submit') return submit;
      const value: unknown = Reflect.get(target, prop, target);
      if (typeof value !== 'function') return value;
      const cached = bound.get(prop);
      if (cached?.of === value) return cached.fn;
      const fn = (value as (...args: unknown[]) => unknown).bind(target);
      bound.set(prop, { of: value, fn });
      return fn;
    },
  });
}

/** Hears each command the store applied, with its result. Must not throw. */
export type AppliedObserver = (command: Command, value: unknown) => void;

/**
 * The store whose submits tell every observer, in order, of each applied command: one
 * wrapper and one promise reaction per command for all of them (each observer wrapping the
 * store in turn cost a Proxy lookup and a promise per command apiece).
 */
export function observeApplied<S extends SessionStore>(
  store: S,
  ...observers: AppliedObserver[]
): S {
  const submit: SessionStore['submit'] = (command) =>
    store.submit(command).then((outcome) => {
      if (outcome.ok) for (const observe of observers) observe(command, outcome.value);
      return outcome;
    });
  return withSubmit(store, submit);
}

/** One phase-two call to an RM, seen by an observer: `run` makes the real call. */
export type PhaseTwoCall = (
  action: 'commit' | 'rollback',
  branch: BranchSession,
  run: () => Promise<BranchStatus>,
) => Promise<BranchStatus>;

/** The gateway with each commit and rollback passed through `call`. */
export function aroundPhaseTwo(gateway: BranchGateway, call: PhaseTwoCall): BranchGateway {
  return {
    commitBranch: (branch) => call('commit', branch, () => gateway.commitBranch(branch)),
    rollbackBranch: (branch) => call('rollback', branch, () => gateway.rollbackBranch(branch)),
  };
}
