/**
 * The RM parts of a client that a branch mode living outside the SDK folder (src/client/at)
 * needs: the TC port, the RM registry, the client's identity, logger and in-flight tracker.
 * Not part of the public API; `createClient` records them for the client it returns.
 */
import type { ActionDeps } from './actions.ts';
import type { ConcordClient } from './client.ts';
import { BadRequestError } from '../../shared/errors.ts';

export type RmAccess = ActionDeps;

const access = new WeakMap<object, RmAccess>();

/** Records `deps` for `client` and returns the client. */
export function withRmAccess<C extends object>(deps: RmAccess, client: C): C {
  access.set(client, deps);
  return client;
}

/** The RM parts of a client made by createClient; BadRequestError for anything else. */
export function rmAccessOf(client: ConcordClient): RmAccess {
  const deps = access.get(client);
  if (deps === undefined)
    throw new BadRequestError('expected a Concord client made by createClient');
  return deps;
}
