/**
 * The nemesis: runs a planned schedule (chaos/schedule.ts) against the real cluster and
 * clients, one step after another, and records what each step actually did and when —
 * the report's failover timings come from these records and the leader monitor.
 *
 * Every step heals what it broke before it ends (restarts the killed node, resumes the
 * paused one, lifts the partition, re-adds the removed member, restarts the killed
 * client); `healAll` is the belt to those braces, run once after the fault phase (and on
 * an error), so the checker always looks at a whole, healthy cluster.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { ClientPool } from './clients.ts';
import type { ChaosCluster, LeaderInfo } from './cluster.ts';
import { STEP_TIMEOUT_MS } from './limits.ts';
import { resolveTarget, type NemesisKind, type NemesisStep } from './schedule.ts';

export interface StepRecord {
  n: number;
  kind: NemesisKind;
  /** The node (or client) the step hit. */
  target: string | null;
  /** The agreed leader just before the fault. */
  leaderBefore: LeaderInfo | null;
  /** When the fault was injected (ms since the epoch): the origin of the step's timings. */
  faultAt: number;
  /** When the step finished healing (node answering again, partition lifted, ...). */
  healedAt: number;
  detail: string;
  error?: string;
}

/** How long a step waits for a leader before choosing its target anyway, ms. */
const LEADER_BEFORE_STEP_WAIT_MS = 10_000;

export class Nemesis {
  readonly records: StepRecord[] = [];
  private readonly log: Logger;
  private aborted = false;

  constructor(
    private readonly cluster: ChaosCluster,
    private readonly clients: ClientPool,
    logger: Logger,
  ) {
    this.log = logger.child({ component: 'nemesis' });
  }

  /** Stops after the current step. */
  abort(): void {
    this.aborted = true;
  }

  /** Runs the steps in order; throws on the first step that fails or exceeds STEP_TIMEOUT_MS. */
  async run(steps: readonly NemesisStep[]): Promise<void> {
    for (const step of steps) {
      if (this.aborted) return;
      const record = await this.runStep(step);
      this.records.push(record);
      if (record.error)
        throw new Error(`nemesis step #${step.n} (${step.kind}) failed: ${record.error}`);
      await sleep(step.gapAfterMs);
    }
  }

  private async runStep(step: NemesisStep): Promise<StepRecord> {
    const leaderBefore = await this.cluster
      .waitForLeader(LEADER_BEFORE_STEP_WAIT_MS, `before step #${step.n}`)
      .catch(() => null);
    const record: StepRecord = {
      n: step.n,
      kind: step.kind,
      target: null,
      leaderBefore,
      faultAt: Date.now(),
      healedAt: 0,
      detail: '',
    };
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        this.execute(step, record),
        new Promise((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`did not finish within ${STEP_TIMEOUT_MS} ms`)),
            STEP_TIMEOUT_MS,
          );
        }),
      ]);
    } catch (err) {
      record.error = (err as Error).message;
    } finally {
      clearTimeout(timer);
    }
    record.healedAt = Date.now();
    this.log.info(
      {
        step: step.n,
        kind: step.kind,
        target: record.target,
        ms: record.healedAt - record.faultAt,
        error: record.error,
      },
      `nemesis: ${record.detail}`,
    );
    return record;
  }

  private members(): string[] {
    return this.cluster.nodes.filter((n) => n.member).map((n) => n.id);
  }

  private async execute(step: NemesisStep, r: StepRecord): Promise<void> {
    const nodes = { leader: r.leaderBefore?.id ?? null, members: this.members() };
    switch (step.kind) {
      case 'kill': {
        const id = (r.target = resolveTarget(step.target, step.pick, nodes));
        if (!id) throw new Error('no node to kill');
        r.detail = `SIGKILL ${id} (${step.target}), down ${step.downMs} ms`;
        r.faultAt = Date.now();
        await this.cluster.kill(id);
        await sleep(step.downMs);
        await this.cluster.start(id);
        return;
      }
      case 'pause': {
        const id = (r.target = resolveTarget(step.target, step.pick, nodes));
        if (!id) throw new Error('no node to pause');
        r.detail = `SIGSTOP ${id} (${step.target}) for ${step.pauseMs} ms`;
        r.faultAt = Date.now();
        this.cluster.pause(id);
        try {
          await sleep(step.pauseMs);
        } finally {
          this.cluster.resume(id);
        }
        return;
      }
      case 'partition': {
        const id = (r.target = resolveTarget(step.target, step.pick, nodes));
        if (!id) throw new Error('no node to partition');
        r.detail = `isolate ${id} (${step.target}) by ${step.mode} for ${step.holdMs} ms`;
        r.faultAt = Date.now();
        this.cluster.table.isolate(id, step.mode);
        try {
          await sleep(step.holdMs);
        } finally {
          this.cluster.table.heal();
        }
        return;
      }
      case 'restart-all': {
        r.target = 'all';
        r.detail = `SIGKILL all nodes, restart after ${step.downMs} ms`;
        r.faultAt = Date.now();
        await Promise.all(this.cluster.ids().map((id) => this.cluster.kill(id)));
        await sleep(step.downMs);
        await Promise.all(this.cluster.ids().map((id) => this.cluster.start(id)));
        return;
      }
      case 'membership': {
        const id = (r.target = resolveTarget(step.target, step.pick, nodes));
        if (!id) throw new Error('no member to remove');
        r.detail = `remove ${id} (${step.target}) by changeCluster, wipe, re-add`;
        r.faultAt = Date.now();
        await this.cluster.removeMember(id);
        await this.cluster.readdMember(id);
        return;
      }
      case 'client-kill': {
        const name = (r.target = this.clients.nameOf(step.client));
        r.detail = `SIGKILL client ${name}, restart after ${step.downMs} ms`;
        r.faultAt = Date.now();
        await this.clients.kill(step.client);
        await sleep(step.downMs);
        await this.clients.start(step.client);
        return;
      }
    }
  }

  /** Lifts every fault: partitions, pauses, dead nodes, dead clients. */
  async healAll(): Promise<void> {
    this.cluster.table.heal();
    for (const n of this.cluster.nodes) if (n.proc?.isPaused) this.cluster.resume(n.id);
    for (const n of this.cluster.nodes) {
      if (!n.member) {
        this.log.info({ node: n.id }, 'healing: re-adding a node a failed step left removed');
        await this.cluster.readdMember(n.id);
      } else if (!this.cluster.isRunning(n.id)) {
        this.log.info({ node: n.id }, 'healing: restarting a node that is down');
        await this.cluster.start(n.id);
      }
    }
    await this.clients.reviveAll();
  }
}
