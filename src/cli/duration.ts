/** Durations on the command line: "500ms", "30s", "5m", "2h", "1d" (a unit is required). */
import { BadRequestError } from '../shared/errors.ts';

const UNIT_MS = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;
/** Longest duration accepted, ms (ten years: what the openapi accepts). */
export const MAX_DURATION_MS = 10 * 365 * 86_400_000;

export function parseDuration(text: string, flag: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$/.exec(text);
  if (!m)
    throw new BadRequestError(
      `${flag} ${JSON.stringify(text)} is not a duration: a number and a unit, e.g. 500ms, 30s, 5m, 2h, 1d`,
    );
  const ms = Math.round(Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS]);
  if (ms > MAX_DURATION_MS) throw new BadRequestError(`${flag} ${text} is longer than ten years`);
  return ms;
}

/** A short human form of a duration: 850ms, 42s, 7m 3s, 5h 2m, 3d 4h. */
export function formatDuration(ms: number): string {
  if (ms < 0) ms = 0;
  if (ms < 1_000) return `${Math.round(ms)}ms`;
  const s = Math.floor(ms / 1_000);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return s % 60 === 0 ? `${m}m` : `${m}m ${s % 60}s`;
  const h = Math.floor(m / 60);
  if (h < 24) return m % 60 === 0 ? `${h}h` : `${h}h ${m % 60}m`;
  const d = Math.floor(h / 24);
  return h % 24 === 0 ? `${d}d` : `${d}d ${h % 24}h`;
}
