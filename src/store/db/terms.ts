/**
 * The coordinator's terms in db mode, made from the driver lease's epoch E (lease.ts):
 *
 *  - 2E   every node's TM and operator commands, and the phase-two pass a node that is not
 *         the lease holder runs for a transaction it decided itself (the decider);
 *  - 2E+1 the lease holder: its TM commands and its phase-two driver (retries, timeouts,
 *         transactions decided on a node that died or did not finish them).
 *
 * The fence (the state machine's `driverTerm`, the `driver_term` column) then orders them:
 * a decision taken on a node that does not hold the lease leaves the session at 2E, its
 * decider drives it at 2E without acquiring it, and the holder, when it takes the session
 * over (its hand-off time passed, or a retry is due), acquires it at 2E+1 — from then on the
 * decider's late commands are refused (STALE_TERM). A new epoch's terms are above every term
 * of the older ones, so a deposed holder is fenced as before.
 *
 * A session whose driver term is even was last decided or acquired by a decider: the holder
 * leaves it alone until DB_DECIDER_HANDOFF_MS after its status changed (dueAtOf in rows.ts),
 * unless its decider scheduled a retry (then the retry time).
 */
import type { Command } from '../../coordinator/commands.ts';

/** The coordinator term of a node at `epoch`: 2·epoch + 1 for the lease holder, else 2·epoch. */
export function termOfEpoch(epoch: number, holding: boolean): number {
  return 2 * epoch + (holding ? 1 : 0);
}

/** The lease epoch a coordinator term belongs to. */
export function epochOfTerm(term: number): number {
  return Math.floor(term / 2);
}

/** True when a session with this driver term was decided (or last acquired) by a decider. */
export function isDeciderTerm(driverTerm: number): boolean {
  return driverTerm % 2 === 0;
}

/** A Begin's term: the epoch's decider term, so a decision on any node of the epoch passes it. */
export function beginTermOf(term: number): number {
  return 2 * epochOfTerm(term);
}

/**
 * The commands of a TM or an operator that a driver term may refuse (STALE_TERM) although they
 * are no driver's: a commit or rollback of a decided session (answered with its status), a
 * Saga's report, an operator's stop, resume or resolve. Once the holder acquired a session at
 * 2E+1, another node's 2E would be refused; the store submits them again at the session's
 * term. None of them makes the submitting node a driver: a decision is taken from Begin only,
 * and a Begin session's term is never a holder's driver term (beginTermOf). A driver's own
 * RetryStopped (its retry horizon passed) may be lifted as well: it only stops the retries,
 * which every driver would do there — and it carries the horizon it judged, so apply refuses it
 * once an operator's forced resume moved the horizon on (a late decider's stop never undoes it).
 */
export function liftsPastFence(command: Command): boolean {
  switch (command.kind) {
    case 'CommitGlobal':
    case 'GlobalReport':
    case 'RetryResumed':
    case 'RetryStopped':
    case 'MarkResolved':
      return true;
    case 'RollbackGlobal':
      return !command.timeout;
    default:
      return false;
  }
}
