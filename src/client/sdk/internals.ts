/**
 * What branch modes outside this folder (src/client/xa) need of a client: its TC port, RM
 * registry and identity — the same dependencies the TCC and Saga actions get. Kept off the
 * public ConcordClient interface: a mode's factory (createPgXaDataSource(concord, pool))
 * looks them up here.
 */
import { BadRequestError } from '../../shared/errors.ts';
import type { ActionDeps } from './actions.ts';

const internals = new WeakMap<object, ActionDeps>();

/** Called by createClient: remembers the client's dependencies, returns the client. */
export function withInternals<C extends object>(client: C, deps: ActionDeps): C {
  internals.set(client, deps);
  return client;
}

/** The dependencies of a client made by createClient; BadRequestError for anything else. */
export function internalsOf(client: unknown): ActionDeps {
  const deps = typeof client === 'object' && client !== null ? internals.get(client) : undefined;
  if (deps === undefined)
    throw new BadRequestError('expected a Concord client made by createClient()');
  return deps;
}
