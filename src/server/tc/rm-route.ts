/**
 * Which connected RM runs a branch's phase two: the routing rule of the RM channel hub, as
 * a pure function over what the hub knows (so it is tested alone).
 *
 * A resource id is unique within an application, not across the cluster: two teams may
 * both call their TCC action `debit`. So phase two stays inside the branch's application,
 * recorded with the branch when it registered (replicated, so it survives a failover):
 *   1. the RM client that registered the branch, if it is connected, is of the branch's
 *      application and serves the resource;
 *   2. else another RM of the same application serving the resource (round robin);
 *   3. else none: the branch waits for one. Never an RM of another application.
 * A branch recorded before branches kept their application (applicationId '') goes only to
 * the client that registered it: nothing else says which application it belongs to.
 */

/** What the routing rule needs to know of a connected, registered RM channel. */
export interface RmCandidate {
  readonly clientId: string | null;
  readonly applicationId: string;
  readonly resourceIds: ReadonlySet<string>;
}

export interface BranchRoute {
  clientId: string;
  applicationId: string;
  resourceId: string;
}

export type RouteChoice<C> =
  | { channel: C }
  /** `no-rm`: no RM of the application serves the resource; `busy`: every one is at its bound. */
  | { channel: null; why: 'no-rm' | 'busy' };

/**
 * Chooses the RM for `branch`. `registering` is the channel registered under the branch's
 * client id (whatever it serves), `serving` the channels registered for the branch's
 * application and resource; `usable` says whether a channel can take one more call;
 * `turn` rotates among siblings.
 */
export function chooseRm<C extends RmCandidate>(
  branch: BranchRoute,
  registering: C | undefined,
  serving: Iterable<C>,
  usable: (channel: C) => boolean,
  turn: number,
): RouteChoice<C> {
  const legacy = branch.applicationId === '';
  const original =
    registering !== undefined &&
    registering.clientId === branch.clientId &&
    (legacy || registering.applicationId === branch.applicationId) &&
    registering.resourceIds.has(branch.resourceId)
      ? registering
      : undefined;
  if (original && usable(original)) return { channel: original };
  if (legacy) return { channel: null, why: original ? 'busy' : 'no-rm' };
  // The filter repeats what the hub's index promises: a wrong index must not cross applications.
  const siblings = [...serving].filter(
    (c) => c.applicationId === branch.applicationId && c.resourceIds.has(branch.resourceId),
  );
  const ready = siblings.filter(usable);
  if (ready.length === 0)
    return { channel: null, why: siblings.length > 0 || original ? 'busy' : 'no-rm' };
  return { channel: ready[turn % ready.length]! };
}

/** The hub's index key of the RMs of one application serving one resource (collision-free). */
export function routeKey(applicationId: string, resourceId: string): string {
  return JSON.stringify([applicationId, resourceId]);
}
