/**
 * The operator's pages of live sessions (GET /tx/v1/sessions, ListSessions) read a bounded
 * page after their cursor from the state machine's ordered xid index (issue 19: no sort of
 * every live xid per page). The answers are what the sort gave: xid order, the cursor the
 * last xid scanned, totalLive the live count; and a walk across changes (sessions ending
 * ahead of and behind the cursor, new ones on both sides) goes on in order from its cursor.
 */
import { describe, expect, it } from 'vitest';
import { TxQuery, NO_FILTER } from '../../src/server/tc/tx-query.ts';
import { decodePageToken, encodePageToken } from '../../src/server/tc/service.ts';
import { upperBound } from '../../src/server/tc/upper-bound.ts';
import { NotLeaderError } from '../../src/shared/errors.ts';
import type { CoordinatorStateView } from '../../src/coordinator/state-machine.ts';
import type { Xid } from '../../src/shared/ids.ts';
import { SequentialIds, begin, makeWorld, type World } from '../coordinator/fakes.ts';

function queryOf(world: World): TxQuery {
  const store = world.store;
  return new TxQuery({
    store: {
      hasLeaderRole: () => store.isLeader(),
      notLeaderError: () => new NotLeaderError(null),
      read: <T>(fn: (state: CoordinatorStateView) => T) => store.read(fn),
    },
    coordinator: world.coordinator,
    now: () => world.clock.now(),
  });
}

/** The page the full sort gave (the code before the index): xids after `token`, `size` of them. */
function sortedPage(world: World, token: string | null, size: number) {
  const xids = world.machine.liveXids().sort();
  const after = decodePageToken(token ?? undefined);
  const from = after === null ? 0 : upperBound(xids, after);
  const page = xids.slice(from, from + size);
  const more = from + page.length < xids.length;
  return {
    xids: page,
    nextPageToken: more && page.length > 0 ? encodePageToken(page.at(-1)!) : null,
    totalLive: xids.length,
  };
}

async function rollback(world: World, xid: Xid): Promise<void> {
  // Branchless: it ends in the same command (Rollbacked), leaving the live set.
  await world.coordinator.rollback({ xid });
  expect(world.machine.isLive(xid)).toBe(false);
}

describe('pages of live sessions from the ordered xid index', () => {
  it('answer as the full sort did, page by page, across begins and ends between pages', async () => {
    // Ids from 95: xids …:95 … …:99 sort after …:100 …: xid order is not insertion order.
    const world = makeWorld({ ids: new SequentialIds(95) });
    const query = queryOf(world);
    const xids: Xid[] = [];
    for (let i = 0; i < 40; i++) xids.push(await begin(world));
    const seen: string[] = [];
    const endedAhead: string[] = [];
    const bornAhead: string[] = [];
    let token: string | null = null;
    for (let pageNo = 0; pageNo < 100; pageNo++) {
      const expected = sortedPage(world, token, 7);
      const page = await query.list({
        filter: NO_FILTER,
        pageSize: 7,
        ...(token === null ? {} : { pageToken: token }),
      });
      expect(page.sessions.map((s) => s.xid)).toEqual(expected.xids);
      expect(page.nextPageToken).toEqual(expected.nextPageToken);
      expect(page.totalLive).toBe(expected.totalLive);
      expect(page.totalLive).toBe(world.machine.liveSessionCount());
      seen.push(...page.sessions.map((s) => s.xid));
      token = page.nextPageToken;
      if (token === null) break;
      const cursor = decodePageToken(token)!;
      // Between pages: one ahead of the cursor ends, one behind it ends, two begin.
      const live = world.machine.liveXids().sort();
      const ahead = live.find((x) => x > cursor);
      const behind = live.find((x) => x < cursor);
      if (ahead !== undefined) {
        await rollback(world, ahead);
        endedAhead.push(ahead);
      }
      if (behind !== undefined) await rollback(world, behind);
      for (let k = 0; k < 2; k++) {
        const xid = await begin(world);
        if (xid > cursor) bornAhead.push(xid);
      }
    }
    expect(token).toBeNull();
    // In order, each once; nothing that ended before the walk reached it; every session begun
    // ahead of the cursor that is still live.
    expect(seen).toEqual([...seen].sort());
    expect(new Set(seen).size).toBe(seen.length);
    for (const xid of endedAhead) expect(seen).not.toContain(xid);
    for (const xid of bornAhead) if (world.machine.isLive(xid)) expect(seen).toContain(xid);
    expect(bornAhead.length).toBeGreaterThan(0);
    expect(endedAhead.length).toBeGreaterThan(0);
    world.machine.checkInvariants();
  });

  it('a cursor naming an xid that has ended goes on after it', async () => {
    const world = makeWorld({ ids: new SequentialIds(1) });
    const query = queryOf(world);
    for (let i = 0; i < 12; i++) await begin(world);
    const first = await query.list({ filter: NO_FILTER, pageSize: 5 });
    const last = decodePageToken(first.nextPageToken!)! as Xid;
    await rollback(world, last);
    const second = await query.list({
      filter: NO_FILTER,
      pageSize: 5,
      pageToken: first.nextPageToken!,
    });
    expect(second.sessions.map((s) => s.xid)).toEqual(
      sortedPage(world, first.nextPageToken, 5).xids,
    );
    expect(second.sessions[0]!.xid > last).toBe(true);
  });
});
