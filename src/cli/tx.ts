/**
 * `concord tx list | show | retry | stop | resume | resolve`: finding and handling
 * transactions.
 *
 *  - list and show read the openapi's read-only routes (GET /tx/v1/sessions,
 *    /tx/v1/session; Bearer token), following a not-leader answer once to the leader;
 *  - retry, stop, resume and resolve are the TC's gRPC operator calls (RetryNow, StopRetry,
 *    ResumeRetry, MarkResolved), made through the TC client (it finds the leader from the
 *    node's openapi). Each shows the transaction, asks before it acts (or takes --yes),
 *    sends the operator's name (the node logs an audit line with it) and prints the same
 *    audit line here.
 */
import { hostname, userInfo } from 'node:os';
import { type HostPort, formatHostPort, parseAddress } from '../client/http-metadata.ts';
import { fetchTxList, fetchTxSession, type TxListQuery } from '../client/http-tx.ts';
import { TcClient, type SessionInfo } from '../client/tc-client.ts';
import { BadRequestError, ConcordError } from '../shared/errors.ts';
import { requireXid, type Xid } from '../shared/ids.ts';
import { GlobalStatus, isGlobalStatus } from '../shared/tc-vocabulary.ts';
import type { TxDetailView, TxListView, TxSummaryView } from '../shared/tx-view.ts';
import { onLeader, tokenOf } from './cluster-ops.ts';
import { confirm, type ConfirmOptions } from './confirm.ts';
import { cliHttpTls, operatorTls, type OperatorTlsOptions } from './operator-tls.ts';
import { formatDuration, parseDuration } from './duration.ts';
import { renderTable, style } from './table.ts';

/** Environment variable naming the operator in audit lines (default: user@host). */
export const OPERATOR_ENV = 'CONCORD_OPERATOR';
/** Transactions `tx list` prints at most unless --limit says otherwise. */
export const DEFAULT_LIST_LIMIT = 100;
/** Pages one `tx list` reads at most (each scans a bounded number of sessions on the node). */
const MAX_LIST_PAGES = 1_000;
/** Budget of one operator call from the CLI, ms. */
export const ACTION_DEADLINE_MS = 30_000;

export function defaultOperator(env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env[OPERATOR_ENV];
  if (fromEnv) return fromEnv;
  let user = 'unknown';
  try {
    user = userInfo().username;
  } catch {
    // no passwd entry (a container): keep "unknown"
  }
  return `${user}@${hostname()}`;
}

// ------------------------------------------------------------------ list

export interface TxListOptions extends OperatorTlsOptions {
  server: string;
  group: string;
  token?: string;
  status?: string;
  app?: string;
  olderThan?: string;
  stuck?: boolean;
  stuckAfter?: string;
  limit?: string;
  json?: boolean;
}

/** The openapi query of `tx list`'s flags (checked here: a bad flag is exit 2, not a 400). */
export function listQueryOf(o: TxListOptions): TxListQuery {
  const q: TxListQuery = { group: o.group };
  if (o.status !== undefined) {
    if (!isGlobalStatus(o.status) || o.status === GlobalStatus.Unknown)
      throw new BadRequestError(
        `--status ${JSON.stringify(o.status)} is not a global status; one of: ${Object.keys(
          GlobalStatus,
        )
          .filter((s) => s !== 'Unknown')
          .join(', ')}`,
      );
    q.status = o.status;
  }
  if (o.app !== undefined) q.application = o.app;
  if (o.olderThan !== undefined) q.olderThanMs = parseDuration(o.olderThan, '--older-than');
  if (o.stuck) q.stuck = true;
  if (o.stuckAfter !== undefined) q.stuckAfterMs = parseDuration(o.stuckAfter, '--stuck-after');
  return q;
}

function limitOf(text: string | undefined): number {
  if (text === undefined) return DEFAULT_LIST_LIMIT;
  if (!/^\d{1,7}$/.test(text) || Number(text) < 1)
    throw new BadRequestError(`--limit must be a positive whole number, got ${text}`);
  return Number(text);
}

export async function runTxList(o: TxListOptions): Promise<void> {
  const server = parseAddress(o.server);
  const token = tokenOf(o.token);
  const query = listQueryOf(o);
  const limit = limitOf(o.limit);
  const tls = cliHttpTls(o);
  const sessions: TxSummaryView[] = [];
  let last: TxListView | null = null;
  let pageToken: string | undefined;
  for (let pages = 0; pages < MAX_LIST_PAGES && sessions.length < limit; pages++) {
    const page: TxListView = await onLeader(server, (target) =>
      fetchTxList(
        target,
        {
          ...query,
          pageSize: Math.min(500, limit - sessions.length),
          ...(pageToken !== undefined ? { pageToken } : {}),
        },
        { token, tls },
      ),
    );
    last = page;
    sessions.push(...page.sessions);
    if (page.nextPageToken === null) break;
    pageToken = page.nextPageToken;
  }
  const more = last?.nextPageToken != null;
  if (o.json) {
    console.log(
      JSON.stringify(
        {
          sessions,
          totalLive: last?.totalLive ?? 0,
          stuckAfterMs: last?.stuckAfterMs ?? null,
          more,
        },
        null,
        2,
      ),
    );
    return;
  }
  console.log(listTable(sessions, last?.now ?? Date.now()));
  const shown = `${sessions.length} shown of ${last?.totalLive ?? 0} live`;
  const stuckNote =
    !query.stuck || !last
      ? ''
      : query.stuckAfterMs === undefined
        ? ` · stuck = still failing ${formatDuration(last.stuckAfterMs)} after the first failure`
        : ` · stuck = retrying for ${formatDuration(last.stuckAfterMs)} or more`;
  console.log(`\n${shown}${stuckNote}${more ? ` · more match: raise --limit (now ${limit})` : ''}`);
}

export function listTable(sessions: readonly TxSummaryView[], now: number): string {
  if (sessions.length === 0) return 'No transaction matches.';
  return renderTable(
    ['XID', 'STATUS', 'APPLICATION', 'NAME', 'AGE', 'BRANCHES', 'LOCKS', 'RETRIES', 'RETRYING'],
    sessions.map((s) => [
      s.xid,
      statusText(s.status, s.stuck),
      s.applicationId,
      s.name,
      formatDuration(now - s.beginTime),
      String(s.branchCount),
      String(s.lockedRows),
      String(s.retry.attempts),
      s.retry.retryingSince === null
        ? '-'
        : `${formatDuration(now - s.retry.retryingSince)}${s.stuck ? ' (stuck)' : ''}`,
    ]),
  );
}

function statusText(status: string, stuck: boolean): string {
  if (stuck || /Failed$/.test(status)) return style('red', status);
  if (/Retrying$|^Stop/.test(status)) return style('yellow', status);
  return status;
}

// ------------------------------------------------------------------ show

export async function runTxShow(
  o: OperatorTlsOptions & {
    server: string;
    group: string;
    token?: string;
    xid: string;
    stuckAfter?: string;
    json?: boolean;
  },
): Promise<void> {
  const server = parseAddress(o.server);
  const token = tokenOf(o.token);
  const xid = requireXid(o.xid);
  const stuckAfterMs =
    o.stuckAfter === undefined ? undefined : parseDuration(o.stuckAfter, '--stuck-after');
  const tls = cliHttpTls(o);
  const answer = await onLeader(server, (target) =>
    fetchTxSession(target, xid, {
      token,
      tls,
      group: o.group,
      ...(stuckAfterMs !== undefined ? { stuckAfterMs } : {}),
    }),
  );
  if (o.json) console.log(JSON.stringify(answer.session, null, 2));
  else console.log(detailText(answer.session, answer.now));
}

export function detailText(s: TxDetailView, now: number): string {
  if (!s.live) {
    return [
      `${style('bold', s.xid)} has ended: ${s.status}`,
      `finished ${new Date(s.finishedAt).toISOString()} (${formatDuration(now - s.finishedAt)} ago)`,
      s.resolvedBy ? `resolved by an operator: ${s.resolvedBy}` : 'ended by phase two',
    ].join('\n');
  }
  const lines = [
    `${style('bold', s.xid)}  ${statusText(s.status, s.stuck)}${s.status !== s.internalStatus ? ` (internally ${s.internalStatus})` : ''}`,
    `application ${s.applicationId} · group ${s.transactionServiceGroup} · name ${s.name || '-'} · transaction id ${s.transactionId}`,
    `began ${new Date(s.beginTime).toISOString()} (${formatDuration(now - s.beginTime)} ago) · timeout ${formatDuration(s.timeoutMs)} · status since ${new Date(s.statusChangedAt).toISOString()}`,
    retryText(s, now),
  ];
  for (const w of s.rmWaits)
    lines.push(
      style(
        'yellow',
        `waiting for an RM: branch ${w.branchId} needs application ${w.applicationId} serving ${w.resourceId} (none connected for ${formatDuration(now - w.since)})`,
      ),
    );
  lines.push('', `${s.branchCount} branch(es), ${s.lockedRows} locked row(s)`);
  if (s.branches.length > 0) {
    lines.push(
      renderTable(
        ['BRANCH', 'TYPE', 'RESOURCE', 'APPLICATION', 'STATUS', 'ROWS', 'CLIENT'],
        s.branches.map((b) => [
          b.branchId,
          b.type,
          b.resourceId,
          b.applicationId || '-',
          b.status,
          String(b.lockedRowCount),
          b.clientId,
        ]),
      ),
    );
  }
  for (const b of s.branches) {
    if (b.lockedRowCount === 0) continue;
    const more = b.lockedRowCount - b.lockedRows.length;
    lines.push(
      `locks of ${b.branchId}: ${b.lockedRows.join(', ')}${more > 0 ? ` … and ${more} more` : ''}`,
    );
  }
  return lines.join('\n');
}

function retryText(s: TxSummaryView, now: number): string {
  const r = s.retry;
  if (r.retryingSince === null && r.attempts === 0) return 'retries: none';
  const parts = [`retries: ${r.attempts} failed pass(es)`];
  if (r.retryingSince !== null)
    parts.push(`retrying for ${formatDuration(now - r.retryingSince)}${s.stuck ? ' (stuck)' : ''}`);
  if (r.stopped) parts.push('retries stopped (by an operator, or at the retry horizon)');
  else if (r.nextRetryAt !== null)
    parts.push(
      `next ${r.nextRetryAt <= now ? 'now' : `in ${formatDuration(r.nextRetryAt - now)}`}`,
    );
  if (r.retryDeadline !== null)
    parts.push(
      r.retryDeadline <= now
        ? `alarm time passed ${formatDuration(now - r.retryDeadline)} ago`
        : `alarm time in ${formatDuration(r.retryDeadline - now)}`,
    );
  return parts.join(' · ');
}

// ------------------------------------------------------------------ actions

export type TxAction = 'retry' | 'stop' | 'resume' | 'resolve';

const ACTION_TEXT: Record<TxAction, string> = {
  retry: 'run a phase-two pass on it now',
  stop: 'stop its phase-two retries (it reads Stop*; its locks stay held)',
  resume:
    'resume its phase two from where it stopped, with a fresh alarm time (a *Failed one goes back to Committing/Rollbacking; only its unfinished branches are told again)',
  resolve:
    'mark it resolved: you repaired its branches by hand; its locks are RELEASED and its status ends *Failed',
};

export interface TxActionOptions extends OperatorTlsOptions {
  server: string;
  group: string;
  xid: string;
  yes: boolean;
  operator?: string;
  json?: boolean;
  /** resume only: past the retry horizon too (the RMs' fence rows may be gone). */
  force?: boolean;
}

/** What `tx resume --force` asks on top of the action's question. */
export const FORCE_WARNING =
  'FORCE: if its retry horizon passed, its RMs may have cleaned up their fence rows: a confirm could find no try (it fails loudly) and a cancel could be taken for an empty rollback (the business cancel is SKIPPED). Check every unfinished branch by hand first';

/** The line printed for every action the CLI made, and logged (at info) by the node. */
export function auditLine(a: {
  at: Date;
  operator: string;
  action: TxAction;
  xid: string;
  outcome: string;
}): string {
  return `audit: ${a.at.toISOString()} ${a.operator} ${a.action} ${a.xid} → ${a.outcome}`;
}

export async function runTxAction(
  action: TxAction,
  o: TxActionOptions,
  io: Pick<ConfirmOptions, 'input' | 'output'> = {},
): Promise<void> {
  const server: HostPort = parseAddress(o.server);
  const xid = requireXid(o.xid);
  const operator = o.operator ?? defaultOperator();
  const tc = new TcClient({
    seeds: [formatHostPort(server)],
    group: o.group,
    callDeadlineMs: ACTION_DEADLINE_MS,
    tls: operatorTls(o),
  });
  try {
    const before = await tc.getSession(xid);
    console.error(sessionLine(before));
    if (!before.live)
      throw new BadRequestError(`${xid} has ended (${before.status}): nothing to ${action}`);
    const force = action === 'resume' && o.force === true;
    if (force) console.error(FORCE_WARNING);
    const agreed = await confirm(`${capital(ACTION_TEXT[action])}${force ? ', FORCED' : ''}?`, {
      yes: o.yes,
      ...io,
    });
    if (!agreed) {
      console.error('Nothing done.');
      return;
    }
    let outcome: string;
    try {
      outcome = await act(tc, action, xid, operator, force);
    } catch (err) {
      const code = err instanceof ConcordError ? err.code : 'ERROR';
      console.log(auditLine({ at: new Date(), operator, action, xid, outcome: `failed ${code}` }));
      throw err;
    }
    const line = auditLine({ at: new Date(), operator, action, xid, outcome });
    if (o.json) console.log(JSON.stringify({ action, xid, operator, outcome, audit: line }));
    else console.log(line);
  } finally {
    await tc.close();
  }
}

async function act(
  tc: TcClient,
  action: TxAction,
  xid: Xid,
  operator: string,
  force: boolean,
): Promise<string> {
  switch (action) {
    case 'retry':
      return `ok, status ${await tc.retryNow(xid, { operator })}`;
    case 'stop':
      await tc.stopRetry(xid, { operator });
      return 'ok, retries stopped';
    case 'resume':
      return `ok, resumed, status ${await tc.resumeRetry(xid, { operator, force })}`;
    case 'resolve':
      return `ok, ended ${await tc.markResolved({ xid, confirmXid: xid, operator })}`;
  }
}

function sessionLine(s: SessionInfo): string {
  if (!s.live)
    return `${s.xid}: ended ${s.status}${s.resolvedBy ? ` (resolved by ${s.resolvedBy})` : ''}`;
  const stopped = s.retry.stopped ? ', retries stopped' : '';
  return `${s.xid}: ${s.status}${stopped} · application ${s.applicationId} · ${s.branches.length} branch(es) · ${s.retry.attempts} failed pass(es)`;
}

const capital = (s: string) => s[0]!.toUpperCase() + s.slice(1);
