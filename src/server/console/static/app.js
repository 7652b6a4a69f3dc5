// The Concord console: preact + htm, no build step (docs/console.md). Every list is paged and
// filtered by the node (GET /console/api/...); this file holds the shell: the API client,
// sign-in, navigation and the confirmation dialog. The views are in views.js and tx-views.js.
import { h, render } from './vendor/preact.js';
import { useEffect, useState } from './vendor/hooks.js';
import htm from './vendor/htm.js';
import { ClusterView, LocksView, TransactionView, TransactionsView } from './views.js';

export const html = htm.bind(h);

/** An API error: the node's typed error body. */
export class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message ?? `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code ?? `HTTP_${status}`;
    this.retryable = body?.error?.retryable ?? status >= 500;
  }
}

let session = null;
let onSignedOut = () => {};

/** Calls the console API; a 401 returns to the sign-in page. */
export async function api(path, { method = 'GET', body } = {}) {
  const headers = {};
  if (method !== 'GET') {
    headers['content-type'] = 'application/json';
    if (session?.csrf) headers['x-concord-csrf'] = session.csrf;
  }
  const res = await fetch(`/console/api/${path}`, {
    method,
    headers,
    credentials: 'same-origin',
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  let json;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (res.status === 401 && path !== 'signin') onSignedOut();
  if (!res.ok) throw new ApiError(res.status, json);
  return json;
}

/** Polls `load` every `ms` while mounted; returns [data, error, reload]. */
export function usePoll(load, ms, deps) {
  const [state, setState] = useState({ data: null, error: null });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let alive = true;
    let timer = null;
    const run = async () => {
      try {
        const data = await load();
        if (alive) setState({ data, error: null });
      } catch (error) {
        if (alive) setState((s) => ({ data: s.data, error }));
      }
      if (alive) timer = setTimeout(run, ms);
    };
    void run();
    return () => {
      alive = false;
      clearTimeout(timer);
    };
  }, [...deps, tick]);
  return [state.data, state.error, () => setTick((t) => t + 1)];
}

function SignIn({ onSignedIn }) {
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e) => {
    e.preventDefault();
    const form = new FormData(e.target);
    setBusy(true);
    setError(null);
    try {
      await api('signin', {
        method: 'POST',
        body: { name: form.get('name'), token: form.get('token') },
      });
      onSignedIn();
    } catch (err) {
      setError(err.status === 401 ? 'Sign-in refused: wrong token or password.' : err.message);
    } finally {
      setBusy(false);
    }
  };
  return html`<div class="signin card">
    <h2>Concord console</h2>
    <p class="muted">Sign in with the cluster's admin or viewer token.</p>
    <form onSubmit=${submit}>
      <label class="field"
        >Your name (for the audit log)<input name="name" autocomplete="username"
      /></label>
      <label class="field"
        >Token or password
        <input name="token" type="password" autocomplete="current-password" required
      /></label>
      ${error && html`<div class="error" role="alert" data-testid="signin-error">${error}</div>`}
      <button class="primary" type="submit" disabled=${busy}>Sign in</button>
    </form>
  </div>`;
}

function parseRoute(hash) {
  const [path, query = ''] = hash.replace(/^#/, '').split('?');
  const params = Object.fromEntries(new URLSearchParams(query));
  const parts = path.split('/').filter(Boolean);
  if (parts[0] === 'tx' && parts[1]) return { view: 'tx', xid: decodeURIComponent(parts[1]) };
  if (parts[0] === 'transactions') return { view: 'transactions', params };
  if (parts[0] === 'locks') return { view: 'locks', params };
  return { view: 'cluster' };
}

function useRoute() {
  const [route, setRoute] = useState(parseRoute(location.hash));
  useEffect(() => {
    const on = () => setRoute(parseRoute(location.hash));
    addEventListener('hashchange', on);
    return () => removeEventListener('hashchange', on);
  }, []);
  return route;
}

function Header({ me, route, onSignOut }) {
  const link = (view, href, label) =>
    html`<a href=${href} class=${route.view === view ? 'active' : ''}>${label}</a>`;
  return html`<header class="top">
    <span class="brand">Concord</span>
    <nav>
      ${link('cluster', '#/cluster', 'Cluster')}
      ${link('transactions', '#/transactions', 'Transactions')} ${link('locks', '#/locks', 'Locks')}
    </nav>
    <span class="who" data-testid="who">
      ${me.name || me.role} · <b data-testid="role">${me.role}</b> · on ${me.nodeId}
      <button onClick=${onSignOut}>Sign out</button>
    </span>
  </header>`;
}

function App() {
  const [me, setMe] = useState(undefined);
  const route = useRoute();
  const loadMe = async () => {
    try {
      session = await api('me');
      setMe(session);
    } catch {
      session = null;
      setMe(null);
    }
  };
  onSignedOut = () => {
    session = null;
    setMe(null);
  };
  useEffect(() => void loadMe(), []);
  if (me === undefined) return html`<p class="boot">Loading…</p>`;
  if (me === null) return html`<${SignIn} onSignedIn=${loadMe} />`;
  const signOut = async () => {
    await api('signout', { method: 'POST' }).catch(() => null);
    onSignedOut();
  };
  return html`<${Header} me=${me} route=${route} onSignOut=${signOut} />
    <main>${viewOf(route, me)}</main>`;
}

function viewOf(route, me) {
  const admin = me.role === 'admin';
  if (route.view === 'tx') return html`<${TransactionView} xid=${route.xid} admin=${admin} />`;
  if (route.view === 'transactions') return html`<${TransactionsView} params=${route.params} />`;
  if (route.view === 'locks') return html`<${LocksView} params=${route.params} />`;
  return html`<${ClusterView} me=${me} admin=${admin} />`;
}

function ConfirmDialog({ label, question, typed, danger, busy, onCancel, onConfirm }) {
  const [entered, setEntered] = useState('');
  return html`<div class="modal-back">
    <div class="modal" role="dialog">
      <h3>${label}?</h3>
      <p>${question}</p>
      ${
        typed &&
        html`<label class="field"
          >Type <b class="mono">${typed}</b> to confirm
          <input
            data-testid="confirm-typed"
            value=${entered}
            onInput=${(e) => setEntered(e.target.value)}
        /></label>`
      }
      <div class="buttons">
        <button onClick=${onCancel}>Cancel</button>
        <button
          class=${danger ? 'danger' : 'primary'}
          data-testid="confirm"
          disabled=${busy || (typed && entered !== typed)}
          onClick=${onConfirm}
        >
          ${label}
        </button>
      </div>
    </div>
  </div>`;
}

/**
 * An action behind a confirmation: a button that opens the dialog, runs `run` on confirm and
 * shows the outcome. `typed`: the text the operator must type to confirm (e.g. the xid).
 */
export function ActionButton(props) {
  const { label, run, danger, testid, onDone, onResult } = props;
  const [open, setOpen] = useState(false);
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState(null);
  const confirm = async () => {
    setBusy(true);
    let outcome;
    try {
      const r = await run();
      outcome = {
        ok: true,
        text: `${label}: done${r?.globalStatus ? ` (${r.globalStatus})` : ''}`,
      };
    } catch (err) {
      outcome = { ok: false, text: `${label} failed: ${err.message}` };
    }
    setResult(outcome);
    onResult?.(outcome);
    if (outcome.ok) onDone?.();
    setBusy(false);
    setOpen(false);
  };
  return html`<span>
    <button class=${danger ? 'danger' : ''} data-testid=${testid} onClick=${() => setOpen(true)}>
      ${label}
    </button>
    ${
      result &&
      html`<div class=${result.ok ? 'notice' : 'error'} data-testid=${`${testid}-result`}>
        ${result.text}
      </div>`
    }
    ${
      open &&
      html`<${ConfirmDialog}
        ...${props}
        busy=${busy}
        onCancel=${() => setOpen(false)}
        onConfirm=${confirm}
      />`
    }
  </span>`;
}

render(html`<${App} />`, document.getElementById('app'));
