/** A session store seen through a different `submit`: how the TC's observers wrap the store. */
import type { SessionStore } from '../coordinator/index.ts';

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
