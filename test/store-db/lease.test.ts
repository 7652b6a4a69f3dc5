/**
 * The driver lease: one node at a time runs the phase-two driver; a killed holder's work is
 * finished by whoever takes over; a holder that lost the lease without knowing is fenced by
 * the epoch. Real databases, real time (leases expire in the database's clock).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { FakeGateway } from '../coordinator/fakes.ts';
import type { Command, Outcome } from '../../src/coordinator/commands.ts';
import { BranchStatus, GlobalStatus } from '../../src/coordinator/types.ts';
import type { DbSessionStore, DialectName } from '../../src/store/db/index.ts';
import {
  DIALECTS,
  TEST_LEASE,
  connectAdmin,
  dbWorld,
  openStore,
  uniquePrefix,
  waitFor,
  type Admin,
  type DbWorld,
} from './helpers.ts';

/** Longest a takeover may take: the lease runs out, then the next round of a waiting node. */
const TAKEOVER_MS = TEST_LEASE.leaseMs + 3 * TEST_LEASE.renewIntervalMs + 2_000;

describe.each(DIALECTS)('driver lease on %s', (dialect: DialectName) => {
  let admin: Admin;
  let prefix: string;
  let stores: DbSessionStore[] = [];
  let worlds: DbWorld[] = [];

  beforeAll(async () => {
    admin = await connectAdmin(dialect);
  });

  afterEach(async () => {
    for (const w of worlds) w.coordinator.stop();
    for (const s of stores) await s.close();
    await admin.dropTables(prefix);
    stores = [];
    worlds = [];
  });

  afterAll(async () => {
    await admin?.close();
  });

  async function nodes(n: number, gateways: FakeGateway[] = []): Promise<DbWorld[]> {
    prefix = uniquePrefix(dialect === 'postgres' ? 'pgl' : 'myl');
    for (let i = 0; i < n; i++) {
      const store = await openStore(dialect, prefix, {
        nodeId: `node${i + 1}`,
        address: `127.0.0.1:${8191 + i}`,
      });
      stores.push(store);
      const world = dbWorld(store, {
        host: `10.0.0.${i + 1}`,
        idBase: (i + 1) * 10_000_000,
        ...(gateways[i] ? { gateway: gateways[i] } : {}),
      });
      worlds.push(world);
    }
    return worlds;
  }

  const holders = () => stores.filter((s) => s.drivesPhaseTwo());
  const leaseRow = async () =>
    (await admin.query(`SELECT holder, epoch FROM ${prefix}distributed_lock`))[0];

  it('one node of three holds the lease and runs the driver; the others serve requests and know the epoch', async () => {
    const ws = await nodes(3);
    // Watch for a while: never two holders, the epoch never moves while the holder lives.
    const epoch = ws[0]!.store.epoch();
    for (let i = 0; i < 20; i++) {
      expect(holders()).toHaveLength(1);
      expect(ws.filter((w) => w.coordinator.driver.isActive)).toHaveLength(1);
      await new Promise((r) => setTimeout(r, 50));
    }
    expect(stores[0]!.drivesPhaseTwo()).toBe(true);
    expect(stores.map((s) => s.epoch())).toEqual([epoch, epoch, epoch]);
    expect(await leaseRow()).toMatchObject({ holder: stores[0]!.leaseHolderId });
    // Every node knows who drives, and where: an RM's callback channel is sent there (the
    // TC edge adds the holder's address to a not-leader answer from the cluster view).
    for (const s of stores)
      expect(s.leaseHolder()).toEqual({ nodeId: 'node1', address: '127.0.0.1:8191', epoch });
    expect(stores[2]!.notLeaderError()).toMatchObject({ code: 'NOT_LEADER', leaderId: 'node1' });
    expect(stores.every((s) => s.hasLeaderRole())).toBe(true);
    // Any node serves TC requests.
    for (const w of ws) {
      const { xid } = await w.coordinator.begin({
        applicationId: 'app',
        transactionServiceGroup: 'g',
        timeoutMs: 60_000,
      });
      await w.coordinator.registerBranch({
        xid,
        branchType: 'TCC',
        resourceId: 'db',
        clientId: 'rm',
        applicationId: 'app',
      });
      expect(w.store.isLeader()).toBe(true);
      // Decided on a node that does not drive: the holder finishes it.
      await w.coordinator.commit({ xid });
      await waitFor('the holder to finish it', async () => {
        for (const x of ws) await x.clock.advance(200);
        return (await w.coordinator.getStatus({ xid })) === GlobalStatus.Committed
          ? true
          : undefined;
      });
    }
  });

  it('a holder killed mid phase two: another node takes the lease over with a higher epoch and finishes the Committing transaction', async () => {
    const stuck = new FakeGateway();
    // the first holder's RM calls never return: it dies with phase two half done
    stuck.manual = true;
    const ws = await nodes(3, [stuck]);
    const [a] = ws;
    const events: { node: number; isLeader: boolean; term: number }[] = [];
    stores.forEach((s, i) => s.onLeadershipChange((e) => events.push({ node: i, ...e })));

    const { xid } = await a!.coordinator.begin({
      applicationId: 'app',
      transactionServiceGroup: 'g',
      timeoutMs: 60_000,
    });
    await a!.coordinator.registerBranch({
      xid,
      branchType: 'TCC',
      resourceId: 'db',
      lockKey: 'k:1',
      clientId: 'rm',
      applicationId: 'app',
    });
    const b2 = (
      await a!.coordinator.registerBranch({
        xid,
        branchType: 'TCC',
        resourceId: 'db',
        lockKey: 'k:2',
        clientId: 'rm',
        applicationId: 'app',
      })
    ).branchId;
    void a!.coordinator.commit({ xid }).catch(() => undefined);
    await waitFor('the first branch call', () => (stuck.pendingCount > 0 ? true : undefined));
    stuck.settle(0, 'success'); // branch 1 committed and recorded, then the node dies on branch 2
    await waitFor('the second branch call', async () => {
      const session = await stores[1]!.read((s) => s.getSession(xid));
      return session?.branches[0]?.status === BranchStatus.PhaseTwo_Committed &&
        stuck.pendingCount > 0
        ? true
        : undefined;
    });
    const oldEpoch = stores[0]!.term();
    expect(await stores[1]!.read((s) => s.getSession(xid)?.status)).toBe(GlobalStatus.Committing);
    expect(await stores[1]!.read((s) => s.getSession(xid)?.driverTerm)).toBe(oldEpoch);

    // SIGKILL: connections cut, lease not released, nothing told.
    a!.coordinator.stop();
    stores[0]!.abandon();

    await waitFor('a new holder', () => (holders().length === 1 ? true : undefined), TAKEOVER_MS);
    const heir = holders()[0]!;
    expect(heir).not.toBe(stores[0]);
    expect(heir.term()).toBeGreaterThan(oldEpoch);
    await waitFor(
      'phase two finished by the new holder',
      async () =>
        (await heir.read((s) => s.getFinished(xid)?.status)) === GlobalStatus.Committed
          ? true
          : undefined,
      10_000,
    );
    const heirWorld = worlds[stores.indexOf(heir)]!;
    // The new holder re-drove the branch left undone (and only that one: branch 1 was recorded).
    expect(heirWorld.gateway.callsFor(xid).map((c) => c.branchId)).toEqual([b2]);
    expect(await admin.query(`SELECT row_key FROM ${prefix}lock_table`)).toEqual([]);
    expect(
      events.some((e) => e.node === stores.indexOf(heir) && e.isLeader && e.term === heir.term()),
    ).toBe(true);
    expect((await leaseRow())?.holder).toBe(heir.leaseHolderId);
    const heirIndex = stores.indexOf(heir);
    for (const s of stores.slice(1)) {
      await waitFor(
        'every live node to learn the new holder',
        () => (s.leaseHolder()?.nodeId === `node${heirIndex + 1}` ? true : undefined),
        TAKEOVER_MS,
      );
    }
    expect(stores[1]!.leaseHolder()).toEqual({
      nodeId: `node${heirIndex + 1}`,
      address: `127.0.0.1:${8191 + heirIndex}`,
      epoch: heir.epoch(),
    });
    stores.splice(0, 1); // already gone
    worlds.splice(0, 1);
  });

  it('a graceful close releases the lease: another node takes over at once', async () => {
    await nodes(2);
    const epoch = stores[0]!.epoch();
    worlds[0]!.coordinator.stop();
    await stores[0]!.close();
    const started = Date.now();
    await waitFor(
      'the other node to take over',
      () => (stores[1]!.drivesPhaseTwo() ? true : undefined),
      TAKEOVER_MS,
    );
    // Released, not expired: the next renew round takes it, well before a lease runs out.
    expect(Date.now() - started).toBeLessThan(TEST_LEASE.leaseMs);
    expect(stores[1]!.epoch()).toBe(epoch + 1);
    expect(worlds[1]!.coordinator.driver.isActive).toBe(true);
    stores.splice(0, 1);
    worlds.splice(0, 1);
  });

  it('a holder that lost the lease without knowing (paused) is fenced: its late phase-two result is refused', async () => {
    const slowA = new FakeGateway();
    slowA.manual = true;
    const slowB = new FakeGateway();
    slowB.manual = true;
    await nodes(2, [slowA, slowB]);
    const [a, b] = worlds;
    const applied: { node: string; command: Command; outcome: Outcome<unknown> }[] = [];
    stores[0]!.onApply((command, outcome) => applied.push({ node: 'a', command, outcome }));

    const { xid } = await a!.coordinator.begin({
      applicationId: 'app',
      transactionServiceGroup: 'g',
      timeoutMs: 60_000,
    });
    const branchId = (
      await a!.coordinator.registerBranch({
        xid,
        branchType: 'TCC',
        resourceId: 'db',
        lockKey: 'p:1',
        clientId: 'rm',
        applicationId: 'app',
      })
    ).branchId;
    void a!.coordinator.commit({ xid }).catch(() => undefined);
    await waitFor('A to call the branch', () => (slowA.pendingCount > 0 ? true : undefined));
    const oldEpoch = stores[0]!.term();

    // A freezes (a long GC pause): it still believes it holds the lease, its driver still runs.
    stores[0]!.freezeLease();
    await waitFor(
      'B to take over',
      () => (stores[1]!.drivesPhaseTwo() ? true : undefined),
      TAKEOVER_MS,
    );
    expect(stores[0]!.drivesPhaseTwo()).toBe(true); // A does not know
    await waitFor(
      'B to acquire the transaction and call the branch',
      () => (slowB.pendingCount > 0 ? true : undefined),
      10_000,
    );
    expect(await stores[1]!.read((s) => s.getSession(xid)?.driverTerm)).toBe(stores[1]!.term());

    // A's RM answers late; A records the result with its old epoch: the fence refuses it.
    slowA.settle(0, 'success');
    await waitFor('A to try to record its result', () =>
      applied.find((x) => x.command.kind === 'BranchPhaseTwoResult'),
    );
    const late = applied.find((x) => x.command.kind === 'BranchPhaseTwoResult')!;
    expect(late.outcome).toMatchObject({
      ok: false,
      rejection: { code: 'STALE_TERM', term: oldEpoch, driverTerm: stores[1]!.term() },
    });
    expect(
      await stores[1]!.read(
        (s) => s.getSession(xid)?.branches.find((x) => x.branchId === branchId)?.status,
      ),
    ).toBe(BranchStatus.Registered);

    // B's own call decides.
    slowB.settle(0, 'success');
    await waitFor(
      'B to finish',
      async () =>
        (await stores[1]!.read((s) => s.getFinished(xid)?.status)) === GlobalStatus.Committed
          ? true
          : undefined,
      10_000,
    );
    expect(b!.coordinator.driver.isActive).toBe(true);
  });

  it('a node killed in the middle of a transaction loses nothing acknowledged and leaves nothing half-written', async () => {
    await nodes(2);
    const [a, b] = worlds;
    const { xid } = await b!.coordinator.begin({
      applicationId: 'app',
      transactionServiceGroup: 'g',
      timeoutMs: 60_000,
    });
    await b!.coordinator.registerBranch({
      xid,
      branchType: 'TCC',
      resourceId: 'db',
      lockKey: 'm:1',
      clientId: 'rm',
      applicationId: 'app',
    });
    // Hold the transaction's row so A's register is stuck inside its database transaction...
    const blocker = await admin.begin();
    await blocker.query(`SELECT xid FROM ${prefix}global_table WHERE xid = ? FOR UPDATE`, [xid]);
    const inFlight = a!.coordinator
      .registerBranch({
        xid,
        branchType: 'TCC',
        resourceId: 'db',
        lockKey: 'm:2,3',
        clientId: 'rm',
        applicationId: 'app',
      })
      .then(
        () => 'acknowledged',
        (err: unknown) => err,
      );
    await new Promise((r) => setTimeout(r, 200));
    // ...and kill A there.
    a!.coordinator.stop();
    stores[0]!.abandon();
    await blocker.rollback();
    const result = await inFlight;
    expect(result).not.toBe('acknowledged');
    expect((result as { retryable?: boolean }).retryable).toBe(true);
    // Nothing of it was written; the transaction goes on from the other node.
    const session = await stores[1]!.read((s) => s.getSession(xid));
    expect(session?.branches).toHaveLength(1);
    expect(
      (await admin.query(`SELECT row_key FROM ${prefix}lock_table`)).map((r) => String(r.row_key)),
    ).toEqual(['db^^^m^^^1']);
    await waitFor(
      'B to hold the lease',
      () => (stores[1]!.drivesPhaseTwo() ? true : undefined),
      TAKEOVER_MS,
    );
    expect(await b!.coordinator.commit({ xid })).toBe(GlobalStatus.Committed);
    stores.splice(0, 1);
    worlds.splice(0, 1);
  });
});
