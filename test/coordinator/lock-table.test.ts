import { describe, expect, it } from 'vitest';
import { LockConflictError } from '../../src/coordinator/errors.ts';
import { MAX_REPORTED_CONFLICT_ROWS } from '../../src/coordinator/limits.ts';
import { LockTable } from '../../src/coordinator/lock-table.ts';
import { ConcordError } from '../../src/shared/errors.ts';
import { begin, makeWorld, register } from './fakes.ts';

describe('lock table', () => {
  it('acquires all or nothing and names the holder and the conflicting rows', () => {
    const locks = new LockTable();
    expect(locks.tryAcquire('x1', '1', ['a', 'b'])).toEqual({ ok: true });
    expect(locks.tryAcquire('x2', '2', ['c', 'b', 'd'])).toEqual({
      ok: false,
      holdingXid: 'x1',
      rows: ['b'],
    });
    // Nothing of the refused request was taken: c and d are still free.
    expect(locks.holderOf('c')).toBeUndefined();
    expect(locks.holderOf('d')).toBeUndefined();
    expect(locks.size).toBe(2);
  });

  it('visits every held row with its holder (the console lock list)', () => {
    const locks = new LockTable();
    locks.tryAcquire('x1', '1', ['a', 'b']);
    locks.tryAcquire('x2', '2', ['c']);
    locks.releaseBranch('x1', '1');
    const seen: string[] = [];
    locks.forEachRow((row, h) => seen.push(`${row}:${h.xid}:${h.branchIds.join(',')}`));
    expect(seen).toEqual(['c:x2:2']);
  });

  it('visits rows held by one branch and rows shared by branches of one xid alike', () => {
    const locks = new LockTable();
    locks.tryAcquire('x1', '1', ['a', 'b']);
    locks.tryAcquire('x1', '2', ['b', 'c']);
    locks.tryAcquire('x2', '3', ['d']);
    const seen: string[] = [];
    locks.forEachRow((row, h) => seen.push(`${row}:${h.xid}:${h.branchIds.join(',')}`));
    expect(seen.sort()).toEqual(['a:x1:1', 'b:x1:1,2', 'c:x1:2', 'd:x2:3']);
    expect(locks.holderOf('b')).toEqual({ xid: 'x1', branchIds: ['1', '2'] });
    // Releasing branch 1 leaves b with branch 2 only, and frees a.
    expect(locks.releaseBranch('x1', '1').sort()).toEqual(['a', 'b']);
    expect(locks.holderOf('a')).toBeUndefined();
    expect(locks.holderOf('b')).toEqual({ xid: 'x1', branchIds: ['2'] });
    expect(locks.releaseBranch('x1', '2').sort()).toEqual(['b', 'c']);
    expect(locks.size).toBe(1);
  });

  it('lets the same xid re-acquire its own rows from another branch', () => {
    const locks = new LockTable();
    locks.tryAcquire('x1', '1', ['a']);
    expect(locks.tryAcquire('x1', '2', ['a', 'b'])).toEqual({ ok: true });
    expect([...locks.holderOf('a')!.branchIds].sort()).toEqual(['1', '2']);
  });

  it('frees a row shared by two branches of one xid only when both released it', () => {
    const locks = new LockTable();
    locks.tryAcquire('x1', '1', ['a', 'b']);
    locks.tryAcquire('x1', '2', ['a']);
    expect(locks.releaseBranch('x1', '1')).toEqual(['a', 'b']);
    expect(locks.holderOf('a')?.xid).toBe('x1');
    expect(locks.holderOf('b')).toBeUndefined();
    expect(locks.isLockable('x2', ['a'])).toBe(false);
    locks.releaseBranch('x1', '2');
    expect(locks.isLockable('x2', ['a'])).toBe(true);
  });

  it('releases by xid', () => {
    const locks = new LockTable();
    locks.tryAcquire('x1', '1', ['a']);
    locks.tryAcquire('x1', '2', ['b']);
    locks.tryAcquire('x2', '3', ['c']);
    expect(locks.releaseXid('x1').sort()).toEqual(['a', 'b']);
    expect(locks.size).toBe(1);
    expect(locks.holderOf('c')?.xid).toBe('x2');
  });

  it('answers lock queries: free rows and own rows are lockable, others not', () => {
    const locks = new LockTable();
    locks.tryAcquire('x1', '1', ['a']);
    expect(locks.isLockable('x1', ['a', 'z'])).toBe(true);
    expect(locks.isLockable('x2', ['z'])).toBe(true);
    expect(locks.isLockable('x2', ['z', 'a'])).toBe(false);
    expect(locks.isLockable('', ['a'])).toBe(false);
  });

  it(`caps the rows named in a conflict at ${MAX_REPORTED_CONFLICT_ROWS}`, () => {
    const locks = new LockTable();
    const rows = Array.from({ length: 50 }, (_, i) => `r${String(i).padStart(2, '0')}`);
    locks.tryAcquire('x1', '1', rows);
    const result = locks.tryAcquire('x2', '2', rows);
    expect(result.ok).toBe(false);
    expect(result.ok ? [] : result.rows).toHaveLength(MAX_REPORTED_CONFLICT_ROWS);
  });
});

describe('branch registration locks rows', () => {
  it('refuses a conflicting branch of another xid with a LockConflictError naming the holder', async () => {
    const world = makeWorld();
    const x1 = await begin(world);
    const x2 = await begin(world);
    await register(world, x1, 'AT', 'order:1,2');
    const error = await register(world, x2, 'AT', 'order:3;order:2').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(LockConflictError);
    expect(error).toBeInstanceOf(ConcordError);
    expect((error as LockConflictError).code).toBe('LOCK_CONFLICT');
    expect((error as LockConflictError).retryable).toBe(true);
    expect((error as LockConflictError).holdingXid).toBe(x1);
    expect((error as LockConflictError).rows).toEqual(['jdbc:db^^^order^^^2']);
    // All or nothing: order:3 was not taken, and the refused branch does not exist.
    expect(
      await world.coordinator.lockQuery({ xid: x1, resourceId: 'jdbc:db', lockKey: 'order:3' }),
    ).toBe(true);
    expect(world.machine.getSession(x2)!.branches).toHaveLength(0);
  });

  it('releases the rows when the transaction ends, so the next one can lock them', async () => {
    const world = makeWorld();
    const x1 = await begin(world);
    await register(world, x1, 'TCC', 'order:1');
    expect(await world.coordinator.lockQuery({ resourceId: 'jdbc:db', lockKey: 'order:1' })).toBe(
      false,
    );
    await world.coordinator.commit({ xid: x1 });
    expect(world.machine.lockedRowCount()).toBe(0);
    const x2 = await begin(world);
    await expect(register(world, x2, 'AT', 'order:1')).resolves.toMatch(/^\d+$/);
  });
});
