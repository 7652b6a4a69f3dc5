/**
 * Bounds on the numbers a peer's message carries (docs/security.md). The codec already
 * checks that every term and index is a non-negative safe integer; these bounds refuse
 * what only a forgery (or a badly broken member) could send, before the core adopts it:
 *
 * - every term and index is at most MAX_RAFT_NUMBER (2^48): far beyond any real log, and
 *   far enough below 2^53 that `term + 1` and index arithmetic stay exact;
 * - a term at most MAX_TERM_LEAD ahead of this node's: a real cluster never runs a million
 *   elections while one of its members looks away (pre-vote keeps a partitioned node's
 *   term still), but one forged term of 2^53−1 would leave the cluster unable to elect;
 * - an append acknowledgement no further than this leader's own last index: a follower
 *   cannot hold an entry the leader never had, and counting one would commit it;
 * - a snapshot's term no later than the message's term.
 */
import type { Message } from '../core/types.ts';

export const MAX_RAFT_NUMBER = 2 ** 48;
export const MAX_TERM_LEAD = 1_000_000;

/**
 * What this node knows that bounds a peer's numbers. `lastIndex(n)` is asked only when
 * needed, with the index to compare, so that it can answer cheaply when that is low.
 */
export interface BoundsView {
  term: number;
  lastIndex: (atLeast: number) => number;
}

function numbersOf(m: Message): number[] {
  switch (m.type) {
    case 'preVote':
    case 'vote':
      return [m.term, m.lastLogIndex, m.lastLogTerm];
    case 'app':
      return [
        m.term,
        m.prevIndex,
        m.prevTerm,
        m.commit,
        ...m.entries.flatMap((e) => [e.index, e.term]),
      ];
    case 'appResp':
      return [m.term, m.index, m.hintTerm, m.hintIndex];
    case 'heartbeat':
      return [m.term, m.commit];
    case 'snap':
      return [m.term, m.meta.index, m.meta.term, m.offset];
    case 'snapResp':
      return [m.term, m.index, m.offset];
    default:
      return [m.term];
  }
}

/** Null if the message's numbers are possible, else why not. */
export function checkMessageBounds(m: Message, view: Readonly<BoundsView>): string | null {
  for (const n of numbersOf(m)) {
    if (n > MAX_RAFT_NUMBER) return `${m.type} carries ${n}, beyond ${MAX_RAFT_NUMBER}`;
  }
  if (m.term > view.term + MAX_TERM_LEAD)
    return `${m.type} term ${m.term} is more than ${MAX_TERM_LEAD} ahead of ours (${view.term})`;
  // An acknowledgement in our term answers our append (of another term, the core ignores it).
  if (
    m.type === 'appResp' &&
    !m.reject &&
    m.term === view.term &&
    m.index > view.lastIndex(m.index)
  )
    return `appResp acknowledges index ${m.index}, beyond our last index`;
  if (m.type === 'snap' && m.meta.term > m.term)
    return `snap of term ${m.meta.term} sent in the earlier term ${m.term}`;
  return null;
}
