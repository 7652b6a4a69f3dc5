/**
 * The driver lease: which node runs the phase-two driver (retries, async commit, timeouts)
 * — one at a time — kept in the distributed_lock table (Seata's table of the same name).
 *
 * One row: holder, holder_address, epoch, expire_at. expire_at is in the DATABASE's clock, so node
 * clocks never have to agree. Every renew interval each node runs one short transaction that locks
 * the row and then:
 *   - renews it (expire_at = now + lease) if this node holds it and still believes so;
 *   - takes it over if it expired, or if the row names this node but the node had stepped
 *     down (both bump the epoch);
 *   - otherwise only notes the epoch.
 *
 * The epoch is the coordinator's `term`: it only grows, every takeover bumps it, and the
 * new holder's driver stamps AcquireDriver with it, after which the coordinator's state
 * machine refuses any command of the old epoch for that transaction. So a holder that lost
 * the lease without knowing (paused, partitioned) cannot overwrite what the new one records.
 *
 * The holder also steps down on its own: it measures the lease from when it SENT the
 * renewal (earlier than the database granted it) minus a safety margin, and stops its
 * driver when that runs out without a successful renewal — before any other node can take
 * the lease over.
 */
import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Logger } from '../../shared/logger.ts';
import { ConfigError } from '../../shared/errors.ts';
import { DB_LEASE_MS, DB_LEASE_RENEW_INTERVAL_MS, DB_LEASE_SAFETY_MARGIN_MS } from './limits.ts';
import { intOf, textOf, type SqlConn, type SqlDriver, type TableNames } from './sql.ts';

export interface LeaseOptions {
  /** Lease length, ms. Default DB_LEASE_MS (10 s). */
  leaseMs: number;
  /**
   * Renew (and look for an expired lease) every this many ms. Default DB_LEASE_RENEW_INTERVAL_MS (2
   * s).
   */
  renewIntervalMs: number;
  /**
   * The holder stops this long before the lease would expire, ms. Default DB_LEASE_SAFETY_MARGIN_MS
   * (1 s).
   */
  safetyMarginMs: number;
}

export const DEFAULT_LEASE_OPTIONS: Readonly<LeaseOptions> = {
  leaseMs: DB_LEASE_MS,
  renewIntervalMs: DB_LEASE_RENEW_INTERVAL_MS,
  safetyMarginMs: DB_LEASE_SAFETY_MARGIN_MS,
};

/** The row's key: one driver lease per set of tables. */
export const DRIVER_LEASE_KEY = 'concord-phase-two-driver';

export function validateLeaseOptions(o: LeaseOptions): LeaseOptions {
  for (const key of ['leaseMs', 'renewIntervalMs', 'safetyMarginMs'] as const) {
    if (!Number.isSafeInteger(o[key]) || o[key] <= 0)
      throw new ConfigError(
        `lease.${key}`,
        `must be a positive integer of ms, got ${String(o[key])}`,
      );
  }
  // At least two renewal attempts fit in the part of the lease the holder uses.
  if (o.renewIntervalMs * 2 > o.leaseMs - o.safetyMarginMs) {
    throw new ConfigError(
      'lease.renewIntervalMs',
      `two renewals (${o.renewIntervalMs} ms each) must fit in leaseMs - safetyMarginMs (${o.leaseMs - o.safetyMarginMs} ms)`,
    );
  }
  return o;
}

type ClaimResult =
  | { holding: true; epoch: number }
  | { holding: false; epoch: number; holder: string; holderAddress: string; expired: boolean };

/** Who holds the lease, as this node last saw it. */
export interface LeaseHolder {
  /** The holder's node id. */
  nodeId: string;
  /** Its client-facing TC address (host:port), or null if it did not give one. */
  address: string | null;
  epoch: number;
}

export interface LeaseEvents {
  /** The lease was gained (a new epoch) or lost. */
  onChange(holding: boolean, epoch: number): void;
  /** A lease statement failed; the store decides whether the database is down. */
  onError(err: unknown): void;
}

export class DriverLease {
  /** This process's identity in the lease row: the node id plus a per-start nonce. */
  readonly holderId: string;
  private holding = false;
  private myEpoch = 0;
  private knownEpoch = 0;
  /** performance.now() after which this node must consider the lease lost. */
  private localDeadline = 0;
  private timer: ReturnType<typeof setInterval> | null = null;
  private expiryTimer: ReturnType<typeof setTimeout> | null = null;
  private ticking: Promise<void> | null = null;
  private holderSeen: LeaseHolder | null = null;
  private stopped = false;
  private frozen = false;

  constructor(
    private readonly driver: SqlDriver,
    private readonly tables: TableNames,
    private readonly nodeId: string,
    /** This node's TC address, written into the row while it holds the lease ('' for none). */
    private readonly address: string,
    private readonly options: LeaseOptions,
    private readonly events: LeaseEvents,
    private readonly log: Logger,
  ) {
    this.holderId = `${nodeId}#${randomBytes(6).toString('hex')}`;
  }

  get isHolder(): boolean {
    return this.holding;
  }

  /**
   * The holder as of the last lease round (this node itself while it holds it); null if none is
   * known.
   */
  get holder(): LeaseHolder | null {
    if (this.holding)
      return {
        nodeId: this.nodeId,
        address: this.address === '' ? null : this.address,
        epoch: this.myEpoch,
      };
    return this.holderSeen;
  }

  /** The highest epoch this node has seen (its own while it holds the lease). */
  get epoch(): number {
    return this.knownEpoch;
  }

  /** Learns of a newer epoch from elsewhere (a fenced command names the epoch that fenced it). */
  observe(epoch: number): void {
    if (epoch > this.knownEpoch) this.knownEpoch = epoch;
  }

  /**
   * Runs the first claim (so the node knows the epoch before it serves), then renews on a timer.
   */
  async start(): Promise<void> {
    await this.tick();
    if (this.stopped) return;
    this.timer = setInterval(() => void this.tick(), this.options.renewIntervalMs);
    this.timer.unref?.();
  }

  /** Stops renewing; releases the lease (so another node takes over at once) when `release`. */
  async stop(release: boolean): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.clearExpiryTimer();
    await this.ticking?.catch(() => undefined);
    this.stepDown('node stopping', 'info');
    if (release) {
      // By holder id, not by what this node believes: a round that won the row while the
      // node was stopping is released too. A row naming this process is held by no one else.
      try {
        const released = await this.driver.query(
          `UPDATE ${this.tables.distributedLock} SET expire_at = 0 WHERE lock_key = ? AND holder = ?`,
          [DRIVER_LEASE_KEY, this.holderId],
        );
        if (released.affected > 0) this.log.info({ epoch: this.myEpoch }, 'driver lease released');
      } catch (err) {
        this.log.warn({ err }, 'could not release the driver lease; it expires on its own');
      }
    }
  }

  /**
   * Test hook: play a process frozen by a long pause. It neither renews nor notices that
   * its lease ran out, so its driver keeps working with the old epoch.
   */
  freeze(): void {
    this.frozen = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.clearExpiryTimer();
  }

  /** One claim round; never overlaps another, never throws. */
  tick(): Promise<void> {
    if (this.stopped || this.frozen) return Promise.resolve();
    this.ticking ??= this.claimRound().finally(() => {
      this.ticking = null;
    });
    return this.ticking;
  }

  private async claimRound(): Promise<void> {
    const sentAt = performance.now();
    let result: ClaimResult;
    try {
      result = await this.driver.transaction('write', (conn) => this.claim(conn));
    } catch (err) {
      if (this.driver.classify(err) === 'duplicate') {
        this.log.debug('another node created the lease row first');
      } else {
        this.log.warn({ err, holding: this.holding }, 'driver lease round failed');
        this.events.onError(err);
      }
      this.checkLocalExpiry();
      return;
    }
    if (this.stopped || this.frozen) return;
    this.observe(result.epoch);
    if (result.holding) {
      this.localDeadline = sentAt + this.options.leaseMs - this.options.safetyMarginMs;
      this.armExpiryTimer();
      if (!this.holding || this.myEpoch !== result.epoch) {
        if (this.holding) this.stepDown('lease epoch moved');
        this.holding = true;
        this.myEpoch = result.epoch;
        this.log.info(
          { epoch: result.epoch, holder: this.holderId },
          'driver lease acquired: this node runs the phase-two driver',
        );
        this.events.onChange(true, result.epoch);
      }
    } else {
      this.holderSeen = result.expired
        ? null
        : {
            nodeId: result.holder.replace(/#[^#]*$/, ''),
            address: result.holderAddress === '' ? null : result.holderAddress,
            epoch: result.epoch,
          };
      if (this.holding)
        this.stepDown(`the lease is held by ${result.holder} at epoch ${result.epoch}`);
    }
    this.checkLocalExpiry();
  }

  /** The lease transaction: lock the row, decide, write. */
  private async claim(conn: SqlConn): Promise<ClaimResult> {
    const t = this.tables.distributedLock;
    const now = this.driver.nowMsSql;
    const found = await conn.query(
      `SELECT holder, holder_address, epoch, expire_at, ${now} AS db_now FROM ${t} WHERE lock_key = ? FOR UPDATE`,
      [DRIVER_LEASE_KEY],
    );
    const row = found.rows[0];
    if (!row) {
      // The first node ever: epoch 1. A racing node's INSERT fails on the key and retries next
      // round.
      await conn.query(
        `INSERT INTO ${t} (lock_key, holder, holder_address, epoch, expire_at) VALUES (?, ?, ?, 1, ${now} + ?)`,
        [DRIVER_LEASE_KEY, this.holderId, this.address, this.options.leaseMs],
      );
      return { holding: true, epoch: 1 };
    }
    const holder = textOf(row.holder, 'holder');
    const epoch = intOf(row.epoch, 'epoch');
    const expired = intOf(row.expire_at, 'expire_at') <= intOf(row.db_now, 'db_now');
    if (holder === this.holderId && this.holding && epoch === this.myEpoch && !expired) {
      await conn.query(
        `UPDATE ${t} SET expire_at = ${now} + ? WHERE lock_key = ? AND holder = ? AND epoch = ?`,
        [this.options.leaseMs, DRIVER_LEASE_KEY, this.holderId, epoch],
      );
      return { holding: true, epoch };
    }
    if (expired || holder === this.holderId) {
      // Free, or ours from before we stepped down: a new epoch either way, so nothing the
      // old one still has in flight can pass the fence of what the new one acquires.
      const next = epoch + 1;
      await conn.query(
        `UPDATE ${t} SET holder = ?, holder_address = ?, epoch = ?, expire_at = ${now} + ? WHERE lock_key = ? AND epoch = ?`,
        [this.holderId, this.address, next, this.options.leaseMs, DRIVER_LEASE_KEY, epoch],
      );
      return { holding: true, epoch: next };
    }
    return {
      holding: false,
      epoch,
      holder,
      holderAddress: textOf(row.holder_address, 'holder_address'),
      expired,
    };
  }

  private armExpiryTimer(): void {
    this.clearExpiryTimer();
    const delay = Math.max(0, this.localDeadline - performance.now());
    this.expiryTimer = setTimeout(() => this.checkLocalExpiry(), delay + 1);
    this.expiryTimer.unref?.();
  }

  private clearExpiryTimer(): void {
    if (this.expiryTimer) clearTimeout(this.expiryTimer);
    this.expiryTimer = null;
  }

  private checkLocalExpiry(): void {
    if (this.holding && !this.frozen && performance.now() >= this.localDeadline) {
      this.stepDown('the lease ran out without a successful renewal');
    }
  }

  private stepDown(reason: string, level: 'info' | 'warn' = 'warn'): void {
    if (!this.holding) return;
    this.holding = false;
    this.clearExpiryTimer();
    this.log[level](
      { epoch: this.myEpoch, reason },
      'driver lease given up: this node stops its phase-two driver',
    );
    this.events.onChange(false, this.knownEpoch);
  }
}
