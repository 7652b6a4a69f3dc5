/**
 * Graceful shutdown on real node processes: SIGTERM to the leader hands leadership to a
 * caught-up voter before the node stops, so a new leader is in place well within an
 * election timeout (a crashed leader costs at least one), and TM calls running through it
 * all succeed; the stopped node exits cleanly. A follower's SIGTERM changes no leadership.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TcClient } from '../../src/client/tc-client.ts';
import { TestCluster, waitFor, type TestNode } from './helpers.ts';

const TICK_MS = 100;
const ELECTION_TICKS = 30;
/** The shortest election timeout of this cluster: a crashed leader is replaced no sooner. */
const ELECTION_TIMEOUT_MS = TICK_MS * ELECTION_TICKS;
const APP = { applicationId: 'shutdown', transactionServiceGroup: 'default' };

let cluster: TestCluster;
let tc: TcClient;

beforeAll(async () => {
  cluster = await TestCluster.start('shutdown', { tickMs: TICK_MS, electionTicks: ELECTION_TICKS });
  tc = cluster.client();
}, 120_000);

afterAll(async () => {
  await tc?.close();
  await cluster?.stop();
}, 60_000);

/** What a surviving node names as leader and term, or null. */
async function leaderSeenBy(
  n: TestNode,
): Promise<{ leaderId: string | null; term: number } | null> {
  try {
    const md = await cluster.metadata(n);
    return { leaderId: md.leaderId, term: md.term };
  } catch {
    return null;
  }
}

/** Light load: begin + commit in a loop; records every failure. */
function load() {
  const failures: string[] = [];
  let calls = 0;
  let running = true;
  const done = (async () => {
    while (running) {
      try {
        const xid = await tc.begin({ ...APP, name: 'load', timeoutMs: 60_000 });
        await tc.commit(xid);
        calls++;
      } catch (err) {
        failures.push(`${(err as Error).name}: ${(err as Error).message}`);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  return {
    failures,
    calls: () => calls,
    stop: async () => {
      running = false;
      await done;
    },
  };
}

describe('graceful shutdown', () => {
  it('SIGTERM to the leader: a new leader within well under an election timeout, and no call fails', async () => {
    const old = await cluster.leader();
    const termBefore = (await cluster.metadata(old)).term;
    const others = cluster.followers(old);
    const traffic = load();
    // The load runs (the client found the leader) before the leader is stopped.
    await waitFor(
      'the load running',
      async () => (traffic.calls() >= 3 ? true : undefined),
      30_000,
    );

    const proc = old.proc!;
    const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
    const sentAt = performance.now();
    proc.kill('SIGTERM');
    let newLeaderAfterMs: number | null = null;
    while (performance.now() - sentAt < 3 * ELECTION_TIMEOUT_MS) {
      const seen = await Promise.all(others.map(leaderSeenBy));
      const id = seen[0]?.leaderId ?? null;
      if (
        id !== null &&
        id !== old.id &&
        seen.every((s) => s !== null && s.leaderId === id && s.term > termBefore)
      ) {
        newLeaderAfterMs = performance.now() - sentAt;
        break;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(await exited).toBe(0);
    // Let the load run on the new leader for a while, then check nothing failed.
    const atHandOff = traffic.calls();
    await new Promise((r) => setTimeout(r, 1_000));
    await traffic.stop();
    expect(newLeaderAfterMs, 'a new leader agreed by the survivors').not.toBeNull();
    // A crashed leader is replaced after an election timeout at the earliest; the hand-off
    // needs a few round trips (the bound leaves room for a loaded machine).
    expect(newLeaderAfterMs!).toBeLessThan(ELECTION_TIMEOUT_MS / 2);
    expect(traffic.failures).toEqual([]);
    expect(traffic.calls()).toBeGreaterThan(atHandOff);
    cluster.restart(old);
    await cluster.leader(60_000);
  }, 120_000);

  it('SIGTERM to a follower: the leadership stays, no call fails, the node exits cleanly', async () => {
    const leader = await cluster.leader(60_000);
    const termBefore = (await cluster.metadata(leader)).term;
    const [follower] = cluster.followers(leader);
    const traffic = load();
    await waitFor(
      'the load running',
      async () => (traffic.calls() >= 3 ? true : undefined),
      30_000,
    );
    const proc = follower!.proc!;
    const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
    proc.kill('SIGTERM');
    expect(await exited).toBe(0);
    await new Promise((r) => setTimeout(r, 500));
    await traffic.stop();
    expect(traffic.failures).toEqual([]);
    const md = await cluster.metadata(leader);
    expect(md.leaderId).toBe(leader.id);
    expect(md.term).toBe(termBefore);
  }, 60_000);
});
