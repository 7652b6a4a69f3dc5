// The console's views: cluster, transactions, one transaction, locks (docs/console.md).
import { useEffect, useRef, useState } from './vendor/hooks.js';
import uPlot from './vendor/uplot.js';
import { ActionButton, api, html, usePoll } from './app.js';

const REFRESH_MS = 2000;

function time(ms) {
  return ms ? new Date(ms).toLocaleTimeString() : '—';
}

function ErrorLine({ error }) {
  if (!error) return null;
  const waiting = error.status === 421 || error.status === 503;
  return html`<div class="error" data-testid="load-error">
    ${waiting ? 'Waiting for a leader… ' : ''}${error.message}
  </div>`;
}

/** Follows the cluster: the watch long poll answers at once on a term or membership change. */
function useCluster() {
  const [state, setState] = useState({ cluster: null, error: null, changes: [] });
  useEffect(() => {
    let alive = true;
    let known = null;
    const refresh = async () => {
      try {
        const c = await api('cluster');
        if (!alive) return;
        setState((s) => {
          const changes =
            known !== null && c.leaderId !== known.leaderId
              ? [
                  { at: Date.now(), from: known.leaderId, to: c.leaderId, term: c.term },
                  ...s.changes,
                ]
              : s.changes;
          return { cluster: c, error: null, changes: changes.slice(0, 20) };
        });
        known = c;
      } catch (error) {
        if (alive) setState((s) => ({ ...s, error }));
      }
    };
    const watch = async () => {
      while (alive) {
        await refresh();
        await waitForChange(known).catch(() => sleep(1000));
      }
    };
    void watch();
    const timer = setInterval(refresh, REFRESH_MS);
    return () => {
      alive = false;
      clearInterval(timer);
    };
  }, []);
  return state;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function waitForChange(known) {
  if (!known) return sleep(1000);
  const res = await fetch('/metadata/v1/watch', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      groupTerms: { [known.group]: known.term },
      groupVersions: { [known.group]: known.metadataVersion },
      timeoutMs: 10000,
    }),
  });
  if (res.status !== 200 && res.status !== 304) await sleep(1000);
}

function MemberRow({ m, leaderId }) {
  const health =
    m.healthy === true
      ? html`<span class="badge ok">healthy</span>`
      : m.healthy === false || !m.reachable
        ? html`<span class="badge bad">down</span>`
        : html`<span class="badge">—</span>`;
  return html`<tr data-testid=${`member-${m.nodeId}`}>
    <td>
      <b>${m.nodeId}</b> ${m.nodeId === leaderId && html`<span class="badge leader">leader</span>`}
    </td>
    <td>${m.role}${m.ownRole && m.ownRole.toUpperCase() !== m.role ? ` (${m.ownRole})` : ''}</td>
    <td>${m.term ?? '—'}</td>
    <td>${m.commitIndex ?? '—'}</td>
    <td>${m.appliedIndex ?? '—'}</td>
    <td>${m.lag ?? '—'}</td>
    <td>${health}</td>
    <td class="mono">${m.http ?? ''}</td>
  </tr>`;
}

export function ClusterView({ admin }) {
  const { cluster: c, error, changes } = useCluster();
  if (!c)
    return html`<${ErrorLine} error=${error} />
      <p class="muted">Loading the cluster…</p>`;
  return html`<h2>Cluster <span class="muted">${c.group}</span></h2>
    <${ErrorLine} error=${error} />
    <div class="card row">
      <div>Leader: <b data-testid="leader">${c.leaderId ?? 'none (election)'}</b></div>
      <div>Term: <b data-testid="term">${c.term}</b></div>
      <div class="muted">answered by ${c.answeredBy} · ${c.storeMode} mode</div>
    </div>
    <table data-testid="members">
      <thead>
        <tr>
          <th>Member</th>
          <th>Role</th>
          <th>Term</th>
          <th>Commit</th>
          <th>Applied</th>
          <th>Lag</th>
          <th>Health</th>
          <th>HTTP</th>
        </tr>
      </thead>
      <tbody>
        ${c.members.map((m) => html`<${MemberRow} key=${m.nodeId} m=${m} leaderId=${c.leaderId} />`)}
      </tbody>
    </table>
    <h3>Leader changes</h3>
    <ul class="events" data-testid="leader-changes">
      ${changes.length === 0 && html`<li class="muted">none while this page is open</li>`}
      ${changes.map((e) => html`<li>${time(e.at)}: ${e.from ?? 'none'} → <b>${e.to ?? 'none'}</b> (term ${e.term})</li>`)}
    </ul>
    <${Charts} />
    ${admin && html`<${MembershipActions} cluster=${c} />`}`;
}

function MembershipActions({ cluster }) {
  const [target, setTarget] = useState('');
  const voters = cluster.members.filter((m) => m.nodeId !== cluster.leaderId);
  const to = target || voters[0]?.nodeId || '';
  const keep = (id) =>
    cluster.members.filter((m) => m.nodeId !== id).map((m) => ({ nodeId: m.nodeId }));
  return html`<h3>Operator actions</h3>
    <div class="card row">
      <label class="field"
        >Transfer leadership to
        <select
          data-testid="transfer-target"
          value=${to}
          onChange=${(e) => setTarget(e.target.value)}
        >
          ${voters.map((m) => html`<option value=${m.nodeId}>${m.nodeId}</option>`)}
        </select></label
      >
      <${ActionButton}
        label="Transfer leadership"
        testid="transfer"
        question=${`Hand leadership to ${to}?`}
        run=${() => api('action', { method: 'POST', body: { action: 'transferLeader', nodeId: to } })}
      />
      ${
        cluster.members.length > 1 &&
        html`<${ActionButton}
          label=${`Remove ${to}`}
          danger
          testid="remove-member"
          typed=${to}
          question=${`Change the membership to every member but ${to}?`}
          run=${() => api('action', { method: 'POST', body: { action: 'changeMembership', members: keep(to) } })}
        />`
      }
    </div>`;
}

function Chart({ title, data, testid }) {
  const ref = useRef(null);
  const plot = useRef(null);
  useEffect(() => {
    const opts = {
      title,
      width: 380,
      height: 170,
      legend: { show: false },
      series: [{}, { stroke: '#2453c7', width: 2, fill: 'rgba(36,83,199,0.08)' }],
      axes: [{}, { size: 64 }],
    };
    plot.current = new uPlot(opts, data, ref.current);
    return () => plot.current?.destroy();
  }, []);
  useEffect(() => plot.current?.setData(data), [data]);
  return html`<div class="chart" data-testid=${testid} ref=${ref}></div>`;
}

function Charts() {
  const [s, error] = usePoll(() => api('samples'), REFRESH_MS, []);
  const samples = s?.samples ?? [];
  const t = samples.map((x) => x.t / 1000);
  const series = (f) => [t, samples.map((x) => f(x) ?? null)];
  return html`<h3>
      Activity
      <span class="muted">${s ? `(from ${s.node}, every ${s.intervalMs / 1000} s)` : ''}</span>
    </h3>
    <${ErrorLine} error=${error} />
    <div class="charts">
      <${Chart} title="Transactions ended / s" testid="chart-tps" data=${series((x) => x.tps)} />
      <${Chart}
        title="TC call latency (ms)"
        testid="chart-latency"
        data=${series((x) => x.latencyMs)}
      />
      <${Chart} title="Live transactions" testid="chart-live" data=${series((x) => x.live)} />
    </div>`;
}

export { TransactionsView, TransactionView, LocksView } from './tx-views.js';
