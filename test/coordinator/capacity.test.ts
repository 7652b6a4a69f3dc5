/**
 * The live-transaction limit (issue 19's bug): a Begin beyond it is a definite, typed
 * refusal, raised before anything is proposed; the client never turns it into "outcome
 * unknown". The real-process side is test/tc/capacity.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { CapacityError } from '../../src/coordinator/errors.ts';
import { retryClassOf, wireToError } from '../../src/client/tc/errors.ts';
import { begin, makeWorld } from './fakes.ts';

describe('the live-transaction limit', () => {
  it('a Begin at the limit is refused with CapacityError and nothing is submitted', async () => {
    const world = makeWorld({ maxLiveSessions: 2 });
    await begin(world);
    await begin(world);
    const submitted: string[] = [];
    const submit = world.store.submit.bind(world.store);
    world.store.submit = ((command) => {
      submitted.push(command.kind);
      return submit(command);
    }) as typeof world.store.submit;
    const refused = await begin(world).catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(CapacityError);
    expect((refused as CapacityError).code).toBe('CAPACITY');
    expect((refused as CapacityError).retryable).toBe(true); // the caller may try later
    expect(submitted).toEqual([]);
    expect(world.machine.liveSessionCount()).toBe(2);
  });

  it('room comes back when a transaction ends', async () => {
    const world = makeWorld({ maxLiveSessions: 1 });
    const xid = await begin(world);
    await expect(begin(world)).rejects.toBeInstanceOf(CapacityError);
    await world.coordinator.rollback({ xid });
    await expect(begin(world)).resolves.toMatch(/:/);
  });

  it('on the client, CAPACITY is a definite CapacityError: never retried, never an unknown outcome', () => {
    const err = wireToError(
      { code: 'ERROR_CODE_CAPACITY', message: 'full', retryable: true },
      'Begin at 127.0.0.1:8091',
    );
    expect(err).toBeInstanceOf(CapacityError);
    expect(retryClassOf(err)).toBe('definite');
  });
});
