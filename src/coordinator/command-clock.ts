/**
 * Command time (DESIGN.md, "The coordinator state machine is deterministic"): the "now" a
 * leader writes into commands is max(its own clock, the latest command time it applied).
 * A new leader whose clock lags therefore never stamps a command earlier than one its
 * predecessor stamped: deadlines, retry windows and retention measured in command time do
 * not move backwards on a leader change. Timers use the same "now", so a delay is
 * measured against the time commands will carry.
 */
import type { Clock, SessionStore } from './ports.ts';

export function commandClock(clock: Clock, store: SessionStore): Clock {
  return {
    now: () => Math.max(clock.now(), appliedCommandTime(store)),
    after: (ms, fn) => clock.after(ms, fn),
    every: (ms, fn) => clock.every(ms, fn),
  };
}

/** The latest command time this node applied; 0 when it cannot tell (not serving as leader). */
function appliedCommandTime(store: SessionStore): number {
  if (!store.readLocal) return 0;
  try {
    return store.readLocal((state) => state.commandTime?.() ?? 0);
  } catch {
    return 0;
  }
}
