/**
 * The xid context: strict xid format, and an AsyncLocalStorage binding that follows the
 * async call chain, nests, can be suspended (NOT_SUPPORTED), and never leaks across chains.
 */
import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { BadRequestError } from '../../src/shared/errors.ts';
import {
  MAX_XID_CHARS,
  bindToCurrentContext,
  currentContext,
  currentXid,
  isValidXid,
  parseXid,
  runWithXid,
  runWithoutXid,
} from '../../src/client/context.ts';

const X1 = '10.0.0.1:8091:1001';
const X2 = '10.0.0.2:8091:2002';
const tick = () => new Promise<void>((resolve) => setImmediate(resolve));

describe('isValidXid: <host>:<port>:<transactionId>, bounded', () => {
  it.each([
    ['10.0.0.1:8091:123'],
    ['tc-1.concord.svc.cluster.local:8091:18446744073709551615'],
    ['localhost:1:0'],
    ['[::1]:8091:7'],
    ['fe80::1:8091:42'], // Seata writes IPv6 unbracketed; parsed from the right
    ['TC-Node.Example.COM:65535:99'],
  ])('accepts %s', (xid) => {
    expect(isValidXid(xid)).toBe(true);
  });

  it.each([
    [''],
    ['nope'],
    ['host:8091'],
    ['host:0:1'],
    ['host:65536:1'],
    ['host:08091:1'],
    ['host:8091:'],
    ['host:8091:01'],
    ['host:8091:-1'],
    ['host:8091:18446744073709551616'], // 2^64
    ['-host:8091:1'],
    ['host-:8091:1'],
    ['a..b:8091:1'],
    ['ho st:8091:1'],
    ['host_name:8091:1'],
    ['999.1.1.1:8091:1'],
    ['[not-v6]:8091:1'],
    ['[10.0.0.1]:8091:1'],
    ['host:8091:1\n'],
    [' host:8091:1'],
    ['host:8091:1, host:8091:2'], // a repeated header, joined
    [`${'a'.repeat(MAX_XID_CHARS)}:1:1`],
  ])('refuses %j', (xid) => {
    expect(isValidXid(xid)).toBe(false);
  });

  it('refuses non-strings', () => {
    for (const v of [undefined, null, 42, 42n, {}, ['10.0.0.1:8091:1']])
      expect(isValidXid(v)).toBe(false);
  });

  it('property: every well-formed xid within the length bound is accepted and parses back to its parts', () => {
    const host = fc.oneof(
      fc.ipV4(),
      fc.domain(),
      fc.ipV6().map((h) => `[${h}]`),
    );
    fc.assert(
      fc.property(
        host,
        fc.integer({ min: 1, max: 65_535 }),
        fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
        (h, port, id) => {
          const xid = `${h}:${port}:${id}`;
          const parsed = parseXid(xid);
          if (xid.length > MAX_XID_CHARS) return expect(parsed).toBeNull();
          expect(parsed).toEqual({
            host: h.startsWith('[') ? h.slice(1, -1) : h,
            port,
            transactionId: id.toString(),
          });
        },
      ),
      { numRuns: 500 },
    );
  });

  it('property: arbitrary strings never throw, and whatever is accepted is bounded and well-shaped', () => {
    fc.assert(
      fc.property(
        fc.oneof(fc.string({ maxLength: 200 }), fc.string({ unit: 'binary', maxLength: 50 })),
        (s) => {
          const ok = isValidXid(s);
          if (ok) {
            expect(s.length).toBeLessThanOrEqual(MAX_XID_CHARS);
            expect(s).toMatch(/^\S+:[1-9][0-9]*:(?:0|[1-9][0-9]*)$/);
          }
        },
      ),
      { numRuns: 1_000 },
    );
  });
});

describe('the xid context', () => {
  it('nothing is bound outside runWithXid', () => {
    expect(currentXid()).toBeUndefined();
    expect(currentContext()).toBeUndefined();
  });

  it('runWithXid binds for the function and everything it starts, and returns its value', async () => {
    const seen: (string | undefined)[] = [];
    const result = await runWithXid(X1, async () => {
      seen.push(currentXid());
      await tick();
      seen.push(currentXid());
      await new Promise<void>((resolve) =>
        setTimeout(() => {
          seen.push(currentXid());
          resolve();
        }, 1),
      );
      await Promise.resolve().then(() => seen.push(currentXid()));
      return 'value';
    });
    expect(result).toBe('value');
    expect(seen).toEqual([X1, X1, X1, X1]);
    expect(currentXid()).toBeUndefined();
  });

  it('nested runWithXid shadows the outer xid and the outer one is back afterwards', async () => {
    await runWithXid(X1, async () => {
      await runWithXid(X2, async () => {
        await tick();
        expect(currentXid()).toBe(X2);
      });
      expect(currentXid()).toBe(X1);
    });
  });

  it('runWithoutXid suspends the transaction (NOT_SUPPORTED) and resumes it after', async () => {
    await runWithXid(X1, async () => {
      await runWithoutXid(async () => {
        await tick();
        expect(currentXid()).toBeUndefined();
        expect(currentContext()).toBeUndefined();
        // A transaction can start again inside the suspended section.
        runWithXid(X2, () => expect(currentXid()).toBe(X2));
        expect(currentXid()).toBeUndefined();
      });
      expect(currentXid()).toBe(X1);
    });
  });

  it("concurrent chains never see each other's xid", async () => {
    const chain = (xid: string) =>
      runWithXid(xid, async () => {
        const seen: (string | undefined)[] = [];
        for (let i = 0; i < 20; i++) {
          await tick();
          seen.push(currentXid());
        }
        return seen;
      });
    const [a, b] = await Promise.all([chain(X1), chain(X2)]);
    expect(new Set(a)).toEqual(new Set([X1]));
    expect(new Set(b)).toEqual(new Set([X2]));
  });

  it('the branch type travels with the xid; the context is immutable', () => {
    runWithXid(
      X1,
      () => {
        const ctx = currentContext();
        expect(ctx).toEqual({ xid: X1, branchType: 'TCC' });
        expect(Object.isFrozen(ctx)).toBe(true);
      },
      { branchType: 'TCC' },
    );
  });

  it('a malformed xid or branch type is refused with BadRequestError', () => {
    expect(() => runWithXid('garbage', () => {})).toThrow(BadRequestError);
    expect(() => runWithXid(X1, () => {}, { branchType: 'XX' as never })).toThrow(BadRequestError);
  });

  it('bindToCurrentContext carries the xid into callbacks run from elsewhere (an emitter made outside)', () => {
    const emitter = new EventEmitter();
    const seen: (string | undefined)[] = [];
    runWithXid(X1, () => {
      emitter.on('plain', () => seen.push(currentXid()));
      emitter.on(
        'bound',
        bindToCurrentContext(() => seen.push(currentXid())),
      );
    });
    runWithXid(X2, () => emitter.emit('plain'));
    emitter.emit('bound');
    expect(seen).toEqual([X2, X1]);
  });
});
