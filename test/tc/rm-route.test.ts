/**
 * The routing rule of the RM channel hub (src/server/tc/rm-route.ts), alone: phase two of a
 * branch goes to the RM that registered it, else to another RM of the branch's application
 * serving the resource, and never to an RM of another application — even one serving a
 * resource of the same name, even when it is the only RM connected.
 */
import { describe, expect, it } from 'vitest';
import { chooseRm, routeKey, type RmCandidate } from '../../src/server/tc/rm-route.ts';

interface Rm extends RmCandidate {
  name: string;
  full?: boolean;
}

function rm(name: string, applicationId: string, resources: string[], full = false): Rm {
  return { name, clientId: name, applicationId, resourceIds: new Set(resources), full };
}

const usable = (c: Rm) => !c.full;
const branch = (clientId: string, applicationId = 'team-a', resourceId = 'debit') => ({
  clientId,
  applicationId,
  resourceId,
});
const pick = (
  b: ReturnType<typeof branch>,
  registering: Rm | undefined,
  serving: Rm[],
  turn = 0,
) => {
  const choice = chooseRm(b, registering, serving, usable, turn);
  return choice.channel ? choice.channel.name : choice.why;
};

describe('chooseRm', () => {
  const a1 = rm('a1', 'team-a', ['debit']);
  const a2 = rm('a2', 'team-a', ['debit', 'credit']);
  const b1 = rm('b1', 'team-b', ['debit']);

  it('the registering RM first, when it is connected and serves the resource', () => {
    expect(pick(branch('a1'), a1, [a2, a1])).toBe('a1');
    expect(pick(branch('a1'), a1, [a2, a1], 1)).toBe('a1');
  });

  it('else another RM of the same application serving the resource, round robin', () => {
    const a3 = rm('a3', 'team-a', ['debit']);
    expect(pick(branch('a1'), undefined, [a2, a3], 0)).toBe('a2');
    expect(pick(branch('a1'), undefined, [a2, a3], 1)).toBe('a3');
    // The registering RM no longer serves the resource (redeployed without it): a sibling.
    expect(pick(branch('a1'), rm('a1', 'team-a', ['credit']), [a2])).toBe('a2');
    // The registering RM is at its in-flight bound: a sibling.
    expect(pick(branch('a1'), rm('a1', 'team-a', ['debit'], true), [a2])).toBe('a2');
  });

  it('never an RM of another application: the branch waits instead', () => {
    // The only RM serving `debit` is team-b's.
    expect(pick(branch('a1'), undefined, [b1])).toBe('no-rm');
    expect(pick(branch('a1'), undefined, [])).toBe('no-rm');
    // The client id is now held by an RM of another application (a reused id).
    expect(pick(branch('a1'), rm('a1', 'team-b', ['debit']), [])).toBe('no-rm');
    // A mixed list (a broken index) still never crosses applications.
    expect(pick(branch('a1'), undefined, [b1, a2], 0)).toBe('a2');
    expect(pick(branch('a1'), undefined, [b1, a2], 1)).toBe('a2');
  });

  it('says busy, not absent, when every RM of the application is at its bound', () => {
    const full = rm('a2', 'team-a', ['debit'], true);
    expect(pick(branch('a1'), undefined, [full, b1])).toBe('busy');
    expect(pick(branch('a1'), rm('a1', 'team-a', ['debit'], true), [])).toBe('busy');
  });

  it('a branch recorded without an application goes only to the client that registered it', () => {
    expect(pick(branch('a1', ''), a1, [a2, b1])).toBe('a1');
    expect(pick(branch('a1', ''), undefined, [a2, b1])).toBe('no-rm');
    expect(pick(branch('a1', ''), rm('a1', 'team-a', ['debit'], true), [a2])).toBe('busy');
    expect(pick(branch('a1', ''), rm('a1', 'team-a', ['credit']), [a2])).toBe('no-rm');
  });

  it('index keys of different (application, resource) pairs never collide', () => {
    expect(routeKey('a\nb', 'c')).not.toBe(routeKey('a', 'b\nc'));
    expect(routeKey('team-a', 'debit')).not.toBe(routeKey('team-b', 'debit'));
  });
});
