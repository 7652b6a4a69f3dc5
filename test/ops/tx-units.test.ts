/**
 * The pieces of `concord tx` that need no cluster: the one definition of "stuck", the list
 * filters, durations on the command line, and the confirmation question.
 */
import { describe, expect, it } from 'vitest';
import { PassThrough } from 'node:stream';
import type { GlobalSession } from '../../src/coordinator/index.ts';
import { GlobalStatus } from '../../src/shared/tc-vocabulary.ts';
import { NO_FILTER, isStuck, matchesFilter, retryingSince } from '../../src/server/tc/tx-query.ts';
import { formatDuration, parseDuration } from '../../src/cli/duration.ts';
import { confirm, isYes } from '../../src/cli/confirm.ts';
import { listQueryOf } from '../../src/cli/tx.ts';
import { BadRequestError } from '../../src/shared/errors.ts';

function session(
  over: Partial<GlobalSession> & { attempts?: number; stopped?: boolean },
): GlobalSession {
  const { attempts = 0, stopped = false, ...rest } = over;
  return {
    xid: '127.0.0.1:8091:1' as never,
    transactionId: '1',
    applicationId: 'shop',
    transactionServiceGroup: 'default',
    name: 'buy',
    timeoutMs: 60_000,
    beginTime: 1_000,
    deadline: 61_000,
    status: GlobalStatus.Begin,
    statusChangedAt: 1_000,
    branches: [],
    retry: { attempts, nextRetryAt: null, retryDeadline: null, stopped },
    driverTerm: 1,
    ...rest,
  };
}

describe('isStuck', () => {
  const now = 1_000_000;
  const cases: Array<[string, GlobalSession, number | null, boolean]> = [
    ['Begin is never stuck', session({ beginTime: 0 }), null, false],
    [
      'Committing with no failed pass',
      session({ status: GlobalStatus.Committing, statusChangedAt: 0 }),
      null,
      false,
    ],
    [
      'CommitRetrying past the threshold',
      session({ status: GlobalStatus.CommitRetrying, statusChangedAt: now - 60_000, attempts: 3 }),
      now - 60_000,
      true,
    ],
    [
      'RollbackRetrying under the threshold',
      session({
        status: GlobalStatus.RollbackRetrying,
        statusChangedAt: now - 59_999,
        attempts: 1,
      }),
      now - 59_999,
      false,
    ],
    [
      'stopped retries still count',
      session({
        status: GlobalStatus.CommitRetrying,
        statusChangedAt: 0,
        attempts: 1,
        stopped: true,
      }),
      0,
      true,
    ],
    [
      'a failed end state is not retrying',
      session({ status: GlobalStatus.CommitFailed, statusChangedAt: 0, attempts: 9 }),
      null,
      false,
    ],
  ];
  it.each(cases)('%s', (_name, s, since, stuck) => {
    expect(retryingSince(s)).toBe(since);
    expect(isStuck(s, now, 60_000)).toBe(stuck);
  });
});

describe("isStuck without a threshold: the coordinator's alarm time", () => {
  const failing = (over: Partial<GlobalSession['retry']>) =>
    session({
      status: GlobalStatus.CommitRetrying,
      statusChangedAt: 0,
      retry: { attempts: 3, nextRetryAt: 2_000, retryDeadline: 1_000, stopped: false, ...over },
    });
  it.each([
    ['next retry past the alarm time', failing({}), true],
    ['next retry before it', failing({ nextRetryAt: 900 }), false],
    ['retries stopped', failing({ stopped: true }), false],
    ['no failure yet', failing({ nextRetryAt: null, retryDeadline: null, attempts: 0 }), false],
  ])('%s', (_name, s, want) => {
    expect(isStuck(s, 10 ** 9, null)).toBe(want);
    expect(matchesFilter(s, { ...NO_FILTER, stuck: true }, 10 ** 9)).toBe(want);
  });
});

describe('matchesFilter', () => {
  const now = 100_000;
  const retrying = session({
    status: GlobalStatus.CommitRetrying,
    statusChangedAt: 10_000,
    attempts: 2,
    beginTime: 5_000,
  });
  it.each([
    ['no filter', {}, true],
    ['status matches', { status: GlobalStatus.CommitRetrying }, true],
    ['status differs', { status: GlobalStatus.Begin }, false],
    ['stopped reads Stop*', { status: GlobalStatus.StopCommitOrCommitRetry }, false],
    ['application matches', { applicationId: 'shop' }, true],
    ['application differs', { applicationId: 'billing' }, false],
    ['old enough', { olderThanMs: 95_000 }, true],
    ['too young', { olderThanMs: 95_001 }, false],
    ['stuck', { stuck: true, stuckAfterMs: 90_000 }, true],
    ['not stuck yet', { stuck: true, stuckAfterMs: 90_001 }, false],
    [
      'all at once',
      { status: GlobalStatus.CommitRetrying, applicationId: 'shop', stuck: true, stuckAfterMs: 1 },
      true,
    ],
  ] as const)('%s', (_name, f, want) => {
    expect(matchesFilter(retrying, { ...NO_FILTER, ...f }, now)).toBe(want);
  });
  it('a stopped session matches its Stop* status', () => {
    const s = session({ status: GlobalStatus.RollbackRetrying, attempts: 1, stopped: true });
    expect(
      matchesFilter(s, { ...NO_FILTER, status: GlobalStatus.StopRollbackOrRollbackRetry }, 0),
    ).toBe(true);
  });
});

describe('durations', () => {
  it.each([
    ['500ms', 500],
    ['30s', 30_000],
    ['1.5m', 90_000],
    ['2h', 7_200_000],
    ['1d', 86_400_000],
  ])('%s is %d ms', (text, ms) => expect(parseDuration(text, '--x')).toBe(ms));
  it.each(['5', '', '5 minutes', '-1s', '1w', '99999999999d'])('%j is refused', (text) =>
    expect(() => parseDuration(text, '--x')).toThrow(BadRequestError),
  );
  it.each([
    [850, '850ms'],
    [42_000, '42s'],
    [423_000, '7m 3s'],
    [3_600_000, '1h'],
    [18_120_000, '5h 2m'],
    [273_600_000, '3d 4h'],
  ])('%d ms prints as %s', (ms, text) => expect(formatDuration(ms)).toBe(text));
  it('tx list flags become the openapi query, bad ones are refused here', () => {
    expect(
      listQueryOf({
        server: 'x:1',
        group: 'g',
        status: 'CommitRetrying',
        olderThan: '10m',
        stuck: true,
      }),
    ).toEqual({ group: 'g', status: 'CommitRetrying', olderThanMs: 600_000, stuck: true });
    expect(() => listQueryOf({ server: 'x:1', group: 'g', status: 'Unknown' })).toThrow(
      BadRequestError,
    );
  });
});

describe('confirm', () => {
  it.each([
    ['y', true],
    ['YES', true],
    [' yes ', true],
    ['', false],
    ['n', false],
    ['yep', false],
  ])('%j is %s', (answer, want) => expect(isYes(answer)).toBe(want));

  it('--yes needs no terminal', async () => {
    expect(await confirm('go?', { yes: true, input: new PassThrough() })).toBe(true);
  });

  it('without --yes and without a terminal it refuses rather than hang', async () => {
    await expect(confirm('go?', { yes: false, input: new PassThrough() })).rejects.toThrow(
      /pass --yes/,
    );
  });

  it('asks on a terminal and takes the answer', async () => {
    for (const [typed, want] of [
      ['y\n', true],
      ['no\n', false],
    ] as const) {
      const input = Object.assign(new PassThrough(), { isTTY: true });
      const output = new PassThrough();
      let asked = '';
      output.on('data', (d: Buffer) => (asked += d.toString()));
      const answer = confirm('Resolve it?', { yes: false, input, output });
      input.write(typed);
      expect(await answer).toBe(want);
      expect(asked).toContain('Resolve it? [y/N]');
    }
  });
});
