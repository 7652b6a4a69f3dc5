/**
 * Command time (DESIGN.md, "The coordinator state machine is deterministic"; docs/time.md):
 * the "now" a leader writes into commands. Two rules:
 *
 * 1. It never goes backwards across leaders: at least the latest command time this node
 *    applied. A new leader whose clock lags does not stamp a command earlier than one its
 *    predecessor stamped.
 * 2. It never jumps ahead: it may pass its anchor — the latest applied command time when
 *    this node's term began, or a later one another node stamped — by no more than the
 *    monotonic time elapsed on this node since it anchored, run COMMAND_TIME_MAX_RATE
 *    times as fast, plus COMMAND_TIME_SLACK_MS. A new leader whose wall clock is an hour
 *    ahead therefore does not time out every open transaction and end every retry window
 *    at once (nor does an accurate one that follows a lagging one): its command time
 *    advances at about the real rate and closes the gap to its clock gradually (10 %
 *    faster than real time). Its own commands do not move the anchor, so the slack is
 *    added once per term, not per command.
 *
 * 3. It never stalls: it runs at least as fast as the monotonic time elapsed since the
 *    anchor, so a leader whose wall clock lags (an hour behind the time its predecessor
 *    stamped) does not freeze command time, and with it every deadline, until its clock
 *    catches up.
 *
 *    elapsed = mono − monoAtAnchor
 *    now = max(last applied, clamp(wall clock, anchor + elapsed, anchor + elapsed · rate + slack))
 *
 * A store that exposes no applied command time (db mode: its nodes share one database's
 * order) gets the plain clock. An empty log (command time 0) has nothing to protect: the
 * wall clock. Timers use the same "now", so a delay is measured against the time commands
 * will carry.
 */
import type { Clock, SessionStore } from './ports.ts';

/**
 * How much faster than this node's monotonic clock command time may run while it catches up
 * with its wall clock.
 */
export const COMMAND_TIME_MAX_RATE = 1.1;
/**
 * How far command time may lead the learned time plus elapsed time at once (replication
 * delay, rounding).
 */
export const COMMAND_TIME_SLACK_MS = 1_000;

export function commandClock(clock: Clock, store: SessionStore): Clock {
  const mono = clock.monotonicNow ? () => clock.monotonicNow!() : () => clock.now();
  /** The command time anchored to, this node's monotonic time then, and the term then. */
  let anchor: { time: number; mono: number; term: number } | null = null;
  /** The largest time this clock handed out: an applied time above it came from elsewhere. */
  let issued = 0;
  return {
    now: () => {
      const wall = clock.now();
      const applied = appliedCommandTime(store);
      if (applied === 0) return wall;
      const m = mono();
      const term = store.term();
      if (anchor === null || anchor.term !== term || (applied > issued && applied > anchor.time))
        anchor = { time: applied, mono: m, term };
      const elapsed = m - anchor.mono;
      const earliest = anchor.time + elapsed;
      const latest = anchor.time + elapsed * COMMAND_TIME_MAX_RATE + COMMAND_TIME_SLACK_MS;
      const time = Math.max(applied, Math.floor(Math.min(Math.max(wall, earliest), latest)));
      issued = Math.max(issued, time);
      return time;
    },
    after: (ms, fn) => clock.after(ms, fn),
    every: (ms, fn) => clock.every(ms, fn),
    monotonicNow: mono,
  };
}

/**
 * The latest command time this node applied, in any role (a new leader stamps its first
 * commands before it applied its first entry of the term); 0 when it cannot tell.
 */
function appliedCommandTime(store: SessionStore): number {
  try {
    if (store.readApplied) return store.readApplied((state) => state.commandTime?.() ?? 0);
    if (store.readLocal) return store.readLocal((state) => state.commandTime?.() ?? 0);
  } catch {
    // Not serving: nothing to read.
  }
  return 0;
}
