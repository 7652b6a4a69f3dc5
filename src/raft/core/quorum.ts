import type { NodeId } from './types.ts';

/** Smallest number of voters that is a majority. */
export function quorumSize(voterCount: number): number {
  return Math.floor(voterCount / 2) + 1;
}

/**
 * The highest index replicated on a majority of voters: sort the voters' match indices
 * descending and take the quorum-th one. Voters without a known match count as 0.
 */
export function committedIndex(voters: readonly NodeId[], match: (id: NodeId) => number): number {
  if (voters.length === 0) return 0;
  const matches = voters.map(match).sort((a, b) => b - a);
  return matches[quorumSize(voters.length) - 1] ?? 0;
}

export type VoteResult = 'won' | 'lost' | 'pending';

/**
 * Tallies granted and rejected votes among the voters only (learners and strangers don't count).
 */
export function voteResult(
  voters: readonly NodeId[],
  votes: ReadonlyMap<NodeId, boolean>,
): VoteResult {
  let granted = 0;
  let rejected = 0;
  for (const v of voters) {
    const g = votes.get(v);
    if (g === true) granted++;
    else if (g === false) rejected++;
  }
  const q = quorumSize(voters.length);
  if (granted >= q) return 'won';
  if (rejected > voters.length - q) return 'lost';
  return 'pending';
}
