/**
 * Leadership hand-off before a leader stops (SIGTERM, a rolling restart): the leader picks
 * the most caught-up voter that answered recently, asks the Raft to transfer leadership to
 * it (the target campaigns at once, without waiting for an election timeout), and waits —
 * boundedly — until it no longer leads. A node that is not the leader, or finds no voter
 * to hand to, returns at once; a transfer that does not finish in time leaves the others
 * to elect a leader as they would after a crash.
 */
import type { NodeId } from '../store/raft/index.ts';
import type { Logger } from '../shared/logger.ts';
import type { RaftControl, RaftControlStatus } from './raft-control.ts';

/** How often the hand-off looks at the Raft status, ms. */
export const HANDOFF_POLL_INTERVAL_MS = 10;

export interface HandOffResult {
  /** The voter leadership was handed to; null when there was nothing to do or no one to take it. */
  to: NodeId | null;
  /** True when this node no longer leads at the end. */
  done: boolean;
  ms: number;
}

/** The voter to hand leadership to: active recently, the highest match index first, then the id. */
export function handOffTarget(st: RaftControlStatus): NodeId | null {
  if (st.role !== 'leader' || !st.progress) return null;
  const candidates = st.conf.voters
    .filter((id) => id !== st.id && st.progress?.[id]?.recentActive === true)
    .sort((a, b) => st.progress![b]!.match - st.progress![a]!.match || a.localeCompare(b));
  return candidates[0] ?? null;
}

export async function handOffLeadership(
  control: RaftControl,
  opts: { timeoutMs: number; logger: Logger; now?: () => number },
): Promise<HandOffResult> {
  const now = opts.now ?? (() => performance.now());
  const started = now();
  const st = control.status();
  if (st.role !== 'leader') return { to: null, done: true, ms: 0 };
  const to = handOffTarget(st);
  if (to === null) {
    opts.logger.warn('stopping leader found no active voter to hand leadership to');
    return { to: null, done: false, ms: 0 };
  }
  opts.logger.info(
    { to, match: st.progress?.[to]?.match },
    'handing leadership off before stopping',
  );
  try {
    control.transferLeadership(to);
  } catch (err) {
    opts.logger.warn({ err, to }, 'leadership hand-off refused');
    return { to, done: false, ms: now() - started };
  }
  for (;;) {
    await new Promise((r) => setTimeout(r, HANDOFF_POLL_INTERVAL_MS));
    const cur = control.status();
    const ms = now() - started;
    // Done once another node leads and this one knows it (its NOT_LEADER answers name it).
    if (cur.role !== 'leader' && cur.leader !== null && cur.leader !== st.id) {
      opts.logger.info({ to, leader: cur.leader, ms: Math.round(ms) }, 'leadership handed off');
      return { to, done: true, ms };
    }
    if (ms > opts.timeoutMs) {
      const stepped = cur.role !== 'leader';
      opts.logger.warn(
        { to, timeoutMs: opts.timeoutMs, steppedDown: stepped },
        'leadership hand-off did not finish in time; stopping anyway',
      );
      return { to, done: stepped, ms };
    }
  }
}
