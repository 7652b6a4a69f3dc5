/**
 * The leadership monitor: polls every node's /health directly (not through the proxies)
 * every MONITOR_POLL_MS and records when the agreed leader changes. The timeline gives
 * the report its failover count and each fault's time to a new leader; its resolution is
 * the poll period.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { ChaosCluster, LeaderInfo } from './cluster.ts';
import { agreedLeader } from './cluster.ts';
import { MONITOR_POLL_MS } from './limits.ts';

/** A change of the agreed leader (null: none agreed, e.g. an election or a partition). */
export interface LeaderSample {
  t: number;
  leader: LeaderInfo | null;
}

export class LeaderMonitor {
  readonly timeline: LeaderSample[] = [];
  private running = false;
  private loop: Promise<void> | null = null;
  private readonly log: Logger;

  constructor(
    private readonly cluster: ChaosCluster,
    logger: Logger,
  ) {
    this.log = logger.child({ component: 'monitor' });
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }

  /** The latest agreed leader the monitor saw. */
  current(): LeaderInfo | null {
    return this.timeline.at(-1)?.leader ?? null;
  }

  private async run(): Promise<void> {
    while (this.running) {
      const started = Date.now();
      const health = await this.cluster.healthAll();
      const voters = this.cluster.nodes.filter((n) => n.member).map((n) => n.id);
      this.record(started, agreedLeader(health, voters));
      await sleep(Math.max(0, MONITOR_POLL_MS - (Date.now() - started)));
    }
  }

  private record(t: number, leader: LeaderInfo | null): void {
    const last = this.timeline.at(-1);
    if (last && last.leader?.id === leader?.id && last.leader?.term === leader?.term) return;
    this.timeline.push({ t, leader });
    this.log.info(
      { leader: leader?.id ?? null, term: leader?.term ?? null },
      leader ? 'leader observed' : 'no agreed leader',
    );
  }
}

/**
 * Leader changes: samples naming a leader different (by id or term) from the previous named one.
 */
export function countFailovers(timeline: readonly LeaderSample[]): number {
  let prev: LeaderInfo | null = null;
  let n = 0;
  for (const s of timeline) {
    if (!s.leader) continue;
    if (prev && (s.leader.id !== prev.id || s.leader.term !== prev.term)) n++;
    prev = s.leader;
  }
  return n;
}

/**
 * Time from `faultAt` to the first agreed leader with a term above `termBefore` (a new
 * leadership), if one appeared before `until`; null if leadership never changed then.
 */
export function timeToNewLeader(
  timeline: readonly LeaderSample[],
  faultAt: number,
  termBefore: number,
  until: number,
): number | null {
  for (const s of timeline) {
    if (s.t < faultAt || s.t > until) continue;
    if (s.leader && s.leader.term > termBefore) return s.t - faultAt;
  }
  return null;
}
