// Herald operator console: a client of Herald's REST API and of nothing else. Every
// action on these pages is one API call that curl could make (the OpenAPI document at
// /v1/openapi.json describes them). Plain JavaScript, no framework, no build step.
//
// Rules this file keeps:
// * Nothing is ever parsed as HTML. Pages are built with createElement and text
//   nodes, so a receiver's response body or an event's payload shows as characters
//   and runs nothing (the server's Content-Security-Policy forbids inline code too).
// * The API key lives in this tab's sessionStorage only. It is sent in the
//   Authorization header of API calls, and never put in a URL, a cookie or a log.
// * Every wait is bounded, every list is paged, and polling stops when the page is left.
'use strict';

(function () {
  const STORE_KEY = 'herald.console.api_key';
  const STORE_ADMIN = 'herald.console.admin';
  const STORE_TENANT = 'herald.console.tenant';
  /** Polling period of the overview, the live tail and pending deliveries. */
  const POLL_MS = 2000;
  /** How long a test send or a retry is followed before the page says "still pending". */
  const FOLLOW_MS_MAX = 120000;
  /** Rows kept on the live tail; older ones are dropped from the page. */
  const TAIL_ROWS_MAX = 200;
  /** Pages of deliveries the live tail reads per poll. */
  const TAIL_PAGES_PER_POLL_MAX = 10;
  /** Pending rows of the live tail re-read per poll. */
  const TAIL_REFRESH_PER_POLL_MAX = 10;
  /** Samples of /metrics the overview keeps (one per poll: two minutes). */
  const METRIC_SAMPLES_MAX = 61;
  /** Pages read to fill a picker (webhooks, tenants): 100 items a page. */
  const PICKER_PAGES_MAX = 10;
  /** Health lookups of the webhook list running at once. */
  const HEALTH_LOOKUPS_AT_ONCE = 3;
  const PAGE_SIZES = [20, 50, 100];
  const SCHEMES = ['standard', 'ed25519', 'stripe', 'olo'];

  // ------------------------------------------------------------------ DOM helpers

  /** Builds an element; strings among `children` become text nodes. */
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    setProps(el, props);
    return add(el, children);
  }

  /** Builds an SVG element (attributes only). */
  function svg(tag, attrs, ...children) {
    const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [name, value] of Object.entries(attrs || {})) el.setAttribute(name, String(value));
    return add(el, children);
  }

  function setProps(el, props) {
    for (const [name, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === 'class') el.className = value;
      else if (name.startsWith('on') && typeof value === 'function') {
        el.addEventListener(name.slice(2), value);
      } else el.setAttribute(name, value === true ? '' : String(value));
    }
  }

  function add(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : String(child));
    }
    return el;
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
    return el;
  }

  function byId(id) {
    return document.getElementById(id);
  }

  let uniqueIds = 0;
  function uid(prefix) {
    uniqueIds += 1;
    return prefix + '-' + uniqueIds;
  }

  /** Tells screen readers about something that happened off-focus. */
  function announce(message) {
    const region = byId('announce');
    region.textContent = '';
    window.setTimeout(() => {
      region.textContent = message;
    }, 50);
  }

  // ------------------------------------------------------------------ formatting

  function pad(n) {
    return String(n).padStart(2, '0');
  }

  /** `2026-01-31 13:14:15` in local time. */
  function fmtTime(iso) {
    if (!iso) return '—';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function timeEl(iso) {
    if (!iso) return h('span', { class: 'muted' }, '—');
    return h('time', { datetime: iso, title: iso }, fmtTime(iso));
  }

  /** A `datetime-local` input's value as RFC 3339 (UTC), or null when empty. */
  function localToIso(value) {
    if (!value) return null;
    const d = new Date(value);
    if (Number.isNaN(d.getTime())) throw new ApiError(0, 'invalid', `"${value}" is not a date and time.`);
    return d.toISOString();
  }

  /** A Date as a `datetime-local` value (minutes). */
  function dateToLocal(d) {
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
  }

  function fmtMs(ms) {
    if (ms === null || ms === undefined) return '—';
    if (ms < 1000) return `${ms} ms`;
    return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
  }

  function fmtSeconds(s) {
    if (!Number.isFinite(s)) return '—';
    if (s < 1) return `${Math.round(s * 1000)} ms`;
    return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  }

  /** A percentage that reads 100 % or 0 % only when it is exactly that. */
  function fmtPct(part, whole) {
    if (!whole) return '—';
    if (part === whole) return '100 %';
    if (part === 0) return '0 %';
    const pct = Math.min(99.9, Math.max(0.1, (100 * part) / whole));
    return `${pct.toFixed(1)} %`;
  }

  function fmtRate(perS) {
    if (!Number.isFinite(perS)) return '—';
    return perS >= 100 ? perS.toFixed(0) : perS >= 10 ? perS.toFixed(1) : perS.toFixed(2);
  }

  const BADGES = {
    success: 'ok', active: 'ok', closed: 'ok',
    failed: 'bad', disabled: 'bad', open: 'bad',
    pending: 'warn', half_open: 'warn',
  };

  function badge(value, label) {
    return h('span', { class: 'badge ' + (BADGES[value] || 'neutral') }, label || String(value).replace('_', ' '));
  }

  /** `status_503` → `HTTP 503`; other error classes as they are. */
  function errorClass(name) {
    if (!name) return '—';
    const m = /^status_(\d{3})$/.exec(name);
    return m ? `HTTP ${m[1]} (${name})` : name;
  }

  function describeWebhook(w) {
    return w ? w.url : '';
  }

  // ------------------------------------------------------------------ session

  const session = {
    key: null,
    admin: false,
    tenant: null,
  };

  function loadSession() {
    try {
      session.key = sessionStorage.getItem(STORE_KEY);
      session.admin = sessionStorage.getItem(STORE_ADMIN) === 'true';
      session.tenant = sessionStorage.getItem(STORE_TENANT);
    } catch (_) {
      session.key = null;
    }
  }

  function saveSession() {
    sessionStorage.setItem(STORE_KEY, session.key);
    sessionStorage.setItem(STORE_ADMIN, session.admin ? 'true' : 'false');
    if (session.tenant) sessionStorage.setItem(STORE_TENANT, session.tenant);
    else sessionStorage.removeItem(STORE_TENANT);
  }

  /** Forgets the key (and the tenant), stops every poll, shows the sign-in form. */
  function signOut(message) {
    for (const name of [STORE_KEY, STORE_ADMIN, STORE_TENANT]) sessionStorage.removeItem(name);
    session.key = null;
    session.admin = false;
    session.tenant = null;
    tenantsCache = null;
    leaveView();
    if (location.hash && location.hash !== '#/') history.replaceState(null, '', location.pathname);
    renderSignIn(message);
  }

  // ------------------------------------------------------------------ the API

  class ApiError extends Error {
    constructor(status, code, message, field) {
      super(message);
      this.status = status;
      this.code = code;
      this.field = field || null;
    }
  }

  /** One API call with an explicit key; resolves to `{status, data}` whatever the status. */
  async function request(method, path, { key, tenant, body } = {}) {
    const headers = { Accept: 'application/json' };
    if (key) headers.Authorization = 'Bearer ' + key;
    if (tenant) headers['Herald-Tenant'] = tenant;
    const init = { method, headers, cache: 'no-store', credentials: 'omit', redirect: 'error' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, 'network',
        `The server did not answer (${e.message}). Check that herald serve is running and reachable, then try again.`);
    }
    const text = await response.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        data = text;
      }
    }
    return { status: response.status, data };
  }

  function errorFrom({ status, data }) {
    const detail = (data && typeof data === 'object' && data.error) || {};
    return new ApiError(status, detail.code || `http_${status}`,
      detail.message || `The server answered HTTP ${status}.`, detail.field);
  }

  /** An API call as the signed-in user; throws ApiError with the API's message. */
  async function api(method, path, body) {
    const answer = await request(method, path, {
      key: session.key,
      tenant: session.admin ? session.tenant : null,
      body,
    });
    if (answer.status >= 200 && answer.status < 300) return answer.data;
    const error = errorFrom(answer);
    if (answer.status === 401 && session.key) {
      signOut(`The server refused the API key: ${error.message} Sign in again.`);
    }
    throw error;
  }

  function query(params) {
    const q = new URLSearchParams();
    for (const [name, value] of Object.entries(params)) {
      if (value !== null && value !== undefined && value !== '') q.set(name, String(value));
    }
    const text = q.toString();
    return text ? '?' + text : '';
  }

  /** Every item of a paged listing, at most `pagesMax` pages of 100. */
  async function listAll(path, pagesMax) {
    const items = [];
    let cursor = null;
    for (let page = 0; page < pagesMax; page += 1) {
      const answer = await api('GET', path + query({ limit: 100, cursor }));
      items.push(...(answer.data || []));
      cursor = answer.next_cursor;
      if (!cursor) return { items, more: false };
    }
    return { items, more: true };
  }

  let catalogCache = null;
  async function catalog() {
    if (!catalogCache) catalogCache = (await api('GET', '/v1/event-types')).data || [];
    return catalogCache;
  }

  let tenantsCache = null;

  // ------------------------------------------------------------------ shared pieces

  function errorBox(error, hint) {
    const message = error instanceof Error ? error.message : String(error);
    const code = error instanceof ApiError && error.status ? ` (HTTP ${error.status}, ${error.code})` : '';
    return h('div', { class: 'error', role: 'alert' },
      h('strong', null, 'Error' + code + ': '),
      h('span', { class: 'message' }, message),
      hint ? h('p', { class: 'hint' }, hint) : null);
  }

  function loadingEl(text) {
    return h('p', { class: 'loading', role: 'status' }, text);
  }

  function emptyEl(...children) {
    return h('div', { class: 'empty' }, ...children);
  }

  function heading(text) {
    return h('h1', { tabindex: '-1', id: 'page-title' }, text);
  }

  function field(labelText, control, hint) {
    const id = control.id || uid('f');
    control.id = id;
    let hintEl = null;
    if (hint) {
      hintEl = h('p', { class: 'hint', id: id + '-hint' }, hint);
      control.setAttribute('aria-describedby', id + '-hint');
    }
    return h('div', { class: 'field' }, h('label', { for: id }, labelText), control, hintEl);
  }

  function selectEl(props, options, selected) {
    const select = h('select', props);
    for (const [value, label] of options) {
      select.append(h('option', { value, selected: value === selected }, label));
    }
    return select;
  }

  function tableEl(columns, rows, props) {
    return h('div', { class: 'table-wrap' },
      h('table', Object.assign({ class: 'cards' }, props || {}),
        h('thead', null, h('tr', null, columns.map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', null, rows)));
  }

  /** A table cell labelled with its column (phone-width cards show the label). */
  function cell(label, ...children) {
    return h('td', { 'data-label': label }, ...children);
  }

  /** Marks the control the API named in `error.field` (a JSON path such as
   *  `events[1]` or `signature.scheme`: its first member when no control has it all)
   *  and focuses it. */
  function markField(form, error) {
    for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
    if (!(error instanceof ApiError) || !error.field) return;
    const control = form.querySelector(`[data-field="${CSS.escape(error.field)}"]`) ||
      form.querySelector(`[data-field="${CSS.escape(error.field.split(/[.[]/)[0])}"]`);
    if (control) {
      control.setAttribute('aria-invalid', 'true');
      control.focus();
    }
  }

  /**
   * A modal dialog; resolves to the values of its fields (by name) when confirmed, or
   * null when cancelled (Cancel, Escape).
   */
  function dialog({ title, text, fields, confirm, danger }) {
    return new Promise((resolve) => {
      const before = document.activeElement;
      const titleId = uid('dlg');
      const inputs = (fields || []).map((f) => {
        const input = h('input', { name: f.name, type: f.type || 'text', value: f.value ?? '', min: f.min, max: f.max });
        return field(f.label, input, f.hint);
      });
      const cancel = h('button', { type: 'button' }, 'Cancel');
      const ok = h('button', { type: 'submit', class: danger ? 'danger primary' : 'primary' }, confirm);
      const form = h('form', null, h('h2', { id: titleId }, title),
        text ? h('p', null, text) : null, inputs,
        h('div', { class: 'actions' }, ok, cancel));
      const dlg = h('dialog', { 'aria-labelledby': titleId }, form);
      let result = null;
      form.addEventListener('submit', (e) => {
        e.preventDefault();
        result = {};
        for (const input of form.querySelectorAll('input')) result[input.name] = input.value;
        dlg.close();
      });
      cancel.addEventListener('click', () => dlg.close());
      dlg.addEventListener('close', () => {
        dlg.remove();
        if (before && before.isConnected) before.focus();
        resolve(result);
      });
      document.body.append(dlg);
      dlg.showModal();
      (inputs.length ? form.querySelector('input') : cancel).focus();
    });
  }

  /** A just-created or rotated secret, shown once, with a copy button. */
  function secretPanel(secret, note, onDone) {
    const titleId = uid('secret');
    const input = h('input', { type: 'text', readonly: true, id: 'secret-value', 'aria-labelledby': titleId, spellcheck: 'false' });
    input.value = secret;
    const status = h('span', { class: 'hint', role: 'status' });
    const copy = h('button', { type: 'button', id: 'copy-secret' }, 'Copy');
    copy.addEventListener('click', async () => {
      try {
        // A browser that neither grants nor refuses clipboard access must not leave
        // the button hanging: fall back to selecting the text after a moment.
        await Promise.race([
          navigator.clipboard.writeText(secret),
          new Promise((_, reject) => window.setTimeout(() => reject(new Error('no answer')), 1500)),
        ]);
        status.textContent = 'Copied to the clipboard.';
      } catch (_) {
        input.focus();
        input.select();
        let copied = false;
        try {
          copied = document.execCommand('copy');
        } catch (__) {
          copied = false;
        }
        status.textContent = copied ? 'Copied to the clipboard.' : 'Selected: press Ctrl+C (or ⌘C) to copy.';
      }
    });
    const panel = h('section', { class: 'success-box', id: 'secret-panel', 'aria-labelledby': titleId },
      h('h2', { id: titleId }, 'New signing secret — shown once'),
      h('p', null, note, ' Store it now: the server keeps it for signing but never shows it again.'),
      h('div', { class: 'secret-row' }, input, copy), status);
    const done = h('button', { type: 'button', class: 'small' }, 'I have stored it');
    done.addEventListener('click', () => {
      input.value = '';
      panel.remove();
      announce('The secret was removed from the page.');
      if (onDone) onDone();
    });
    panel.append(h('p', null, done));
    return panel;
  }

  /**
   * A secret shown once, for a page that was left while the request that made it was
   * under way: in a dialog over whatever is shown now, closed only by "I have stored it"
   * (not by Escape), so that it is never lost unseen.
   */
  function secretDialog(secret, note) {
    const dlg = h('dialog', { 'aria-label': 'New signing secret', id: 'secret-dialog' });
    dlg.append(secretPanel(secret, note, () => dlg.close()));
    dlg.addEventListener('cancel', (e) => e.preventDefault());
    dlg.addEventListener('close', () => dlg.remove());
    document.body.append(dlg);
    dlg.showModal();
    byId('secret-value').focus();
  }

  // ------------------------------------------------------------------ views and routing

  /** The page on screen: whether it is still current, and its timers. */
  let current = null;

  function leaveView() {
    if (current) {
      current.live = false;
      for (const timer of current.timers) window.clearTimeout(timer);
    }
    current = null;
  }

  function newView() {
    leaveView();
    const view = {
      live: true,
      timers: [],
      /** Waits `ms`; resolves false when the page was left meanwhile. */
      sleep(ms) {
        return new Promise((resolve) => {
          if (!view.live) return resolve(false);
          view.timers.push(window.setTimeout(() => resolve(view.live), ms));
        });
      },
      /** Runs `task` now and every `ms` after it finishes, while the page is shown. */
      every(ms, task) {
        const loop = async () => {
          while (view.live) {
            try {
              await task();
            } catch (_) {
              // The task shows its own errors; the poll goes on.
            }
            if (!(await view.sleep(ms))) return;
          }
        };
        loop();
      },
    };
    current = view;
    return view;
  }

  const PAGES = [
    { re: /^\/overview$/, nav: 'overview', render: overviewPage },
    { re: /^\/webhooks$/, nav: 'webhooks', render: webhooksPage },
    { re: /^\/webhooks\/new$/, nav: 'webhooks', render: webhookFormPage },
    { re: /^\/webhooks\/(wh_[A-Za-z0-9_-]+)\/edit$/, nav: 'webhooks', render: webhookFormPage },
    { re: /^\/test$/, nav: 'test', render: testPage },
    { re: /^\/deliveries$/, nav: 'deliveries', render: deliveriesPage },
    { re: /^\/deliveries\/(del_[0-9a-f]+)$/, nav: 'deliveries', render: deliveryPage },
    { re: /^\/tail$/, nav: 'tail', render: tailPage },
    { re: /^\/catalog$/, nav: 'catalog', render: catalogPage },
  ];

  const NAV = [
    ['overview', 'Overview'],
    ['webhooks', 'Webhooks'],
    ['test', 'Test send'],
    ['deliveries', 'Deliveries'],
    ['tail', 'Live tail'],
    ['catalog', 'Event catalog'],
  ];

  function parseHash() {
    const raw = location.hash.replace(/^#/, '');
    const at = raw.indexOf('?');
    const path = at < 0 ? raw : raw.slice(0, at);
    const params = new URLSearchParams(at < 0 ? '' : raw.slice(at + 1));
    return { path: path || '/overview', params };
  }

  function go(path) {
    if (location.hash === '#' + path) route(true);
    else location.hash = '#' + path;
  }

  async function route(moveFocus) {
    if (!session.key) return renderSignIn();
    if (session.admin && !session.tenant) return renderTenantPicker();
    renderShell();
    const { path, params } = parseHash();
    const page = PAGES.find((p) => p.re.test(path));
    const view = newView();
    for (const link of byId('nav').querySelectorAll('a')) {
      if (page && link.dataset.page === page.nav) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    const main = clear(byId('main'));
    if (!page) {
      main.append(heading('Page not found'),
        emptyEl(`There is no console page "${path}". `, h('a', { href: '#/overview' }, 'Go to the overview.')));
      document.title = 'Not found · Herald console';
    } else {
      const match = page.re.exec(path);
      const label = NAV.find(([name]) => name === page.nav)[1];
      document.title = `${label} · Herald console`;
      try {
        await page.render(view, main, match, params);
      } catch (error) {
        if (view.live && session.key) main.append(errorBox(error));
      }
    }
    if (moveFocus && view.live) {
      const title = byId('page-title');
      if (title) title.focus();
    }
  }

  function renderShell() {
    const bar = byId('bar');
    bar.hidden = false;
    const nav = clear(byId('nav'));
    for (const [name, label] of NAV) {
      nav.append(h('a', { href: '#/' + name, 'data-page': name }, label));
    }
    const who = clear(byId('who'));
    if (session.admin) {
      const select = h('select', { id: 'tenant-switch', name: 'tenant' },
        h('option', { value: session.tenant }, session.tenant));
      who.append(h('label', { for: 'tenant-switch', class: 'small' }, 'Admin key, acting for tenant'), select);
      select.addEventListener('change', () => {
        session.tenant = select.value;
        saveSession();
        catalogCache = null;
        announce(`Now acting for tenant ${session.tenant}.`);
        route(true);
      });
      fillTenantSwitch(select);
    } else {
      who.append(h('span', { class: 'small' }, 'Signed in with a tenant key'));
    }
    const out = h('button', { type: 'button', id: 'sign-out', class: 'small' }, 'Sign out');
    out.addEventListener('click', () => signOut('Signed out. The key was removed from this tab.'));
    who.append(out);
  }

  async function fillTenantSwitch(select) {
    try {
      if (!tenantsCache) tenantsCache = (await listAll('/v1/tenants', PICKER_PAGES_MAX)).items;
    } catch (_) {
      return; // The current tenant stays selectable; the page shows API errors itself.
    }
    if (!select.isConnected) return;
    clear(select);
    const ids = tenantsCache.map((t) => t.id);
    if (!ids.includes(session.tenant)) ids.unshift(session.tenant);
    for (const id of ids) select.append(h('option', { value: id, selected: id === session.tenant }, id));
  }

  // ------------------------------------------------------------------ sign in

  async function identify(key) {
    const admin = await request('GET', '/v1/tenants?limit=1', { key });
    if (admin.status === 200) return 'admin';
    if (admin.status !== 404) throw errorFrom(admin);
    // Tenant keys do not see admin routes (404); check the key works for a tenant.
    const tenant = await request('GET', '/v1/webhooks?limit=1', { key });
    if (tenant.status === 200) return 'tenant';
    throw errorFrom(tenant);
  }

  function renderSignIn(message) {
    leaveView();
    byId('bar').hidden = true;
    document.title = 'Sign in · Herald console';
    const main = clear(byId('main'));
    const input = h('input', {
      id: 'api_key', name: 'api_key', type: 'password', autocomplete: 'off',
      spellcheck: 'false', autocapitalize: 'off', required: true,
    });
    const errors = h('div', { id: 'signin-errors' });
    const submit = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
    const form = h('form', { class: 'panel signin', id: 'signin', novalidate: true },
      h('h1', { tabindex: '-1', id: 'page-title' }, 'Herald console'),
      message ? h('p', { class: 'notice', role: 'status', id: 'signin-message' }, message) : null,
      field('API key', input,
        'A tenant key, or the admin key (you then choose a tenant). The key is kept in this tab\'s ' +
        'session storage only and sent only to this server\'s API. Sign out to forget it: a browser that ' +
        'restores closed tabs or sessions restores their session storage too.'),
      errors, submit);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      clear(errors);
      input.removeAttribute('aria-invalid');
      const key = input.value.trim();
      if (!key) {
        input.setAttribute('aria-invalid', 'true');
        errors.append(errorBox('Enter an API key.', 'Tenant keys come from POST /v1/tenants or POST /v1/tenants/{id}/keys.'));
        input.focus();
        return;
      }
      submit.disabled = true;
      submit.textContent = 'Signing in…';
      try {
        const kind = await identify(key);
        session.key = key;
        session.admin = kind === 'admin';
        session.tenant = null;
        saveSession();
        input.value = '';
        if (session.admin) renderTenantPicker();
        else go(parseHash().path);
      } catch (error) {
        input.setAttribute('aria-invalid', 'true');
        errors.append(errorBox(error, error.status === 401 ? 'Check the key: it may be mistyped, revoked, or another server\'s.' : null));
        input.focus();
      } finally {
        submit.disabled = false;
        submit.textContent = 'Sign in';
      }
    });
    main.append(form);
    input.focus();
  }

  async function renderTenantPicker() {
    leaveView();
    byId('bar').hidden = true;
    document.title = 'Choose a tenant · Herald console';
    const main = clear(byId('main'));
    const panel = h('section', { class: 'panel signin', id: 'tenant-picker' },
      h('h1', { tabindex: '-1', id: 'page-title' }, 'Choose a tenant'),
      h('p', null, 'You signed in with the admin key. It acts for one tenant at a time ' +
        '(the API\'s Herald-Tenant header); you can switch later from the top bar.'));
    const body = h('div', null, loadingEl('Loading tenants…'));
    const out = h('button', { type: 'button', id: 'sign-out' }, 'Sign out');
    out.addEventListener('click', () => signOut('Signed out. The key was removed from this tab.'));
    panel.append(body, h('p', null, out));
    main.append(panel);
    let tenants;
    try {
      tenants = await listAll('/v1/tenants', PICKER_PAGES_MAX);
    } catch (error) {
      clear(body).append(errorBox(error));
      return;
    }
    tenantsCache = tenants.items;
    clear(body);
    if (!tenants.items.length) {
      body.append(emptyEl('There are no tenants yet. Create one with the admin key ',
        h('code', null, 'POST /v1/tenants {"id": "acme"}'), ', then reload this page.'));
      return;
    }
    const select = selectEl({ name: 'tenant', id: 'tenant' }, tenants.items.map((t) => [t.id, t.id]));
    const form = h('form', { id: 'tenant-form' },
      field('Tenant', select, tenants.more ? `The first ${tenants.items.length} tenants are listed.` : null),
      h('button', { type: 'submit', class: 'primary' }, 'Continue'));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      session.tenant = select.value;
      saveSession();
      go('/overview');
    });
    body.append(form);
    select.focus();
  }

  // ------------------------------------------------------------------ overview

  function parseMetrics(text) {
    const values = new Map();
    for (const line of text.split('\n')) {
      if (!line || line.startsWith('#')) continue;
      const at = line.lastIndexOf(' ');
      if (at < 0) continue;
      values.set(line.slice(0, at), Number(line.slice(at + 1)));
    }
    return values;
  }

  function sumPrefix(values, prefix) {
    let total = 0;
    for (const [name, value] of values) if (name.startsWith(prefix)) total += value;
    return total;
  }

  function delivered(m) {
    return {
      ended: sumPrefix(m, 'herald_deliveries_total{'),
      success: m.get('herald_deliveries_total{outcome="success"}') || 0,
    };
  }

  /** Cumulative buckets of the attempt latency histogram: [[upper bound s, count]]. */
  function buckets(m) {
    const out = [];
    for (const [name, value] of m) {
      const match = /^herald_attempt_duration_seconds_bucket\{le="([^"]+)"\}$/.exec(name);
      if (match) out.push([match[1] === '+Inf' ? Infinity : Number(match[1]), value]);
    }
    return out.sort((a, b) => a[0] - b[0]);
  }

  /** The 99th percentile's bucket bound from cumulative bucket counts (or differences). */
  function p99(bucketCounts) {
    const total = bucketCounts.length ? bucketCounts[bucketCounts.length - 1][1] : 0;
    if (!total) return null;
    const want = 0.99 * total;
    for (const [bound, count] of bucketCounts) if (count >= want) return bound;
    return Infinity;
  }

  function bucketDelta(now, then) {
    return now.map(([bound, count], i) => [bound, count - ((then[i] && then[i][1]) || 0)]);
  }

  function tile(label, value, sub, id) {
    return h('div', { class: 'tile', id },
      h('div', { class: 'label' }, label), h('div', { class: 'value' }, value), h('div', { class: 'sub' }, sub));
  }

  /** A line chart of `points` (one per poll), `width` CSS pixels wide (1 unit = 1 px). */
  function rateChart(points, width) {
    const height = 160;
    const left = 40;
    const bottom = 20;
    const top = 10;
    const max = Math.max(1, ...points);
    const step = (width - left - 4) / Math.max(1, METRIC_SAMPLES_MAX - 2);
    const x = (i) => left + (i + (METRIC_SAMPLES_MAX - 1 - points.length)) * step;
    const y = (v) => top + (height - top - bottom) * (1 - v / max);
    const latest = points.length ? points[points.length - 1] : 0;
    const chart = svg('svg', {
      class: 'chart', viewBox: `0 0 ${width} ${height}`, width, height, role: 'img',
      'aria-label': `Deliveries per second over the last two minutes; latest ${fmtRate(latest)}, peak ${fmtRate(Math.max(0, ...points))}.`,
    });
    chart.append(
      svg('line', { class: 'axis', x1: left, y1: height - bottom, x2: width, y2: height - bottom }),
      svg('line', { class: 'axis', x1: left, y1: top, x2: left, y2: height - bottom }),
      svg('text', { x: 4, y: top + 10 }, fmtRate(max)),
      svg('text', { x: 4, y: height - bottom }, '0'),
      svg('text', { x: left, y: height - 4 }, '2 min ago'),
      svg('text', { x: width - 30, y: height - 4 }, 'now'));
    if (points.length > 1) {
      const coords = points.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`);
      chart.append(
        svg('polygon', {
          class: 'area',
          points: `${x(0).toFixed(1)},${height - bottom} ${coords.join(' ')} ${x(points.length - 1).toFixed(1)},${height - bottom}`,
        }),
        svg('polyline', { class: 'line', points: coords.join(' ') }));
    }
    return chart;
  }

  async function overviewPage(view, main) {
    main.append(heading('Overview'));
    const server = h('section', { class: 'panel', 'aria-labelledby': 'ov-server' },
      h('h2', { id: 'ov-server' }, 'Whole server'),
      h('p', { class: 'hint' }, 'Figures for every tenant of this server, read from GET /metrics every 2 s; ' +
        'rates are over the time this page has been open (up to two minutes).'));
    const tiles = h('div', { class: 'tiles', id: 'ov-tiles' }, loadingEl('Reading /metrics…'));
    const chartBox = h('div', { id: 'ov-chart' });
    const metricsError = h('div');
    server.append(metricsError, tiles, h('h3', { class: 'small muted' }, 'Deliveries ended per second'), chartBox);
    const tenant = h('section', { class: 'panel', 'aria-labelledby': 'ov-tenant' },
      h('h2', { id: 'ov-tenant' }, session.admin ? `Tenant ${session.tenant}` : 'This tenant'));
    const tenantBody = h('div', null, loadingEl('Loading webhooks…'));
    tenant.append(tenantBody);
    main.append(tenant, server);

    const samples = [];
    view.every(POLL_MS, async () => {
      let text;
      try {
        const response = await fetch('/metrics', { cache: 'no-store', credentials: 'omit' });
        if (!response.ok) throw new ApiError(response.status, `http_${response.status}`, `GET /metrics answered HTTP ${response.status}.`);
        text = await response.text();
      } catch (error) {
        if (!view.live) return;
        clear(metricsError).append(errorBox(error, 'The figures resume when /metrics answers again.'));
        return;
      }
      if (!view.live) return;
      clear(metricsError);
      samples.push({ t: performance.now() / 1000, m: parseMetrics(text) });
      if (samples.length > METRIC_SAMPLES_MAX) samples.shift();
      renderFigures();
    });

    function renderFigures() {
      const last = samples[samples.length - 1];
      const first = samples[0];
      const now = delivered(last.m);
      const then = delivered(first.m);
      const seconds = last.t - first.t;
      const windowEnded = now.ended - then.ended;
      const windowText = seconds >= 1 ? `last ${Math.round(seconds)} s` : 'since the server started';
      const rate = seconds >= 1 ? windowEnded / seconds : NaN;
      const successPart = windowEnded > 0 ? now.success - then.success : now.success;
      const successWhole = windowEnded > 0 ? windowEnded : now.ended;
      const bucketsNow = buckets(last.m);
      const windowBuckets = bucketDelta(bucketsNow, buckets(first.m));
      const windowP99 = p99(windowBuckets);
      const latency = windowP99 !== null ? windowP99 : p99(bucketsNow);
      const latencyText = latency === null ? '—' : latency === Infinity ? '> 30 s' : `≤ ${fmtSeconds(latency)}`;
      clear(tiles).append(
        tile('Deliveries/s', fmtRate(rate), `ended deliveries, ${windowText}`, 'ov-rate'),
        tile('Success rate', fmtPct(successPart, successWhole),
          `${successPart} of ${successWhole} ended, ${windowEnded > 0 ? windowText : 'since the server started'}`, 'ov-success'),
        tile('Attempt p99', latencyText,
          windowP99 !== null ? `attempt latency, ${windowText}` : 'attempt latency, since the server started', 'ov-p99'),
        tile('Pending retries', String(last.m.get('herald_pending_retries') ?? '—'),
          `${last.m.get('herald_pending_deliveries') ?? 0} deliveries pending, ${last.m.get('herald_in_flight_requests') ?? 0} requests in flight`,
          'ov-retries'));
      const points = [];
      for (let i = 1; i < samples.length; i += 1) {
        const dt = samples[i].t - samples[i - 1].t;
        points.push(dt > 0 ? Math.max(0, (delivered(samples[i].m).ended - delivered(samples[i - 1].m).ended) / dt) : 0);
      }
      clear(chartBox).append(rateChart(points, Math.max(280, Math.floor(chartBox.clientWidth || 600))));
    }

    let webhooks;
    try {
      webhooks = await listAll('/v1/webhooks', 1);
    } catch (error) {
      if (view.live) clear(tenantBody).append(errorBox(error));
      return;
    }
    if (!view.live) return;
    clear(tenantBody);
    const list = webhooks.items;
    if (!list.length) {
      tenantBody.append(emptyEl('No webhooks yet. ', h('a', { href: '#/webhooks/new' }, 'Create a webhook'),
        ' to start receiving this tenant\'s events, then send it a test event.'));
      return;
    }
    const active = list.filter((w) => w.status === 'active').length;
    const tripped = list.filter((w) => w.health && w.health.breaker !== 'closed');
    const failing = list.filter((w) => w.health && w.health.consecutive_failures > 0);
    const pending = list.reduce((sum, w) => sum + (w.pending || 0), 0);
    tenantBody.append(h('div', { class: 'tiles' },
      tile('Webhooks', webhooks.more ? `${list.length}+` : String(list.length), `${active} active, ${list.length - active} disabled`, 'ov-webhooks'),
      tile('Pending deliveries', String(pending), 'waiting for an attempt or a retry', 'ov-pending'),
      tile('Breakers not closed', String(tripped.length), 'endpoints being protected', 'ov-breakers'),
      tile('Failing endpoints', String(failing.length), 'with consecutive failures', 'ov-failing')));
    if (failing.length) {
      tenantBody.append(h('h3', { class: 'small' }, 'Failing endpoints'),
        h('ul', null, failing.map((w) => h('li', null,
          h('a', { href: '#/deliveries' + query({ webhook: w.id, status: 'failed' }) }, w.url),
          ` — ${w.health.consecutive_failures} consecutive failures since `, timeEl(w.health.failing_since)))));
    }
  }

  // ------------------------------------------------------------------ webhooks

  /** Success rate over the last hour and the latest error, from the delivery log. */
  async function webhookHealth(webhook) {
    const since = new Date(Date.now() - 3600 * 1000).toISOString();
    const page = await api('GET', '/v1/deliveries' + query({ webhook_id: webhook.id, since, limit: 100 }));
    const items = page.data || [];
    const ended = items.filter((d) => d.status !== 'pending');
    const succeeded = ended.filter((d) => d.status === 'success').length;
    let lastError = null;
    for (let i = items.length - 1; i >= 0; i -= 1) {
      if (items[i].last_error && items[i].status !== 'success') {
        lastError = items[i];
        break;
      }
    }
    return { ended: ended.length, succeeded, sampled: Boolean(page.next_cursor), lastError };
  }

  function healthCell(webhook) {
    const health = webhook.health || {};
    const live = h('div', { class: 'small', 'data-health': webhook.id }, h('span', { class: 'muted' }, 'Reading the last hour…'));
    return {
      live,
      el: cell('Health',
        h('div', null, 'Breaker ', badge(health.breaker || 'closed')),
        health.consecutive_failures
          ? h('div', { class: 'small' }, `${health.consecutive_failures} consecutive failures since `, timeEl(health.failing_since))
          : null,
        webhook.pending ? h('div', { class: 'small' }, `${webhook.pending} pending`) : null,
        live),
    };
  }

  function fillHealth(el, result) {
    clear(el);
    if (!result.ended) el.append(h('div', { class: 'muted' }, 'No ended deliveries in the last hour'));
    else {
      el.append(h('div', null, `Success (1 h): ${fmtPct(result.succeeded, result.ended)} of ${result.ended}` +
        (result.sampled ? ' (first 100)' : '')));
    }
    if (result.lastError) {
      const d = result.lastError;
      el.append(h('div', null, 'Last error: ',
        h('a', { href: '#/deliveries/' + encodeURIComponent(d.id) }, errorClass(d.last_error)), ' at ', timeEl(d.created_at)));
    }
  }

  async function runLimited(tasks, atOnce) {
    let next = 0;
    const worker = async () => {
      while (next < tasks.length) {
        const task = tasks[next];
        next += 1;
        await task();
      }
    };
    await Promise.all(Array.from({ length: Math.min(atOnce, tasks.length) }, worker));
  }

  async function webhooksPage(view, main, _match, params) {
    main.append(heading('Webhooks'));
    const refresh = h('button', { type: 'button', id: 'refresh-webhooks' }, 'Refresh');
    main.append(h('div', { class: 'toolbar' },
      h('a', { class: 'button primary', href: '#/webhooks/new', id: 'new-webhook' }, 'New webhook'),
      h('span', { class: 'spacer' }), refresh));
    const flash = h('div', { id: 'flash' });
    // A rotated secret stays here until it is acknowledged: the page's other actions
    // and Refresh clear the flash area, not this.
    const secrets = h('div', { id: 'secrets' });
    const body = h('div', { id: 'webhook-list' });
    main.append(secrets, flash, body);
    if (params.get('saved')) flash.append(h('p', { class: 'success-box', role: 'status' }, `Saved webhook ${params.get('saved')}.`));
    const cursors = [null];

    async function show() {
      clear(body).append(loadingEl('Loading webhooks…'));
      let page;
      try {
        page = await api('GET', '/v1/webhooks' + query({ limit: 20, cursor: cursors[cursors.length - 1] }));
      } catch (error) {
        if (view.live) clear(body).append(errorBox(error, 'Use Refresh to try again.'));
        return;
      }
      if (!view.live) return;
      clear(body);
      const list = page.data || [];
      if (!list.length && cursors.length === 1) {
        body.append(emptyEl(h('p', null, 'No webhooks yet.'),
          h('p', null, 'A webhook is an HTTPS endpoint that receives the events its filters match (for example ',
            h('code', null, 'order.*'), '). ', h('a', { href: '#/webhooks/new' }, 'Create the first one'), '.')));
        return;
      }
      const lookups = [];
      const rows = list.map((w) => {
        const health = healthCell(w);
        lookups.push(async () => {
          try {
            const result = await webhookHealth(w);
            if (view.live) fillHealth(health.live, result);
          } catch (error) {
            if (view.live) clear(health.live).append(h('span', { class: 'muted' }, `Health unavailable: ${error.message}`));
          }
        });
        return h('tr', { 'data-id': w.id },
          cell('URL', h('div', { class: 'url break' }, w.url),
            w.description ? h('div', { class: 'small muted' }, w.description) : null,
            h('div', { class: 'small muted mono' }, w.id)),
          cell('Events', h('span', { class: 'mono break' }, (w.events || []).join(', '))),
          cell('Status', badge(w.status), w.disabled_reason ? h('div', { class: 'small muted' }, w.disabled_reason) : null),
          health.el,
          cell('Actions', webhookActions(w)));
      });
      body.append(tableEl(['URL', 'Events', 'Status', 'Health', 'Actions'], rows, { id: 'webhooks-table' }));
      const pager = h('div', { class: 'pager' });
      if (cursors.length > 1) {
        pager.append(h('button', { type: 'button', onclick: () => { cursors.pop(); show(); } }, 'Previous page'));
      }
      if (page.next_cursor) {
        pager.append(h('button', { type: 'button', onclick: () => { cursors.push(page.next_cursor); show(); } }, 'Next page'));
      }
      if (pager.firstChild) body.append(pager);
      runLimited(lookups, HEALTH_LOOKUPS_AT_ONCE);
    }

    function webhookActions(w) {
      const label = w.url;
      const toggle = h('button', { type: 'button', class: 'small', 'data-action': w.status === 'active' ? 'disable' : 'enable', 'aria-label': `${w.status === 'active' ? 'Disable' : 'Enable'} ${label}` },
        w.status === 'active' ? 'Disable' : 'Enable');
      toggle.addEventListener('click', async () => {
        const status = w.status === 'active' ? 'disabled' : 'active';
        toggle.disabled = true;
        try {
          await api('PATCH', `/v1/webhooks/${encodeURIComponent(w.id)}`, { status });
          announce(`${label} is now ${status}.`);
          clear(flash).append(h('p', { class: 'success-box', role: 'status' }, `${label} is now ${status}.`));
          await show();
        } catch (error) {
          clear(flash).append(errorBox(error));
          toggle.disabled = false;
        }
      });
      const rotate = h('button', { type: 'button', class: 'small', 'data-action': 'rotate', 'aria-label': `Rotate the secret of ${label}` }, 'Rotate secret');
      rotate.addEventListener('click', async () => {
        const answer = await dialog({
          title: 'Rotate the signing secret',
          text: `A new secret is generated for ${label}. The current one keeps signing alongside it for the grace period, so receivers can switch over.`,
          fields: [{ name: 'grace_s', label: 'Grace period (seconds)', type: 'number', value: '86400', min: 0, max: 604800, hint: '0 stops the old secret at once; at most 604800 (7 days).' }],
          confirm: 'Rotate',
        });
        if (!answer) return;
        const body = {};
        if (answer.grace_s !== '') body.grace_s = Number(answer.grace_s);
        try {
          const rotated = await api('POST', `/v1/webhooks/${encodeURIComponent(w.id)}/secret/rotate`, body);
          const note = rotated.previous_secret_expires_at
            ? `The previous secret keeps signing until ${fmtTime(rotated.previous_secret_expires_at)}.`
            : 'The previous secret no longer signs.';
          if (!view.live) {
            secretDialog(rotated.secret, note);
            return;
          }
          clear(flash);
          clear(secrets).append(secretPanel(rotated.secret, note));
          announce('Secret rotated. The new secret is shown once at the top of the list.');
          byId('secret-value').focus();
        } catch (error) {
          clear(flash).append(errorBox(error));
        }
      });
      const remove = h('button', { type: 'button', class: 'small danger', 'data-action': 'delete', 'aria-label': `Delete ${label}` }, 'Delete');
      remove.addEventListener('click', async () => {
        const answer = await dialog({
          title: 'Delete this webhook?',
          text: `${label} (${w.id}) stops receiving events, and its pending deliveries end as failed. This cannot be undone.`,
          confirm: 'Delete webhook',
          danger: true,
        });
        if (!answer) return;
        try {
          await api('DELETE', `/v1/webhooks/${encodeURIComponent(w.id)}`);
          clear(flash).append(h('p', { class: 'success-box', role: 'status' }, `Deleted ${label}.`));
          announce(`Deleted ${label}.`);
          await show();
        } catch (error) {
          clear(flash).append(errorBox(error));
        }
      });
      return h('div', { class: 'actions' },
        h('a', { class: 'button small', href: `#/webhooks/${encodeURIComponent(w.id)}/edit`, 'aria-label': `Edit ${label}` }, 'Edit'),
        h('a', { class: 'button small', href: '#/test' + query({ webhook: w.id }), 'aria-label': `Send a test event to ${label}` }, 'Test'),
        h('a', { class: 'button small', href: '#/deliveries' + query({ webhook: w.id }), 'aria-label': `Deliveries of ${label}` }, 'Deliveries'),
        toggle, rotate, remove);
    }

    refresh.addEventListener('click', () => {
      clear(flash);
      show();
    });
    await show();
  }

  function parseHeaders(text) {
    const headers = {};
    for (const [i, raw] of text.split('\n').entries()) {
      const line = raw.trim();
      if (!line) continue;
      const at = line.indexOf(':');
      if (at <= 0) throw new ApiError(0, 'invalid', `Header line ${i + 1} needs the form "Name: value".`, 'headers');
      headers[line.slice(0, at).trim()] = line.slice(at + 1).trim();
    }
    return headers;
  }

  function parseNumberList(text, name) {
    return text.split(/[\s,]+/).filter(Boolean).map((part) => {
      const n = Number(part);
      if (!Number.isFinite(n) || n < 0) throw new ApiError(0, 'invalid', `"${part}" is not a number of seconds.`, name);
      return n;
    });
  }

  function optionalInteger(text, name) {
    if (text.trim() === '') return null;
    const n = Number(text);
    if (!Number.isInteger(n) || n < 0) throw new ApiError(0, 'invalid', `${name} must be a whole number.`, name);
    return n;
  }

  async function webhookFormPage(view, main, match) {
    const id = match[1] || null;
    main.append(heading(id ? 'Edit webhook' : 'New webhook'));
    let existing = null;
    if (id) {
      const loading = loadingEl('Loading the webhook…');
      main.append(loading);
      existing = await api('GET', `/v1/webhooks/${encodeURIComponent(id)}`);
      loading.remove();
      if (!view.live) return;
    }
    const inputs = {
      url: h('input', { name: 'url', type: 'text', inputmode: 'url', required: true, 'data-field': 'url', spellcheck: 'false' }),
      events: h('input', { name: 'events', type: 'text', required: true, 'data-field': 'events', spellcheck: 'false' }),
      description: h('input', { name: 'description', type: 'text', 'data-field': 'description' }),
      scheme: selectEl({ name: 'scheme', 'data-field': 'signature' },
        [['', 'Server default'], ...SCHEMES.map((s) => [s, s])], existing ? existing.signature.scheme : ''),
      header: h('input', { name: 'signature_header', type: 'text', 'data-field': 'signature.header', spellcheck: 'false' }),
      secret: h('input', { name: 'secret', type: 'text', 'data-field': 'secret', autocomplete: 'off', spellcheck: 'false' }),
      headers: h('textarea', { name: 'headers', 'data-field': 'headers', rows: 3, spellcheck: 'false' }),
      schedule: h('input', { name: 'retry_schedule_s', type: 'text', 'data-field': 'retry_schedule_s', spellcheck: 'false' }),
      timeout: h('input', { name: 'timeout_ms', type: 'number', min: 1, 'data-field': 'timeout_ms' }),
      inFlight: h('input', { name: 'max_in_flight', type: 'number', min: 1, 'data-field': 'max_in_flight' }),
      rate: h('input', { name: 'rate_limit_per_s', type: 'number', min: 1, 'data-field': 'rate_limit_per_s' }),
    };
    if (existing) {
      inputs.url.value = existing.url;
      inputs.events.value = (existing.events || []).join(', ');
      inputs.description.value = existing.description || '';
      inputs.header.value = existing.signature.header || '';
      inputs.headers.value = Object.entries(existing.headers || {}).map(([n, v]) => `${n}: ${v}`).join('\n');
      inputs.schedule.value = (existing.retry_schedule_s || []).join(', ');
      inputs.timeout.value = existing.timeout_ms ?? '';
      inputs.inFlight.value = existing.max_in_flight ?? '';
      inputs.rate.value = existing.rate_limit_per_s ?? '';
    }
    const headerField = field('Signature header', inputs.header, 'Stripe scheme only: the header that carries t=…,v1=… (e.g. X-Olympus-Signature).');
    const syncHeader = () => {
      headerField.hidden = inputs.scheme.value !== 'stripe';
    };
    inputs.scheme.addEventListener('change', syncHeader);
    syncHeader();
    const errors = h('div', { id: 'form-errors' });
    const submit = h('button', { type: 'submit', class: 'primary' }, id ? 'Save changes' : 'Create webhook');
    const form = h('form', { class: 'panel', id: 'webhook-form', novalidate: true },
      field('Endpoint URL', inputs.url, 'Where events are POSTed, e.g. https://example.com/hooks. Redirects are never followed.'),
      field('Event filters', inputs.events, 'Comma-separated: exact types (order.created), prefixes (order.*) or * for every event.'),
      field('Description', inputs.description, 'Optional note for operators.'),
      h('div', { class: 'fields' },
        field('Signature scheme', inputs.scheme, existing ? 'Changing it keeps the current secret, which must suit the new scheme.' : null),
        headerField),
      existing ? null : field('Secret', inputs.secret, 'Optional. Leave empty to have one generated (shown once after creation). A standard secret is whsec_ followed by base64.'),
      field('Custom headers', inputs.headers, 'One "Name: value" per line, sent with every delivery.'),
      h('div', { class: 'fields' },
        field('Retry schedule (seconds)', inputs.schedule, 'Delays before each retry, e.g. 60, 300, 1800. Empty: the server\'s schedule.'),
        field('Timeout (ms)', inputs.timeout, 'Per request. Empty: the default (30000).'),
        field('Most requests in flight', inputs.inFlight, 'Concurrency cap for this endpoint.'),
        field('Rate limit (requests/s)', inputs.rate, 'Empty: no rate limit.')),
      errors,
      h('div', { class: 'actions' }, submit, h('a', { class: 'button', href: '#/webhooks' }, 'Cancel')));
    main.append(form);

    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      clear(errors);
      let body;
      try {
        body = webhookBody(inputs, existing);
      } catch (error) {
        errors.append(errorBox(error));
        markField(form, error);
        return;
      }
      submit.disabled = true;
      try {
        if (existing) {
          await api('PATCH', `/v1/webhooks/${encodeURIComponent(existing.id)}`, body);
          announce('Webhook saved.');
          go('/webhooks?' + new URLSearchParams({ saved: existing.id }).toString());
          return;
        }
        const created = await api('POST', '/v1/webhooks', body);
        if (!view.live) {
          secretDialog(created.secret, `Webhook ${created.id} for ${created.url} was created. Receivers verify signatures with this secret.`);
          return;
        }
        form.remove();
        main.append(h('p', { class: 'success-box', role: 'status', id: 'created' },
          `Created webhook ${created.id} for ${created.url}.`),
        secretPanel(created.secret, 'Receivers verify signatures with this secret.'),
        h('div', { class: 'actions' },
          h('a', { class: 'button primary', href: '#/test' + query({ webhook: created.id }) }, 'Send a test event'),
          h('a', { class: 'button', href: '#/webhooks' }, 'Back to webhooks')));
        announce('Webhook created. Its secret is shown once.');
        byId('secret-value').focus();
      } catch (error) {
        if (!view.live) return;
        errors.append(errorBox(error));
        markField(form, error);
      } finally {
        submit.disabled = false;
      }
    });
    inputs.url.focus();
  }

  function webhookBody(inputs, existing) {
    const body = {
      url: inputs.url.value.trim(),
      events: inputs.events.value.split(/[\s,]+/).filter(Boolean),
    };
    const description = inputs.description.value.trim();
    if (description || existing) body.description = description || null;
    const scheme = inputs.scheme.value;
    const header = inputs.header.value.trim();
    const currentScheme = existing ? existing.signature.scheme : '';
    const currentHeader = existing ? existing.signature.header || '' : '';
    if (scheme && (scheme !== currentScheme || (scheme === 'stripe' && header !== currentHeader))) {
      body.signature = { scheme };
      if (scheme === 'stripe' && header) body.signature.header = header;
    }
    if (!existing && inputs.secret.value.trim()) body.secret = inputs.secret.value.trim();
    const headers = parseHeaders(inputs.headers.value);
    if (Object.keys(headers).length || existing) body.headers = headers;
    const schedule = inputs.schedule.value.trim();
    if (schedule) body.retry_schedule_s = parseNumberList(schedule, 'retry_schedule_s');
    else if (existing) body.retry_schedule_s = null;
    const timeout = optionalInteger(inputs.timeout.value, 'timeout_ms');
    if (timeout !== null) body.timeout_ms = timeout;
    const inFlight = optionalInteger(inputs.inFlight.value, 'max_in_flight');
    if (inFlight !== null) body.max_in_flight = inFlight;
    const rate = optionalInteger(inputs.rate.value, 'rate_limit_per_s');
    if (rate !== null) body.rate_limit_per_s = rate;
    else if (existing) body.rate_limit_per_s = null;
    return body;
  }

  // ------------------------------------------------------------------ test send

  function deliverySummary(d) {
    return h('dl', { class: 'facts', id: 'follow-facts' },
      h('dt', null, 'Status'), h('dd', { id: 'follow-status', 'data-status': d.status }, badge(d.status)),
      h('dt', null, 'Attempts'), h('dd', null, String(d.attempts)),
      h('dt', null, 'Response'), h('dd', null, d.response_code ? `HTTP ${d.response_code}` : '—',
        d.response_time_ms !== null && d.response_time_ms !== undefined ? ` in ${fmtMs(d.response_time_ms)}` : ''),
      h('dt', null, 'Last error'), h('dd', null, errorClass(d.last_error)),
      h('dt', null, 'Next retry'), h('dd', null, timeEl(d.next_retry_at)));
  }

  /** Re-reads a delivery until it is no longer pending (bounded), showing each state. */
  async function followDelivery(view, box, id) {
    const deadline = Date.now() + FOLLOW_MS_MAX;
    const facts = h('div', null, loadingEl('Waiting for the first attempt…'));
    const note = h('p', { class: 'hint', role: 'status' });
    clear(box).append(facts, note,
      h('p', null, h('a', { href: '#/deliveries/' + encodeURIComponent(id), id: 'follow-link' }, `Open delivery ${id}`)));
    for (;;) {
      let d;
      try {
        d = await api('GET', `/v1/deliveries/${encodeURIComponent(id)}`);
      } catch (error) {
        if (!view.live) return;
        clear(facts).append(errorBox(error));
        return;
      }
      if (!view.live) return;
      clear(facts).append(deliverySummary(d));
      if (d.status !== 'pending') {
        note.textContent = d.status === 'success' ? 'Delivered.' : 'The delivery ended without success; its page shows the receiver\'s answer.';
        announce(`Delivery ${d.status}.`);
        return;
      }
      if (Date.now() > deadline) {
        note.textContent = 'Still pending; the delivery\'s page shows its progress and next retry.';
        return;
      }
      note.textContent = 'Following: this refreshes every second until the delivery ends.';
      if (!(await view.sleep(1000))) return;
    }
  }

  async function testPage(view, main, _match, params) {
    main.append(heading('Test send'),
      h('p', { class: 'hint' }, 'Sends one event to one webhook, signed like any delivery, without publishing it to other webhooks ' +
        '(POST /v1/webhooks/{id}/test).'));
    const body = h('div', null, loadingEl('Loading webhooks and the event catalog…'));
    main.append(body);
    const [webhooks, types] = await Promise.all([listAll('/v1/webhooks', PICKER_PAGES_MAX), catalog()]);
    if (!view.live) return;
    clear(body);
    if (!webhooks.items.length) {
      body.append(emptyEl('There is no webhook to send to yet. ', h('a', { href: '#/webhooks/new' }, 'Create a webhook'), ' first.'));
      return;
    }
    const webhookSelect = selectEl({ name: 'webhook', id: 'test-webhook' },
      webhooks.items.map((w) => [w.id, `${w.url} (${w.id})${w.status === 'active' ? '' : ' — disabled'}`]),
      params.get('webhook') || webhooks.items[0].id);
    const wanted = params.get('type');
    const typeSelect = selectEl({ name: 'event_type', id: 'test-type' },
      types.map((t) => [t.type, t.type]), types.some((t) => t.type === wanted) ? wanted : (types[0] && types[0].type));
    const description = h('p', { class: 'hint', id: 'test-type-description' });
    const payload = h('textarea', { name: 'data', id: 'test-payload', class: 'tall', spellcheck: 'false', 'data-field': 'data' });
    let edited = false;
    const showSample = () => {
      const info = types.find((t) => t.type === typeSelect.value);
      description.textContent = info ? info.description : '';
      payload.value = info ? JSON.stringify(info.sample, null, 2) : '{}';
      edited = false;
    };
    typeSelect.addEventListener('change', showSample);
    payload.addEventListener('input', () => {
      edited = true;
    });
    showSample();
    const errors = h('div');
    const result = h('div', { id: 'test-result', 'aria-live': 'polite' });
    const submit = h('button', { type: 'submit', class: 'primary', id: 'test-send' }, 'Send test event');
    const form = h('form', { class: 'panel', id: 'test-form', novalidate: true },
      h('div', { class: 'fields' }, field('Webhook', webhookSelect), field('Event type', typeSelect)),
      description,
      field('Payload (the event\'s data)', payload, 'The catalog\'s sample. Edit it to send your own data.'),
      errors, submit);
    body.append(form, result);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      clear(errors);
      const request = { event_type: typeSelect.value };
      if (edited) {
        try {
          request.data = JSON.parse(payload.value);
        } catch (error) {
          errors.append(errorBox(`The payload is not valid JSON: ${error.message}`));
          payload.setAttribute('aria-invalid', 'true');
          payload.focus();
          return;
        }
      }
      payload.removeAttribute('aria-invalid');
      submit.disabled = true;
      try {
        const sent = await api('POST', `/v1/webhooks/${encodeURIComponent(webhookSelect.value)}/test`, request);
        if (!view.live) return;
        clear(result).append(h('h2', null, 'Delivery'),
          h('p', null, `Queued delivery `, h('span', { class: 'mono', id: 'test-delivery-id' }, sent.delivery_id),
            ` of event `, h('span', { class: 'mono' }, sent.event_id), '.'));
        const box = h('div', { class: 'panel' });
        result.append(box);
        result.scrollIntoView({ block: 'nearest' });
        submit.disabled = false;
        await followDelivery(view, box, sent.delivery_id);
      } catch (error) {
        if (!view.live) return;
        errors.append(errorBox(error));
        markField(form, error);
      } finally {
        submit.disabled = false;
      }
    });
  }

  // ------------------------------------------------------------------ delivery log

  async function deliveriesPage(view, main, _match, params) {
    main.append(heading('Deliveries'));
    const filters = {
      status: params.get('status') || '',
      type: params.get('type') || '',
      event: params.get('event') || '',
      webhook: params.get('webhook') || '',
      from: params.get('from') || '',
      to: params.get('to') || '',
      limit: PAGE_SIZES.includes(Number(params.get('limit'))) ? Number(params.get('limit')) : 50,
    };
    const [webhooks, types] = await Promise.all([
      listAll('/v1/webhooks', PICKER_PAGES_MAX).catch(() => ({ items: [], more: false })),
      catalog().catch(() => []),
    ]);
    if (!view.live) return;
    const urls = new Map(webhooks.items.map((w) => [w.id, w.url]));
    const webhookOptions = [['', 'Any webhook'], ...webhooks.items.map((w) => [w.id, `${w.url} (${w.id})`])];
    if (filters.webhook && !urls.has(filters.webhook)) webhookOptions.push([filters.webhook, filters.webhook]);
    const listId = uid('types');
    const inputs = {
      status: selectEl({ name: 'status', id: 'filter-status' },
        [['', 'Any status'], ['success', 'Success'], ['failed', 'Failed'], ['pending', 'Pending']], filters.status),
      type: h('input', { name: 'event_type', id: 'filter-type', type: 'text', list: listId, value: filters.type, spellcheck: 'false', 'data-field': 'event_type' }),
      event: h('input', { name: 'event_id', id: 'filter-event', type: 'text', value: filters.event, spellcheck: 'false', placeholder: 'evt_… or your own id', 'data-field': 'event_id' }),
      webhook: selectEl({ name: 'webhook_id', id: 'filter-webhook', 'data-field': 'webhook_id' }, webhookOptions, filters.webhook),
      from: h('input', { name: 'since', id: 'filter-from', type: 'datetime-local', value: filters.from, 'data-field': 'since' }),
      to: h('input', { name: 'until', id: 'filter-to', type: 'datetime-local', value: filters.to, 'data-field': 'until' }),
      limit: selectEl({ name: 'limit', id: 'filter-limit' }, PAGE_SIZES.map((n) => [String(n), `${n} a page`]), String(filters.limit)),
    };
    const datalist = h('datalist', { id: listId }, types.map((t) => h('option', { value: t.type })));
    const filterForm = h('form', { id: 'delivery-filters', role: 'search', 'aria-label': 'Filter deliveries' },
      h('div', { class: 'fields' },
        field('Status', inputs.status), field('Event type', inputs.type), field('Event id', inputs.event),
        field('Webhook', inputs.webhook),
        field('Created from', inputs.from), field('Created until', inputs.to), field('Page size', inputs.limit)),
      datalist,
      h('div', { class: 'actions' },
        h('button', { type: 'submit', class: 'primary' }, 'Apply filters'),
        h('a', { class: 'button', href: '#/deliveries' }, 'Clear')));
    filterForm.addEventListener('submit', (event) => {
      event.preventDefault();
      go('/deliveries' + query({
        status: inputs.status.value, type: inputs.type.value.trim(), event: inputs.event.value.trim(),
        webhook: inputs.webhook.value,
        from: inputs.from.value, to: inputs.to.value, limit: inputs.limit.value,
      }));
    });
    const results = h('div', { id: 'delivery-results' });
    // Open on wide screens, or when a filter is set; a phone sees the results first.
    const filtered = Boolean(filters.status || filters.type || filters.event || filters.webhook || filters.from || filters.to);
    const filterPanel = h('details', {
      class: 'panel', id: 'filters',
      open: filtered || window.matchMedia('(min-width: 701px)').matches,
    }, h('summary', null, filtered ? 'Filters (active)' : 'Filters'), filterForm);
    main.append(filterPanel, results, recoverSection(webhooks.items, filters.webhook));

    const cursors = [null];
    async function show() {
      clear(results).append(loadingEl('Loading deliveries…'));
      let page;
      try {
        page = await api('GET', '/v1/deliveries' + query({
          status: filters.status,
          event_type: filters.type,
          event_id: filters.event,
          webhook_id: filters.webhook,
          since: localToIso(filters.from),
          until: localToIso(filters.to),
          limit: filters.limit,
          cursor: cursors[cursors.length - 1],
        }));
      } catch (error) {
        if (!view.live) return;
        clear(results).append(errorBox(error, 'Change the filters and apply them again.'));
        markField(filterForm, error);
        return;
      }
      if (!view.live) return;
      clear(results);
      const items = page.data || [];
      if (!items.length) {
        results.append(emptyEl(page.next_cursor
          ? 'No matching delivery in this stretch of the log (each page scans a bounded part of it). Use Next page to scan on.'
          : cursors.length > 1
            ? 'No more deliveries match these filters.'
            : h('span', null, 'No deliveries match these filters. Widen them, or ',
              h('a', { href: '#/test' }, 'send a test event'), ' to create one.')));
      } else {
        const rows = items.map((d) => h('tr', { 'data-id': d.id, 'data-status': d.status },
          cell('Created', timeEl(d.created_at)),
          cell('Event', h('div', { class: 'mono' }, d.event_type), h('div', { class: 'small muted mono' }, d.event_id)),
          cell('Webhook', h('div', { class: 'break small' }, urls.get(d.webhook_id) || d.webhook_id)),
          cell('Status', badge(d.status)),
          cell('Attempts', String(d.attempts)),
          cell('Response', d.response_code ? `HTTP ${d.response_code}` : '—'),
          cell('Last error', errorClass(d.last_error)),
          cell('Next retry', timeEl(d.next_retry_at)),
          cell('Details', h('a', { href: '#/deliveries/' + encodeURIComponent(d.id), 'aria-label': `Details of delivery ${d.id}` }, 'Details'))));
        results.append(tableEl(['Created', 'Event', 'Webhook', 'Status', 'Attempts', 'Response', 'Last error', 'Next retry', ''],
          rows, { id: 'deliveries-table' }));
      }
      const pager = h('div', { class: 'pager' }, h('span', { class: 'muted small' }, `Page ${cursors.length} · oldest first`));
      if (cursors.length > 1) {
        pager.append(h('button', { type: 'button', onclick: () => { cursors.pop(); show(); } }, 'Previous page'));
      }
      if (page.next_cursor) {
        pager.append(h('button', { type: 'button', id: 'next-page', onclick: () => { cursors.push(page.next_cursor); show(); } }, 'Next page'));
      }
      results.append(pager);
    }
    await show();
  }

  function recoverSection(webhooks, selected) {
    const hourAgo = dateToLocal(new Date(Date.now() - 3600 * 1000));
    const webhook = selectEl({ name: 'webhook', id: 'recover-webhook', 'data-field': 'webhook' },
      webhooks.map((w) => [w.id, `${w.url} (${w.id})`]), selected || (webhooks[0] && webhooks[0].id));
    const since = h('input', { name: 'since', id: 'recover-since', type: 'datetime-local', value: hourAgo, required: true, 'data-field': 'since' });
    const out = h('div', { 'aria-live': 'polite' });
    const submit = h('button', { type: 'submit' }, 'Re-send failed deliveries');
    const form = h('form', { id: 'recover-form', novalidate: true },
      h('p', { class: 'hint' }, 'Re-queues every failed or exhausted delivery of one webhook whose event was accepted since the given time ' +
        '(POST /v1/webhooks/{id}/recover) — for after a receiver\'s outage is fixed.'),
      h('div', { class: 'fields' }, field('Webhook', webhook), field('Since', since)), out, submit);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      clear(out);
      if (!webhook.value) {
        out.append(errorBox('There is no webhook to recover.'));
        return;
      }
      submit.disabled = true;
      try {
        const iso = localToIso(since.value);
        if (!iso) throw new ApiError(0, 'invalid', 'Choose the time to recover from.', 'since');
        const answer = await api('POST', `/v1/webhooks/${encodeURIComponent(webhook.value)}/recover`, { since: iso });
        out.append(h('p', { class: 'success-box', role: 'status' },
          `Re-queued ${answer.requeued} ${answer.requeued === 1 ? 'delivery' : 'deliveries'}.`));
      } catch (error) {
        out.append(errorBox(error));
        markField(form, error);
      } finally {
        submit.disabled = false;
      }
    });
    return h('details', { class: 'panel', id: 'recover' }, h('summary', null, 'Recover failed deliveries'), form);
  }

  async function deliveryPage(view, main, match) {
    const id = match[1];
    main.append(heading(`Delivery ${id}`));
    const retry = h('button', { type: 'button', id: 'retry', class: 'primary' }, 'Retry now');
    const refresh = h('button', { type: 'button', id: 'refresh' }, 'Refresh');
    const flash = h('div', { id: 'flash' });
    const body = h('div', { id: 'delivery-detail' }, loadingEl('Loading the delivery…'));
    main.append(h('div', { class: 'toolbar' },
      h('a', { class: 'button', href: '#/deliveries' }, '← Delivery log'), h('span', { class: 'spacer' }), refresh, retry), flash, body);

    let polling = false;
    async function load() {
      let d;
      try {
        d = await api('GET', `/v1/deliveries/${encodeURIComponent(id)}`);
      } catch (error) {
        if (!view.live) return null;
        clear(body).append(errorBox(error, error.status === 404
          ? 'This tenant has no such delivery: it may belong to another tenant, or have left the bounded log.'
          : 'Use Refresh to try again.'));
        retry.disabled = true;
        return null;
      }
      if (!view.live) return null;
      render(d);
      return d;
    }

    function render(d) {
      retry.disabled = d.status === 'success';
      const history = d.attempt_history || [];
      const attempts = history.length
        ? tableEl(['#', 'Started', 'Finished', 'Response', 'Time', 'Error class'], history.map((a) => h('tr', null,
          cell('#', String(a.attempt)),
          cell('Started', timeEl(a.started_at)),
          cell('Finished', timeEl(a.finished_at)),
          cell('Response', a.response_code ? `HTTP ${a.response_code}` : '—'),
          cell('Time', fmtMs(a.response_time_ms)),
          cell('Error class', errorClass(a.error)))), { id: 'attempts-table' })
        : emptyEl('No attempt yet: the first one starts as soon as the endpoint can take it.');
      const bodyText = d.response_body;
      const responseHeaders = Object.entries(d.response_headers || {});
      clear(body).append(
        h('section', { class: 'panel', 'aria-labelledby': 'd-facts' },
          h('h2', { id: 'd-facts', class: 'visually-hidden' }, 'Summary'),
          h('dl', { class: 'facts' },
            h('dt', null, 'Status'), h('dd', { id: 'delivery-status', 'data-status': d.status }, badge(d.status)),
            h('dt', null, 'Event'), h('dd', null, h('span', { class: 'mono' }, d.event_type), ' · ', h('span', { class: 'mono' }, d.event_id)),
            h('dt', null, 'Webhook'), h('dd', null, h('a', { href: '#/deliveries' + query({ webhook: d.webhook_id }) }, d.webhook_id)),
            h('dt', null, 'Attempts'), h('dd', { id: 'delivery-attempts' }, String(d.attempts)),
            h('dt', null, 'Response code'), h('dd', { id: 'delivery-code' }, d.response_code ? String(d.response_code) : '—'),
            h('dt', null, 'Response time'), h('dd', null, fmtMs(d.response_time_ms)),
            h('dt', null, 'Error class'), h('dd', { id: 'delivery-error' }, errorClass(d.last_error)),
            h('dt', null, 'Next retry'), h('dd', { id: 'delivery-next-retry' }, timeEl(d.next_retry_at)),
            h('dt', null, 'Created'), h('dd', null, timeEl(d.created_at)),
            h('dt', null, 'Delivered'), h('dd', null, timeEl(d.delivered_at)))),
        h('h2', null, 'Attempts'), attempts,
        h('h2', null, 'Response headers'),
        h('p', { class: 'hint' }, 'The latest response\'s headers (the first 16, at most 2 KiB), shown as plain text.'),
        responseHeaders.length
          ? h('dl', { class: 'facts mono', id: 'response-headers' },
            responseHeaders.map(([name, value]) => [h('dt', null, name), h('dd', null, value)]))
          : h('p', { class: 'muted', id: 'response-headers-empty' }, 'No headers were received.'),
        h('h2', null, 'Response body'),
        h('p', { class: 'hint' }, 'The latest response\'s body (its first 4 KiB), shown as plain text.'),
        bodyText
          ? h('pre', { class: 'body', id: 'response-body', tabindex: '0', 'aria-label': 'Response body' }, bodyText)
          : h('p', { class: 'muted', id: 'response-body-empty' }, 'No body was received.'));
      if (d.status === 'pending' && !polling) pollWhilePending();
    }

    async function pollWhilePending() {
      polling = true;
      const deadline = Date.now() + FOLLOW_MS_MAX;
      while (view.live && Date.now() < deadline) {
        if (!(await view.sleep(POLL_MS))) break;
        const d = await load();
        if (!d || d.status !== 'pending') break;
      }
      polling = false;
    }

    refresh.addEventListener('click', () => {
      clear(flash);
      load();
    });
    retry.addEventListener('click', async () => {
      clear(flash);
      retry.disabled = true;
      try {
        await api('POST', `/v1/deliveries/${encodeURIComponent(id)}/retry`);
        flash.append(h('p', { class: 'success-box', role: 'status', id: 'retry-queued' }, 'Retry queued: the next attempt starts now. This page follows it.'));
        announce('Retry queued.');
        const d = await load();
        if (d && d.status === 'pending' && !polling) pollWhilePending();
      } catch (error) {
        if (!view.live) return;
        flash.append(errorBox(error));
        retry.disabled = false;
      }
    });
    await load();
  }

  // ------------------------------------------------------------------ live tail

  async function tailPage(view, main) {
    main.append(heading('Live tail'));
    const started = new Date(Date.now() - 60 * 1000);
    const status = h('p', { class: 'hint', id: 'tail-status', role: 'status' });
    const pause = h('button', { type: 'button', id: 'tail-pause', 'aria-pressed': 'false' }, 'Pause');
    const errors = h('div');
    const list = h('tbody', { id: 'tail-rows' });
    const table = h('div', { class: 'table-wrap' },
      h('table', { class: 'cards', id: 'tail-table', 'aria-describedby': 'tail-status' },
        h('thead', null, h('tr', null, ['Created', 'Event', 'Webhook', 'Status', 'Attempts', 'Response', 'Last error', ''].map((c) => h('th', { scope: 'col' }, c)))),
        list));
    const empty = emptyEl('Nothing yet. New deliveries show up here within a few seconds: publish an event (POST /v1/events) or ',
      h('a', { href: '#/test' }, 'send a test event'), '.');
    main.append(h('p', { class: 'hint' },
      `This tenant's deliveries as they are created and as their outcome changes, from ${fmtTime(started.toISOString())} on, ` +
      'read from the API every 2 seconds (newest first). Events that match no webhook create no delivery and do not show here.'),
    h('div', { class: 'toolbar' }, status, h('span', { class: 'spacer' }), pause), errors, empty, table);
    table.hidden = true;

    let paused = false;
    pause.addEventListener('click', () => {
      paused = !paused;
      pause.textContent = paused ? 'Resume' : 'Pause';
      pause.setAttribute('aria-pressed', String(paused));
      status.textContent = paused ? 'Paused.' : 'Following…';
    });
    const rows = new Map();
    const since = started.toISOString();
    let cursor = null;
    let urls = new Map();
    try {
      urls = new Map((await listAll('/v1/webhooks', PICKER_PAGES_MAX)).items.map((w) => [w.id, w.url]));
    } catch (_) {
      // Webhook ids are shown instead of URLs.
    }

    function rowFor(d) {
      return h('tr', { 'data-id': d.id, 'data-status': d.status },
        cell('Created', timeEl(d.created_at)),
        cell('Event', h('div', { class: 'mono' }, d.event_type), h('div', { class: 'small muted mono' }, d.event_id)),
        cell('Webhook', h('div', { class: 'break small' }, urls.get(d.webhook_id) || d.webhook_id)),
        cell('Status', badge(d.status)),
        cell('Attempts', String(d.attempts)),
        cell('Response', d.response_code ? `HTTP ${d.response_code}` : '—'),
        cell('Last error', errorClass(d.last_error)),
        cell('Details', h('a', { href: '#/deliveries/' + encodeURIComponent(d.id), 'aria-label': `Details of delivery ${d.id}` }, 'Details')));
    }

    function upsert(d) {
      const row = rowFor(d);
      const old = rows.get(d.id);
      if (old) {
        old.el.replaceWith(row);
      } else {
        list.prepend(row);
      }
      rows.set(d.id, { el: row, status: d.status });
      while (rows.size > TAIL_ROWS_MAX) {
        const [oldest] = rows.keys();
        rows.get(oldest).el.remove();
        rows.delete(oldest);
      }
    }

    view.every(POLL_MS, async () => {
      if (paused) return;
      try {
        for (let page = 0; page < TAIL_PAGES_PER_POLL_MAX; page += 1) {
          const answer = await api('GET', '/v1/deliveries' + query({ since, limit: 100, cursor }));
          if (!view.live) return;
          for (const d of answer.data || []) {
            upsert(d);
            cursor = d.id;
          }
          if (!answer.next_cursor) break;
          cursor = answer.next_cursor;
        }
        const pending = [...rows.entries()].filter(([, r]) => r.status === 'pending').slice(-TAIL_REFRESH_PER_POLL_MAX);
        for (const [id] of pending) {
          const d = await api('GET', `/v1/deliveries/${encodeURIComponent(id)}`);
          if (!view.live) return;
          upsert(d);
        }
        clear(errors);
        empty.hidden = rows.size > 0;
        table.hidden = rows.size === 0;
        status.textContent = `Following · ${rows.size} deliveries shown · updated ${fmtTime(new Date().toISOString()).slice(11)}`;
      } catch (error) {
        if (!view.live) return;
        clear(errors).append(errorBox(error, 'The tail keeps trying every 2 seconds.'));
      }
    });
  }

  // ------------------------------------------------------------------ catalog

  async function catalogPage(view, main) {
    main.append(heading('Event catalog'),
      h('p', { class: 'hint' }, 'Every event type this server knows, with the sample payload a test send uses (GET /v1/event-types). ' +
        'Webhooks subscribe with exact types or prefixes such as order.*.'));
    const search = h('input', { type: 'search', id: 'catalog-search', name: 'q', spellcheck: 'false' });
    const body = h('div', { id: 'catalog' }, loadingEl('Loading the catalog…'));
    main.append(field('Filter types', search), body);
    const types = await catalog();
    if (!view.live) return;
    clear(body);
    if (!types.length) {
      body.append(emptyEl('The catalog is empty.'));
      return;
    }
    const items = types.map((t) => ({
      type: t.type,
      el: h('article', { class: 'panel catalog-item', 'data-type': t.type },
        h('h2', null, t.type),
        h('p', null, t.description),
        h('details', null, h('summary', null, 'Sample payload'), h('pre', { class: 'sample' }, JSON.stringify(t.sample, null, 2))),
        h('p', null, h('a', { class: 'button small', href: '#/test' + query({ type: t.type }) }, `Send ${t.type} as a test`))),
    }));
    const none = emptyEl('No type matches the filter.');
    none.hidden = true;
    body.append(...items.map((i) => i.el), none);
    search.addEventListener('input', () => {
      const q = search.value.trim().toLowerCase();
      let shown = 0;
      for (const item of items) {
        item.el.hidden = Boolean(q) && !item.type.toLowerCase().includes(q);
        if (!item.el.hidden) shown += 1;
      }
      none.hidden = shown > 0;
    });
  }

  // ------------------------------------------------------------------ start

  function start() {
    loadSession();
    byId('skip').addEventListener('click', (event) => {
      event.preventDefault();
      const title = byId('page-title') || byId('main');
      title.focus();
    });
    window.addEventListener('hashchange', () => {
      if (location.hash.startsWith('#/') || location.hash === '') route(true);
    });
    route(false);
  }

  start();
}());
