/**
 * The SDK's RM refuses a phase-two request for a branch of another application: a typed
 * error (ForeignBranchError), and the action never runs. A resource id is unique within an
 * application only, so another team's action of the same name is not this one.
 */
import { describe, expect, it } from 'vitest';
import { createClient, currentXid, ForeignBranchError } from '../../src/index.ts';
import { FakeTc } from './helpers/fake-tc.ts';

function setup(applicationId: string) {
  const tc = new FakeTc();
  const client = createClient({ servers: 'unused:1', applicationId, tc });
  const ran: string[] = [];
  const debit = client.tcc.register({
    name: 'debit',
    try: () => ran.push('try'),
    confirm: () => void ran.push('confirm'),
    cancel: () => void ran.push('cancel'),
  });
  const ship = client.saga.register({
    name: 'ship',
    action: () => ran.push('action'),
    compensate: () => void ran.push('compensate'),
  });
  return { tc, client, debit, ship, ran };
}

const request = (over: Record<string, unknown> = {}) => ({
  kind: 'commit' as const,
  xid: '127.0.0.1:8091:1',
  branchId: '7',
  branchType: 'TCC' as const,
  resourceId: 'debit',
  applicationData: '{"concord":1,"args":null}',
  applicationId: 'team-a',
  ...over,
});

describe('the RM refuses a branch of another application', () => {
  it('confirm, cancel and compensate of another application are refused with ForeignBranchError; nothing runs', async () => {
    const { tc, ran } = setup('team-a');
    for (const r of [
      request({ applicationId: 'team-b' }),
      request({ applicationId: 'team-b', kind: 'rollback' }),
      request({
        applicationId: 'team-b',
        kind: 'rollback',
        branchType: 'SAGA',
        resourceId: 'ship',
      }),
      // A request that names no application is no branch of ours either.
      request({ applicationId: '' }),
    ]) {
      const refused = await tc.deliver(r).then(
        () => null,
        (err: unknown) => err,
      );
      expect(refused).toBeInstanceOf(ForeignBranchError);
      const err = refused as ForeignBranchError;
      expect(err.name).toBe('ForeignBranchError');
      expect(err.code).toBe('BAD_REQUEST');
      expect(err.retryable).toBe(true);
      expect(err.branchApplicationId).toBe(r.applicationId);
      expect(err.applicationId).toBe('team-a');
      expect(err.message).toMatch(/nothing ran/);
    }
    expect(ran).toEqual([]);
  });

  it('its own application’s request runs as usual', async () => {
    const { tc, ran } = setup('team-a');
    expect(await tc.deliver(request())).toBe('PhaseTwo_Committed');
    expect(await tc.deliver(request({ kind: 'rollback', branchId: '8' }))).toBe(
      'PhaseTwo_Rollbacked',
    );
    expect(ran).toEqual(['confirm', 'cancel']);
  });

  it('a branch registered by the SDK carries the client’s application, and its phase two comes back to it', async () => {
    const { tc, client, debit, ran } = setup('team-a');
    let xid = '';
    await client.transaction({}, async () => {
      xid = currentXid()!;
      await debit();
    });
    const branch = tc.sessions.get(xid)!.branches[0]!;
    expect(branch.applicationId).toBe('team-a');
    expect(tc.sessions.get(xid)!.status).toBe('Committed');
    expect(ran).toEqual(['try', 'confirm']);
  });
});
