// The console's transaction views: the list (stuck first), one transaction, the locks.
import { useState } from './vendor/hooks.js';
import { ActionButton, api, html, usePoll } from './app.js';

const REFRESH_MS = 2000;
const STATUSES = [
  'Begin',
  'Committing',
  'CommitRetrying',
  'AsyncCommitting',
  'Rollbacking',
  'RollbackRetrying',
  'TimeoutRollbacking',
  'TimeoutRollbackRetrying',
  'CommitFailed',
  'RollbackFailed',
  'TimeoutRollbackFailed',
  'StopCommitOrCommitRetry',
  'StopRollbackOrRollbackRetry',
];

const time = (ms) => (ms ? new Date(ms).toLocaleTimeString() : '—');
const age = (now, ms) => {
  const s = Math.max(0, Math.round((now - ms) / 1000));
  return s < 120 ? `${s} s` : s < 7200 ? `${Math.round(s / 60)} min` : `${Math.round(s / 3600)} h`;
};
const qs = (params) =>
  new URLSearchParams(Object.entries(params).filter(([, v]) => v !== '' && v != null)).toString();

function ErrorLine({ error }) {
  if (!error) return null;
  const waiting = error.status === 421 || error.status === 503;
  return html`<div class="error" data-testid="load-error">
    ${waiting ? 'Waiting for a leader… ' : ''}${error.message}
  </div>`;
}

function Pager({ page, pageSize, total, go }) {
  const pages = Math.max(1, Math.ceil(total / pageSize));
  return html`<div class="pager">
    <button disabled=${page <= 1} onClick=${() => go(page - 1)}>‹ Previous</button>
    <span>page ${page} of ${pages} · ${total} matching</span>
    <button disabled=${page >= pages} onClick=${() => go(page + 1)}>Next ›</button>
  </div>`;
}

function Filters({ fields, params, base }) {
  const submit = (e) => {
    e.preventDefault();
    const f = Object.fromEntries(new FormData(e.target));
    if (f.stuck === 'on') f.stuck = 'true';
    if (f.ageS) f.olderThanMs = String(Number(f.ageS) * 1000);
    delete f.ageS;
    location.hash = `${base}?${qs(f)}`;
  };
  return html`<form class="filters row card" onSubmit=${submit}>
    ${fields.map(([name, label, kind]) =>
      kind === 'status'
        ? html`<label
            >${label}<select name=${name} value=${params[name] ?? ''}>
              <option value="">any</option>
              ${STATUSES.map((s) => html`<option>${s}</option>`)}
            </select></label
          >`
        : kind === 'check'
          ? html`<label
              >${label}<input type="checkbox" name=${name} checked=${params[name] === 'true'}
            /></label>`
          : html`<label
              >${label}<input name=${name} value=${params[name] ?? ''} size="14"
            /></label>`,
    )}
    <button class="primary" type="submit">Filter</button>
    <a href=${`#${base}`}>clear</a>
  </form>`;
}

function TxRow({ s, now }) {
  const stuck = s.stuck || s.status.endsWith('Failed') || s.status.startsWith('Stop');
  return html`<tr class=${stuck ? 'stuck' : ''} data-testid=${`tx-${s.xid}`}>
    <td class="mono"><a href=${`#/tx/${encodeURIComponent(s.xid)}`}>${s.xid}</a></td>
    <td>${stuck && html`<span class="badge stuck">stuck</span>`} ${s.status}</td>
    <td>${s.applicationId}</td>
    <td>${s.name}</td>
    <td>${age(now, s.beginTime)}</td>
    <td>${s.branchCount}</td>
    <td>${s.retry.attempts}</td>
    <td>${s.lockedRows}</td>
  </tr>`;
}

export function TransactionsView({ params }) {
  const page = Number(params.page ?? 1);
  const query = qs({ ...params, page });
  const [d, error] = usePoll(() => api(`transactions?${query}`), REFRESH_MS, [query]);
  const go = (p) => (location.hash = `/transactions?${qs({ ...params, page: p })}`);
  const fields = [
    ['status', 'Status', 'status'],
    ['application', 'Application'],
    ['name', 'Name'],
    ['xid', 'Xid contains'],
    ['ageS', 'Older than (s)'],
    ['stuck', 'Stuck only', 'check'],
  ];
  return html`<h2>Transactions</h2>
    <${Filters}
      fields=${fields}
      params=${{ ...params, ageS: params.olderThanMs ? params.olderThanMs / 1000 : '' }}
      base="/transactions"
    />
    <${ErrorLine} error=${error} />
    ${
      d &&
      html`<p class="muted">
          ${d.totalLive} live · <b data-testid="stuck-count">${d.stuck}</b> need an operator
        </p>
        <table data-testid="transactions">
          <thead>
            <tr>
              <th>Xid</th>
              <th>Status</th>
              <th>Application</th>
              <th>Name</th>
              <th>Age</th>
              <th>Branches</th>
              <th>Retries</th>
              <th>Rows</th>
            </tr>
          </thead>
          <tbody>
            ${d.sessions.map((s) => html`<${TxRow} key=${s.xid} s=${s} now=${d.now} />`)}
          </tbody>
        </table>
        <${Pager} page=${d.page} pageSize=${d.pageSize} total=${d.total} go=${go} />
        <h3>Recently finished <span class="muted">(seen by the leader)</span></h3>
        <table data-testid="finished">
          <thead>
            <tr>
              <th>Xid</th>
              <th>Status</th>
              <th>Application</th>
              <th>Name</th>
              <th>Finished</th>
            </tr>
          </thead>
          <tbody>
            ${d.finished.map(
              (f) =>
                html`<tr>
                  <td class="mono"><a href=${`#/tx/${encodeURIComponent(f.xid)}`}>${f.xid}</a></td>
                  <td>${f.status}${f.resolvedBy ? ` (resolved by ${f.resolvedBy})` : ''}</td>
                  <td>${f.applicationId}</td>
                  <td>${f.name}</td>
                  <td>${time(f.finishedAt)}</td>
                </tr>`,
            )}
          </tbody>
        </table>`
    }`;
}

function TxActions({ s, reload, onResult }) {
  const act =
    (action, extra = {}) =>
    () =>
      api('action', { method: 'POST', body: { action, xid: s.xid, confirmXid: s.xid, ...extra } });
  // Stopped, or a failed end: an operator may drive it again (docs/console.md).
  const stopped = s.status.startsWith('Stop') || s.status.endsWith('Failed');
  return html`<div class="card row">
    <${ActionButton}
      label="Retry now"
      testid="retry-now"
      onResult=${onResult}
      onDone=${reload}
      question=${`Run phase two of ${s.xid} now?`}
      run=${act('retryNow')}
    />
    ${
      stopped
        ? html`<${ActionButton}
              label="Resume retrying"
              testid="resume"
              onResult=${onResult}
              onDone=${reload}
              question="Drive phase two again (only its unfinished branches), with a new alarm time?"
              run=${act('resumeRetry')}
            />
            <${ActionButton}
              label="Force resume"
              testid="resume-force"
              danger
              typed=${s.xid}
              onResult=${onResult}
              onDone=${reload}
              question="Past its retry horizon its RMs may have cleaned up their fence rows: resume anyway?"
              run=${act('resumeRetry', { force: true })}
            />`
        : html`<${ActionButton}
            label="Stop retrying"
            testid="stop"
            onResult=${onResult}
            onDone=${reload}
            question="Stop retrying phase two? Its locks stay held."
            run=${act('stopRetry')}
          />`
    }
    <${ActionButton}
      label="Mark resolved"
      testid="resolve"
      danger
      typed=${s.xid}
      onResult=${onResult}
      onDone=${reload}
      question="Only after repairing its branches by hand: this ends it and releases its row locks."
      run=${act('markResolved')}
    />
  </div>`;
}

function Branches({ d, admin }) {
  return html`<table data-testid="branches">
    <thead>
      <tr>
        <th>Branch</th>
        <th>Type</th>
        <th>Resource</th>
        <th>Application</th>
        <th>Status</th>
        <th>Rows</th>
        ${admin && html`<th>Application data</th>`}
      </tr>
    </thead>
    <tbody>
      ${d.session.branches.map(
        (b) =>
          html`<tr>
            <td class="mono">${b.branchId}</td>
            <td>${b.type}</td>
            <td>${b.resourceId}</td>
            <td>${b.applicationId}</td>
            <td>${b.status}</td>
            <td>${b.lockedRowCount}</td>
            ${admin && html`<td class="mono" data-testid="appdata">${d.applicationData?.[b.branchId] ?? ''}</td>`}
          </tr>`,
      )}
    </tbody>
  </table>`;
}

function Summary({ s, now, flagged }) {
  return html`<div class="card row">
    <div>
      Status:
      <b data-testid="tx-status">${s.status}</b>
      ${flagged && html`<span class="badge stuck" data-testid="tx-stuck">stuck</span>`}
    </div>
    <div>Application: <b>${s.applicationId}</b></div>
    <div>Name: <b>${s.name || '—'}</b></div>
    <div>Age: ${age(now, s.beginTime)}</div>
    <div>Retries: ${s.retry.attempts}</div>
    ${s.retry.nextRetryAt && html`<div>Next retry: ${time(s.retry.nextRetryAt)}</div>`}
  </div>`;
}

export function TransactionView({ xid, admin }) {
  const [d, error, reload] = usePoll(
    () => api(`transaction?xid=${encodeURIComponent(xid)}`),
    1500,
    [xid],
  );
  const [notice, setNotice] = useState(null);
  if (!d)
    return html`<h2 class="mono">${xid}</h2>
      <${ErrorLine} error=${error} />`;
  const s = d.session;
  return html`<h2>Transaction <span class="mono">${xid}</span></h2>
    <${ErrorLine} error=${error} />
    ${
      notice &&
      html`<div class=${notice.ok ? 'notice' : 'error'} data-testid="action-result">
        ${notice.text}
      </div>`
    }
    ${
      s.live
        ? html`<${Summary}
              s=${s}
              now=${d.now}
              flagged=${d.needsOperator}
            />${admin && html`<${TxActions} s=${s} reload=${reload} onResult=${setNotice} />`}`
        : html`<div class="card">
            Status: <b data-testid="tx-status">${s.status}</b> · finished ${time(s.finishedAt)}
            ${s.resolvedBy && ` · resolved by ${s.resolvedBy}`}
          </div>`
    }
    <h3>Timeline</h3>
    <ol class="timeline card" data-testid="timeline">
      ${d.timeline.map(
        (e) =>
          html`<li class=${e.error ? 'error' : e.kind}>
            <span class="muted">${time(e.at)}</span>
            ${e.text}${e.error && html` — <span class="error">${e.error}</span>`}
          </li>`,
      )}
    </ol>
    ${
      s.live &&
      html`<h3>Branches</h3>
        <${Branches} d=${d} admin=${admin} />
        ${!admin && html`<p class="muted">Application data is shown to admins only.</p>`}
        <h3>Locks <span class="muted">(${d.lockCount})</span></h3>
        <${LockTable} locks=${d.locks} now=${d.now} />`
    }`;
}

function LockTable({ locks, now }) {
  return html`<table data-testid="locks">
    <thead>
      <tr>
        <th>Resource</th>
        <th>Table</th>
        <th>Primary key</th>
        <th>Held by</th>
        <th>Branch</th>
        <th>Since</th>
        <th>Status</th>
      </tr>
    </thead>
    <tbody>
      ${locks.map(
        (l) =>
          html`<tr data-testid=${`lock-${l.table}-${l.pk}`}>
            <td>${l.resourceId}</td>
            <td>${l.table}</td>
            <td class="mono">${l.pk}</td>
            <td class="mono"><a href=${`#/tx/${encodeURIComponent(l.xid)}`}>${l.xid}</a></td>
            <td class="mono">${l.branchId}</td>
            <td title=${l.since ? '' : 'the transaction began then; the row was locked later'}>
              ${age(now, l.since ?? l.txBegan)} ago
            </td>
            <td>${l.txStatus}</td>
          </tr>`,
      )}
    </tbody>
  </table>`;
}

export function LocksView({ params }) {
  const page = Number(params.page ?? 1);
  const query = qs({ ...params, page });
  const [d, error] = usePoll(() => api(`locks?${query}`), REFRESH_MS, [query]);
  const go = (p) => (location.hash = `/locks?${qs({ ...params, page: p })}`);
  const fields = [
    ['resource', 'Resource'],
    ['table', 'Table'],
    ['pk', 'Primary key'],
    ['xid', 'Xid contains'],
  ];
  return html`<h2>Row locks</h2>
    <${Filters} fields=${fields} params=${params} base="/locks" />
    <${ErrorLine} error=${error} />
    ${
      d &&
      html`<${LockTable} locks=${d.locks} now=${d.now} />
        <${Pager} page=${d.page} pageSize=${d.pageSize} total=${d.total} go=${go} />`
    }`;
}
