/**
 * Resume of a failed end in db mode (issue 13 item 7), on real PostgreSQL and MariaDB: the
 * same state machine applies RetryResumed inside the database transaction, so the global
 * row goes from CommitFailed back to Committing (a compare-and-set on the status), the
 * unretryable branch row becomes retryable, and the driver (the lease holder) confirms only
 * that branch; the transaction ends Committed. Past the retry horizon the driver stops the
 * retries and a resume needs force, as in raft mode.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RetryHorizonPassedError } from '../../src/coordinator/errors.ts';
import { BranchStatus, GlobalStatus } from '../../src/coordinator/types.ts';
import type { Xid } from '../../src/shared/ids.ts';
import type { DbSessionStore, DialectName } from '../../src/store/db/index.ts';
import {
  DIALECTS,
  closeWorlds,
  openSolo,
  uniquePrefix,
  waitFor,
  type Admin,
  type DbWorld,
} from './helpers.ts';

describe.each(DIALECTS)('resume in db mode on %s', (dialect: DialectName) => {
  const prefix = uniquePrefix(dialect === 'postgres' ? 'pgr' : 'myr');
  let admin: Admin;
  let store: DbSessionStore;
  let w: DbWorld;

  beforeAll(async () => {
    ({ admin, store, w } = await openSolo(dialect, prefix, {
      phaseTwo: { retryHorizonMs: 120_000 },
    }));
    await waitFor('the lease', () => (store.drivesPhaseTwo() ? true : undefined), 20_000);
  });

  afterAll(() => closeWorlds(admin, prefix, [w]));

  async function withBranches(n: number): Promise<{ xid: Xid; branches: string[] }> {
    const { xid } = await w.coordinator.begin({
      applicationId: 'app',
      transactionServiceGroup: 'g',
      name: 'tx',
      timeoutMs: 60_000,
    });
    const branches: string[] = [];
    for (let i = 0; i < n; i++)
      branches.push(
        (
          await w.coordinator.registerBranch({
            xid,
            branchType: 'TCC',
            resourceId: `r${i}`,
            clientId: 'rm-1',
            applicationId: 'app',
          })
        ).branchId,
      );
    return { xid, branches };
  }

  const statusRow = async (xid: Xid) =>
    (await admin.query(`SELECT status FROM ${prefix}global_table WHERE xid = ?`, [xid]))[0]?.status;

  it('a CommitFailed transaction resumes to Committing and confirms only its unfinished branch', async () => {
    const { xid, branches } = await withBranches(2);
    const [first, second] = branches as [string, string];
    w.gateway.script(second, BranchStatus.PhaseTwo_CommitFailed_Unretryable);
    expect(await w.coordinator.commit({ xid })).toBe(GlobalStatus.CommitFailed);
    expect(await statusRow(xid)).toBe(GlobalStatus.CommitFailed);

    expect(await w.coordinator.resumeRetry({ xid })).toBe(GlobalStatus.Committing);
    await waitFor(
      'the resumed transaction to commit',
      async () => ((await w.coordinator.getStatus({ xid })) === 'Committed' ? true : undefined),
      20_000,
    );
    expect(await statusRow(xid)).toBeUndefined();
    const calls = w.gateway.callsFor(xid).map((c) => c.branchId);
    expect(calls).toEqual([first, second, second]);
  });

  it('past the retry horizon the retries stop; a resume needs force', async () => {
    const { xid, branches } = await withBranches(1);
    w.gateway.script(branches[0]!, ...Array<'throw'>(100_000).fill('throw'));
    expect(await w.coordinator.commit({ xid })).toBe(GlobalStatus.CommitRetrying);
    await w.clock.advance(130_000);
    await waitFor(
      'the retries to stop at the horizon',
      async () =>
        (await w.coordinator.getStatus({ xid })) === 'StopCommitOrCommitRetry' ? true : undefined,
      20_000,
    );
    await expect(w.coordinator.resumeRetry({ xid })).rejects.toBeInstanceOf(
      RetryHorizonPassedError,
    );
    w.gateway.clearScript(branches[0]!);
    await w.coordinator.resumeRetry({ xid, force: true });
    await waitFor(
      'the forced resume to commit',
      async () => ((await w.coordinator.getStatus({ xid })) === 'Committed' ? true : undefined),
      20_000,
    );
  });
});
