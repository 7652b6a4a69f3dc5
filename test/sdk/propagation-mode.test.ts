/** Seata's propagation table, as a pure decision of (mode, bound xid). */
import { describe, expect, it } from 'vitest';
import {
  Propagation,
  planPropagation,
  TransactionPropagationError,
  BadRequestError,
} from '../../src/index.ts';

const XID = '127.0.0.1:8091:42';

describe('planPropagation', () => {
  const table: [Propagation, string | undefined, unknown][] = [
    ['REQUIRED', undefined, { action: 'begin', suspends: null }],
    ['REQUIRED', XID, { action: 'join', xid: XID }],
    ['REQUIRES_NEW', undefined, { action: 'begin', suspends: null }],
    ['REQUIRES_NEW', XID, { action: 'begin', suspends: XID }],
    ['SUPPORTS', undefined, { action: 'none', suspends: null }],
    ['SUPPORTS', XID, { action: 'join', xid: XID }],
    ['NOT_SUPPORTED', undefined, { action: 'none', suspends: null }],
    ['NOT_SUPPORTED', XID, { action: 'none', suspends: XID }],
    ['NEVER', undefined, { action: 'none', suspends: null }],
    ['MANDATORY', XID, { action: 'join', xid: XID }],
  ];
  it.each(table)('%s with bound xid %s plans %j', (mode, bound, plan) => {
    expect(planPropagation(mode, bound)).toEqual(plan);
  });

  it('NEVER inside a transaction throws, naming the xid', () => {
    const err = (() => {
      try {
        planPropagation(Propagation.NEVER, XID);
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(TransactionPropagationError);
    expect(err).toMatchObject({ propagation: 'NEVER', xid: XID, code: 'ILLEGAL_STATUS' });
  });

  it('MANDATORY outside a transaction throws', () => {
    expect(() => planPropagation(Propagation.MANDATORY, undefined)).toThrow(
      TransactionPropagationError,
    );
  });

  it('an unknown mode is a bad request', () => {
    expect(() => planPropagation('SOMETIMES' as Propagation, undefined)).toThrow(BadRequestError);
  });

  it('every mode of the enum is planned', () => {
    for (const mode of Object.values(Propagation)) {
      expect(() => planPropagation(mode, undefined)).not.toThrow(BadRequestError);
    }
  });
});
