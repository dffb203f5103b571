// contentgate console: a vanilla-JS client of the management API (/admin/api/).
//
// Served under a strict CSP (script-src 'self', style-src 'self', no eval): no inline handlers,
// no style attributes, no innerHTML. Every piece of data (token names, descriptions, models,
// claims) reaches the page through textContent / createElement only.
'use strict';

(() => {
  // ---------------------------------------------------------------------------------------------
  // DOM helpers

  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

  /** createElement with attributes; children are nodes or strings (text nodes, never HTML). */
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    let value;
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = String(v);
      else if (k === 'value') value = v;
      else if (k === 'dataset') Object.assign(e.dataset, v);
      else if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
      else if (v === true) e.setAttribute(k, '');
      else e.setAttribute(k, String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    if (value !== undefined) e.value = String(value);
    return e;
  }

  let uid = 0;
  const nextId = (prefix) => `${prefix}-${++uid}`;

  // ---------------------------------------------------------------------------------------------
  // State

  const S = {
    who: null, // whoami
    etag: null, // latest ETag of the policy source (bare, without quotes)
    pendingJwt: null, // {jti, jwt}: a new token's JWT, shown once on its details screen
    routeGen: 0,
  };

  const canWrite = () => !!S.who && S.who.scope === 'write' && S.who.writable !== false;

  // ---------------------------------------------------------------------------------------------
  // The management API

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  function bareEtag(v) {
    let s = String(v).trim();
    if (s.startsWith('W/')) s = s.slice(2);
    if (s.length >= 2 && s.startsWith('"') && s.endsWith('"')) s = s.slice(1, -1);
    return s;
  }

  /**
   * One call. Non-GET requests carry the CSRF token; writes carry If-Match with the latest ETag
   * (`ifMatch: false` for the calls that write nothing: re-issue, token check).
   */
  let writeChain = Promise.resolve();
  function api(method, path, body, opts = {}) {
    if (method === 'GET') return request(method, path, body, opts);
    // Changes go one after another, each with the ETag the previous one answered.
    const run = writeChain.then(() => request(method, path, body, opts));
    writeChain = run.catch(() => undefined);
    return run;
  }

  async function request(method, path, body, opts) {
    const ifMatch = opts.ifMatch !== undefined ? opts.ifMatch : method !== 'GET';
    if (method !== 'GET' && ifMatch && !S.etag) {
      // A screen that has read nothing with an ETag yet (the token check): learn the current one.
      await request('GET', '/admin/api/stages', undefined, {});
    }
    const headers = { accept: 'application/json' };
    if (method !== 'GET') {
      if (S.who && S.who.csrf) headers['x-csrf-token'] = S.who.csrf;
      if (ifMatch && S.etag) headers['if-match'] = `"${S.etag}"`;
    }
    const init = { method, headers, credentials: 'same-origin', cache: 'no-store', redirect: 'error' };
    if (body !== undefined) {
      headers['content-type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, 'NETWORK', `The console cannot reach the gateway (${e.message}).`);
    }
    const text = await resp.text();
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch (_) {
        data = null;
      }
    }
    if (!resp.ok) {
      const err = data && data.error ? data.error : {};
      const message = err.message || `${method} ${path} failed: HTTP ${resp.status}`;
      throw new ApiError(resp.status, err.code || `HTTP_${resp.status}`, message);
    }
    if (data && typeof data.etag === 'string' && data.etag) S.etag = bareEtag(data.etag);
    else if (resp.headers.get('etag')) S.etag = bareEtag(resp.headers.get('etag'));
    return data || {};
  }

  const enc = encodeURIComponent;
  const tokenPath = (jti) => `/admin/api/tokens/${enc(jti)}`;

  async function loadMeta() {
    return api('GET', '/admin/api/stages');
  }

  // ---------------------------------------------------------------------------------------------
  // Banners, toast, errors

  function showError(message) {
    $('#error-text').textContent = message;
    $('#error').hidden = false;
  }

  function hideError() {
    $('#error').hidden = true;
    $('#error-text').textContent = '';
  }

  let toastTimer = null;
  function toast(message) {
    const t = $('#toast');
    t.textContent = message;
    t.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => {
      t.hidden = true;
    }, 4000);
  }

  /** Reports a failed call; on 412 reloads the screen (someone else changed the policy). */
  function handleError(e, where) {
    if (e instanceof ApiError) {
      if (e.status === 412) {
        showError('Someone else changed the policy; reloaded');
        render({ keepError: true });
        return;
      }
      if (e.status === 401) {
        showError(`${e.message} Your session may have ended: sign in again at /console.`);
        return;
      }
      showError(e.message);
      if (where) where.textContent = e.message;
      return;
    }
    console.error(e);
    showError(String((e && e.message) || e));
  }

  /** Runs an async action; errors go to the banner (and to `where`, a form's error line). */
  async function attempt(fn, where) {
    try {
      return await fn();
    } catch (e) {
      handleError(e, where);
      return undefined;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Clipboard

  function withTimeout(promise, ms) {
    return Promise.race([
      promise,
      new Promise((_, reject) => setTimeout(() => reject(new Error('timeout')), ms)),
    ]);
  }

  function copyFallback(text) {
    const ta = el('textarea', { class: 'offscreen', readonly: true, 'aria-hidden': 'true', tabindex: '-1' });
    ta.value = text;
    document.body.append(ta);
    const active = document.activeElement;
    ta.select();
    let ok = false;
    try {
      ok = document.execCommand('copy');
    } catch (_) {
      ok = false;
    }
    ta.remove();
    if (active && active.focus) active.focus();
    return ok;
  }

  async function copyText(text) {
    let ok = false;
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await withTimeout(navigator.clipboard.writeText(text), 1500);
        ok = true;
      } catch (_) {
        ok = false;
      }
    }
    if (!ok) ok = copyFallback(text);
    toast(ok ? 'Copied to clipboard' : 'Copy failed: select the text and press Ctrl+C');
    return ok;
  }

  // ---------------------------------------------------------------------------------------------
  // Confirmation dialog (in-page, nothing is sent before OK)

  function confirmDialog({ title, message, ok, danger = true }) {
    const d = $('#confirm');
    const okBtn = $('#confirm-ok');
    const cancelBtn = $('#confirm-cancel');
    $('#confirm-title').textContent = title;
    $('#confirm-message').textContent = message;
    okBtn.textContent = ok;
    okBtn.className = danger ? 'btn btn-danger' : 'btn btn-primary';
    return new Promise((resolve) => {
      const done = (answer) => {
        okBtn.removeEventListener('click', onOk);
        cancelBtn.removeEventListener('click', onCancel);
        d.removeEventListener('cancel', onEsc);
        if (d.open) d.close();
        resolve(answer);
      };
      const onOk = () => done(true);
      const onCancel = () => done(false);
      const onEsc = (ev) => {
        ev.preventDefault();
        done(false);
      };
      okBtn.addEventListener('click', onOk);
      cancelBtn.addEventListener('click', onCancel);
      d.addEventListener('cancel', onEsc);
      d.showModal();
      cancelBtn.focus();
    });
  }

  /** A modal form dialog appended to `host` (removed with the screen). */
  function formDialog(host, { id, title, wide }) {
    const titleId = nextId('dlg-title');
    const d = el('dialog', { id, class: wide ? 'dialog dialog-wide' : 'dialog', 'aria-labelledby': titleId });
    d.append(el('h2', { class: 'dialog-title', id: titleId, text: title }));
    d.addEventListener('close', () => d.remove());
    host.append(d);
    return d;
  }

  // ---------------------------------------------------------------------------------------------
  // Formatting

  const ACTION_LABELS = {
    read: 'Read',
    read_versions: 'Read versions',
    create: 'Create',
    update: 'Update',
    delete: 'Delete',
    publish: 'Publish',
    unpublish: 'Unpublish',
  };
  const actionLabel = (a) => ACTION_LABELS[a] || a;
  const list = (v, all) => (v === null || v === undefined ? all : v.length ? v.join(', ') : 'none');
  const isPublish = (p) => p.action === 'publish' || (p.from_stages != null || p.to_stages != null);

  /** Actions whose grants are not limited by stage (Grant.stages unused). */
  const STAGELESS = new Set(['create', 'update', 'read_versions']);

  function stagesText(p) {
    if (isPublish(p)) {
      return `from ${list(p.from_stages, 'All stages')} → to ${list(p.to_stages, 'All stages')}`;
    }
    return list(p.stages, 'All stages');
  }

  function permSummary(p) {
    return `${actionLabel(p.action)} · ${list(p.models, 'All models')} · ${list(p.locales, 'All locales')} · ${stagesText(p)}`;
  }

  function when(ts) {
    if (!ts) return el('span', { class: 'muted', text: '—' });
    const d = new Date(ts);
    const text = Number.isNaN(d.getTime())
      ? ts
      : `${d.toISOString().slice(0, 10)} ${d.toISOString().slice(11, 16)} UTC`;
    return el('time', { datetime: ts, title: ts, text });
  }

  function statusBadge(revoked) {
    return revoked
      ? el('span', { class: 'badge badge-revoked', text: 'Revoked' })
      : el('span', { class: 'badge badge-active', text: 'Active' });
  }

  function jtiCell(jti) {
    return el(
      'span',
      { class: 'jti' },
      el('code', { text: jti }),
      el('button', {
        type: 'button',
        class: 'btn btn-small copy-jti',
        'aria-label': `Copy jti ${jti}`,
        title: 'Copy jti',
        text: 'Copy',
        onclick: () => copyText(jti),
      }),
    );
  }

  /** The box that shows a JWT once (id new-jwt holds exactly the JWT text). */
  function jwtBox(jwt, intro) {
    return el(
      'section',
      { class: 'jwt-box', id: 'new-jwt-box', role: 'status', 'aria-labelledby': 'new-jwt-title' },
      el('strong', { id: 'new-jwt-title', text: 'Copy this JWT now: it will not be shown again.' }),
      el('p', { text: intro }),
      el('code', { class: 'jwt-value', id: 'new-jwt', text: jwt }),
      el(
        'div',
        { class: 'row' },
        el('button', { type: 'button', class: 'btn btn-primary', id: 'copy-new-jwt', text: 'Copy JWT', onclick: () => copyText(jwt) }),
        el('span', { class: 'muted small', text: 'Clients send it as Authorization: Bearer <JWT>. The gateway keeps only its jti.' }),
      ),
    );
  }

  /** Checkbox group with an "All …" option: value() is null for all, else the checked values. */
  function checkGroup({ id, legend, values, allLabel, selected, disabled }) {
    const fs = el('fieldset', { id, class: 'check-group' }, el('legend', { text: legend }));
    const wrap = el('div', { class: 'checks' });
    fs.append(wrap);
    const name = nextId(id);
    let all = null;
    if (allLabel) {
      all = el('input', { type: 'checkbox', value: '*', class: 'all', name, checked: selected === null });
      wrap.append(el('label', { class: 'check check-all' }, all, allLabel));
    }
    const boxes = values.map((v) => {
      const box = el('input', {
        type: 'checkbox',
        name,
        value: v,
        checked: Array.isArray(selected) && selected.includes(v),
      });
      wrap.append(el('label', { class: 'check' }, box, v));
      return box;
    });
    const sync = () => {
      if (!all) return;
      for (const b of boxes) b.disabled = disabled || all.checked;
    };
    if (all) all.addEventListener('change', sync);
    sync();
    if (disabled) {
      fs.disabled = true;
    }
    return {
      node: fs,
      value() {
        if (all && all.checked) return null;
        return boxes.filter((b) => b.checked).map((b) => b.value);
      },
    };
  }

  // ---------------------------------------------------------------------------------------------
  // Content permissions: one component for the public policy and for every token

  const SORTS = [
    ['', 'Policy order'],
    ['model', 'Model (A–Z)'],
    ['model:desc', 'Model (Z–A)'],
    ['action', 'Action (Read → Unpublish)'],
    ['action:desc', 'Action (Unpublish → Read)'],
  ];
  const FILTERS = [
    ['action', 'Action', (m) => m.actions || Object.keys(ACTION_LABELS)],
    ['model', 'Model', (m) => m.models || []],
    ['locale', 'Locale', (m) => m.locales || []],
    ['stage', 'Stage', (m) => m.stages || []],
  ];

  function permissionsPanel(base, meta, { who }) {
    const state = { sort: '', filters: { action: [], model: [], locale: [], stage: [] } };
    const section = el('section', { class: 'card', 'aria-labelledby': 'perm-title' });
    const head = el('div', { class: 'card-head' }, el('h2', { id: 'perm-title', text: 'Content permissions' }));
    if (canWrite()) {
      head.append(
        el('button', { type: 'button', class: 'btn btn-primary', id: 'add-permission', text: 'Add permission', onclick: () => openForm(null) }),
      );
    }
    section.append(head);
    section.append(
      el('p', {
        class: 'lead',
        text: `What ${who} may do in the content API. A request is allowed only when every model, stage and locale it touches is covered by a permission.`,
      }),
    );

    // Sort and filters
    const sort = el(
      'select',
      { id: 'sort', 'aria-describedby': 'perm-count' },
      SORTS.map(([v, label]) => el('option', { value: v, text: label })),
    );
    sort.addEventListener('change', () => {
      state.sort = sort.value;
      load();
    });
    const clear = el('button', { type: 'button', class: 'btn btn-small', id: 'filter-clear', text: 'Clear filters' });
    const summary = el('span', { class: 'filter-summary', id: 'perm-count', 'aria-live': 'polite' });
    section.append(
      el(
        'div',
        { class: 'toolbar' },
        el('div', { class: 'field' }, el('label', { for: 'sort', text: 'Sort by' }), sort),
        clear,
        summary,
      ),
    );
    const filters = el('div', { class: 'filters', role: 'group', 'aria-label': 'Filters (combined: a row must match all)' });
    const filterBoxes = {};
    for (const [key, legend, values] of FILTERS) {
      const fs = el('fieldset', { id: `filter-${key}`, class: 'check-group' }, el('legend', { text: `${legend}` }));
      const wrap = el('div', { class: 'checks' });
      fs.append(wrap);
      filterBoxes[key] = values(meta).map((v) => {
        const box = el('input', { type: 'checkbox', value: v, name: `filter-${key}` });
        box.addEventListener('change', () => {
          state.filters[key] = filterBoxes[key].filter((b) => b.checked).map((b) => b.value);
          load();
        });
        wrap.append(el('label', { class: 'check' }, box, key === 'action' ? actionLabel(v) : v));
        return box;
      });
      filters.append(fs);
    }
    clear.addEventListener('click', () => {
      for (const key of Object.keys(filterBoxes)) {
        for (const b of filterBoxes[key]) b.checked = false;
        state.filters[key] = [];
      }
      load();
    });
    section.append(filters);

    const tbody = el('tbody');
    const table = el(
      'table',
      { id: 'permissions', class: 'perm-table' },
      el('caption', { class: 'visually-hidden', text: `Content permissions of ${who}` }),
      el(
        'thead',
        null,
        el(
          'tr',
          null,
          el('th', { scope: 'col', text: 'Action' }),
          el('th', { scope: 'col', text: 'Models' }),
          el('th', { scope: 'col', text: 'Locales' }),
          el('th', { scope: 'col', text: 'Stages' }),
          el('th', { scope: 'col', class: 'c-actions' }, el('span', { class: 'visually-hidden', text: 'Row actions' })),
        ),
      ),
      tbody,
    );
    section.append(el('div', { class: 'table-wrap' }, table));

    function query() {
      // Built by hand: the values are comma-separated, each encoded, the commas literal.
      const parts = [];
      if (state.sort) parts.push(`sort=${enc(state.sort)}`);
      for (const [key] of FILTERS) {
        const v = state.filters[key];
        if (v.length) parts.push(`${key}=${v.map(enc).join(',')}`);
      }
      return parts.length ? `?${parts.join('&')}` : '';
    }

    function row(p) {
      const tr = el(
        'tr',
        { class: 'perm-row', dataset: { id: String(p.id), action: p.action } },
        el('td', { class: 'c-action', text: actionLabel(p.action) }),
        el('td', { class: 'c-models', text: list(p.models, 'All models') }),
        el('td', { class: 'c-locales', text: list(p.locales, 'All locales') }),
        el('td', { class: 'c-stages', text: stagesText(p) }),
      );
      const actions = el('td', { class: 'c-actions' });
      if (canWrite()) {
        actions.append(
          el('button', {
            type: 'button',
            class: 'btn btn-small perm-edit',
            'aria-label': `Edit permission: ${permSummary(p)}`,
            text: 'Edit',
            onclick: () => openForm(p),
          }),
          el('button', {
            type: 'button',
            class: 'btn btn-small btn-danger-outline perm-delete',
            'aria-label': `Delete permission: ${permSummary(p)}`,
            text: 'Delete',
            onclick: () => remove(p),
          }),
        );
      }
      tr.append(actions);
      return tr;
    }

    let loadGen = 0;
    async function load() {
      const gen = ++loadGen;
      const data = await attempt(() => api('GET', base + query()));
      if (!data || gen !== loadGen) return;
      const perms = data.permissions || [];
      const rows = perms.map(row);
      if (!rows.length) {
        const filtered = Object.values(state.filters).some((v) => v.length);
        rows.push(
          el(
            'tr',
            { class: 'empty-row' },
            el('td', { colspan: '5', class: 'empty', text: filtered ? 'No permission matches these filters.' : 'No content permissions yet.' }),
          ),
        );
      }
      tbody.replaceChildren(...rows);
      const active = Object.entries(state.filters).filter(([, v]) => v.length).length;
      summary.textContent = `${perms.length} permission${perms.length === 1 ? '' : 's'}${active ? ` (${active} filter${active === 1 ? '' : 's'} applied)` : ''}`;
    }

    async function remove(p) {
      const yes = await confirmDialog({
        title: 'Delete this permission?',
        message: `${permSummary(p)}. Deleting is permanent: the permission is removed from the policy and ${who} lose it with the next request.`,
        ok: 'Delete permission',
      });
      if (!yes) return;
      const done = await attempt(() => api('DELETE', `${base}/${enc(p.id)}`));
      if (done) {
        hideError();
        toast('Permission deleted');
        load();
      }
    }

    function openForm(p) {
      const editing = !!p;
      const d = formDialog(section, { id: 'perm-dialog', title: editing ? 'Edit permission' : 'Add permission', wide: true });
      const form = el('form', { class: 'form-grid', novalidate: true });
      d.append(form);
      form.append(
        el('p', {
          class: 'help',
          id: 'perm-help',
          text:
            "Hygraph's permissions depend on each other: Create, Update and Delete need Read on DRAFT; " +
            'Publish needs Read on the target stage (and on the stage it publishes from); Unpublish needs Read on the stage it removes from; ' +
            'Read versions needs Read. A permission without its Read is refused by the CMS at request time.',
        }),
      );
      const action = el(
        'select',
        { id: 'perm-action', disabled: editing },
        (meta.actions || Object.keys(ACTION_LABELS)).map((a) => el('option', { value: a, text: actionLabel(a), selected: editing && p.action === a })),
      );
      form.append(el('div', { class: 'field' }, el('label', { for: 'perm-action', text: 'Action' }), action));
      const models = checkGroup({
        id: 'perm-models',
        legend: 'Models',
        values: meta.models || [],
        allLabel: 'All models',
        selected: editing ? p.models : [],
        disabled: editing,
      });
      const locales = checkGroup({
        id: 'perm-locales',
        legend: 'Locales',
        values: meta.locales || [],
        allLabel: 'All locales',
        selected: editing ? p.locales : null,
      });
      const stages = checkGroup({
        id: 'perm-stages',
        legend: 'Stages',
        values: meta.stages || [],
        allLabel: 'All stages',
        selected: editing ? p.stages : null,
      });
      const from = checkGroup({
        id: 'perm-from',
        legend: 'From stages (published from)',
        values: meta.stages || [],
        allLabel: 'All stages',
        selected: editing ? p.from_stages : null,
      });
      const to = checkGroup({
        id: 'perm-to',
        legend: 'To stages (published to)',
        values: meta.stages || [],
        allLabel: 'All stages',
        selected: editing ? p.to_stages : null,
      });
      const stagelessNote = el('p', { class: 'muted small', text: 'Create, Update and Read versions are not limited by stage.' });
      const publishBox = el('div', { class: 'two-col' }, from.node, to.node);
      form.append(models.node, locales.node, stages.node, stagelessNote, publishBox);
      const syncAction = () => {
        const a = action.value;
        stages.node.hidden = a === 'publish' || STAGELESS.has(a);
        stagelessNote.hidden = !STAGELESS.has(a);
        publishBox.hidden = a !== 'publish';
      };
      action.addEventListener('change', syncAction);
      syncAction();
      const error = el('p', { class: 'form-error', role: 'alert', id: 'perm-error' });
      form.append(error);
      const cancel = el('button', { type: 'button', class: 'btn', id: 'perm-cancel', text: 'Cancel', onclick: () => d.close() });
      form.append(
        el(
          'div',
          { class: 'form-actions' },
          cancel,
          el('button', { type: 'submit', class: 'btn btn-primary', id: 'perm-save', text: editing ? 'Save changes' : 'Add permission' }),
        ),
      );
      form.addEventListener('submit', async (ev) => {
        ev.preventDefault();
        error.textContent = '';
        const a = action.value;
        const need = [
          [models, 'Choose at least one model, or All models.'],
          [locales, 'Choose at least one locale, or All locales.'],
        ];
        if (a === 'publish') {
          need.push([from, 'Choose at least one stage to publish from, or All stages.']);
          need.push([to, 'Choose at least one stage to publish to, or All stages.']);
        } else if (!STAGELESS.has(a)) {
          need.push([stages, 'Choose at least one stage, or All stages.']);
        }
        for (const [group, message] of need) {
          const v = group.value();
          if (v !== null && v.length === 0) {
            error.textContent = message;
            return;
          }
        }
        const body = { locales: locales.value() };
        if (a === 'publish') {
          body.from_stages = from.value();
          body.to_stages = to.value();
        } else if (!STAGELESS.has(a)) {
          body.stages = stages.value();
        } else {
          body.stages = null;
        }
        let done;
        if (editing) {
          done = await attempt(() => api('PATCH', `${base}/${enc(p.id)}`, body), error);
        } else {
          body.action = a;
          body.models = models.value();
          done = await attempt(() => api('POST', base, body), error);
        }
        if (done) {
          hideError();
          d.close();
          toast(editing ? 'Permission saved' : 'Permission added');
          load();
        }
      });
      d.showModal();
      (editing ? locales.node.querySelector('input') : action).focus();
    }

    load();
    return { node: section, reload: load };
  }

  // ---------------------------------------------------------------------------------------------
  // Screens

  function pageHead(title, lead, ...extra) {
    return el(
      'div',
      { class: 'page-head' },
      el('div', null, el('h1', { tabindex: '-1', text: title }), lead ? el('p', { class: 'lead', text: lead }) : null),
      ...extra,
    );
  }

  const KIND_TEXT = {
    content: 'Content API (GraphQL, every request reaches the CMS)',
    cdn: 'Cached content API (read path served from the edge cache)',
    management: 'Management API (schema changes, checked per permission)',
  };

  async function viewEndpoints() {
    const data = await api('GET', '/admin/api/endpoints');
    const rows = (data.endpoints || []).map((e) =>
      el(
        'tr',
        { class: 'endpoint-row', dataset: { path: e.path } },
        el('td', null, el('code', { text: e.path })),
        el('td', null, el('span', { class: 'tag', text: e.kind }), ' ', el('span', { class: 'muted small', text: KIND_TEXT[e.kind] || '' })),
        el(
          'td',
          null,
          el('button', {
            type: 'button',
            class: 'copy-url',
            title: 'Copy URL',
            'aria-label': `Copy ${e.url}`,
            text: e.url,
            onclick: () => copyText(e.url),
          }),
        ),
      ),
    );
    return el(
      'div',
      null,
      pageHead('Endpoints', 'The GraphQL endpoints this gateway serves. Click a URL to copy it.'),
      el(
        'section',
        { class: 'card' },
        el(
          'table',
          { id: 'endpoints' },
          el('thead', null, el('tr', null, el('th', { scope: 'col', text: 'Path' }), el('th', { scope: 'col', text: 'Kind' }), el('th', { scope: 'col', text: 'URL' }))),
          el('tbody', null, rows.length ? rows : el('tr', null, el('td', { colspan: '3', class: 'empty', text: 'No endpoints configured.' }))),
        ),
      ),
    );
  }

  async function viewPublic() {
    const meta = await loadMeta();
    const root = el('div');
    root.append(
      pageHead(
        'Public content API',
        'Requests without an Authorization header: the stage they read by default and what they may do.',
      ),
    );
    const tag = el('span', { class: 'tag tag-big', id: 'default-stage', text: meta.public_default_stage });
    const line = el('div', { class: 'stage-line' }, el('h2', { id: 'stage-title', text: 'Default stage' }), tag);
    const stageCard = el(
      'section',
      { class: 'card', 'aria-labelledby': 'stage-title' },
      line,
      el('p', { class: 'muted small', text: 'The stage a public request reads when it names none (the gcms-stage header the gateway sends to the CMS).' }),
    );
    if (canWrite()) {
      const select = el(
        'select',
        { id: 'stage-select' },
        (meta.stages || []).map((s) => el('option', { value: s, text: s, selected: s === meta.public_default_stage })),
      );
      const form = el(
        'form',
        { class: 'inline-form', id: 'stage-form', hidden: true },
        el('div', { class: 'field' }, el('label', { for: 'stage-select', text: 'New default stage' }), select),
        el('button', { type: 'submit', class: 'btn btn-primary', id: 'save-stage', text: 'Save' }),
        el('button', { type: 'button', class: 'btn', id: 'cancel-stage', text: 'Cancel', onclick: () => close() }),
      );
      const change = el('button', {
        type: 'button',
        class: 'btn',
        id: 'change-stage',
        'aria-expanded': 'false',
        'aria-controls': 'stage-form',
        text: 'Change default stage',
      });
      const close = () => {
        form.hidden = true;
        change.setAttribute('aria-expanded', 'false');
        change.focus();
      };
      change.addEventListener('click', () => {
        const open = form.hidden;
        form.hidden = !open;
        change.setAttribute('aria-expanded', String(open));
        if (open) {
          select.value = tag.textContent;
          select.focus();
        }
      });
      form.addEventListener('submit', async (ev) => {
        ev.preventDefault();
        const done = await attempt(() => api('PUT', '/admin/api/stages/default', { stage: select.value }));
        if (done) {
          hideError();
          tag.textContent = done.public_default_stage || select.value;
          close();
          toast(`Default stage is now ${tag.textContent}`);
        }
      });
      line.append(change);
      stageCard.append(form);
    }
    root.append(stageCard);
    root.append(permissionsPanel('/admin/api/public/permissions', meta, { who: 'public requests' }).node);
    return root;
  }

  // Token context menus: one open at a time, closed by Escape or a click elsewhere.
  let openMenu = null;
  function closeMenu(focusButton) {
    if (!openMenu) return;
    const { menu, button } = openMenu;
    menu.hidden = true;
    button.setAttribute('aria-expanded', 'false');
    if (focusButton) button.focus();
    openMenu = null;
  }
  document.addEventListener('click', (ev) => {
    if (openMenu && !openMenu.wrap.contains(ev.target)) closeMenu(false);
  });
  document.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && openMenu) closeMenu(true);
  });

  function tokenMenu(t, actions) {
    const menuId = nextId('token-menu');
    const button = el('button', {
      type: 'button',
      class: 'btn token-menu',
      'aria-haspopup': 'menu',
      'aria-expanded': 'false',
      'aria-controls': menuId,
      'aria-label': `Actions for ${t.name}`,
      title: 'Actions',
      text: '⋯',
    });
    const menu = el('div', { class: 'menu', role: 'menu', id: menuId, hidden: true });
    for (const [cls, label, fn] of actions) {
      menu.append(
        el('button', {
          type: 'button',
          role: 'menuitem',
          class: cls,
          text: label,
          onclick: () => {
            closeMenu(false);
            fn();
          },
        }),
      );
    }
    const wrap = el('div', { class: 'menu-wrap' }, button, menu);
    button.addEventListener('click', () => {
      const wasOpen = openMenu && openMenu.menu === menu;
      closeMenu(false);
      if (wasOpen) return;
      menu.hidden = false;
      button.setAttribute('aria-expanded', 'true');
      openMenu = { menu, button, wrap };
      const first = menu.querySelector('button');
      if (first) first.focus();
    });
    menu.addEventListener('keydown', (ev) => {
      const items = $$('button', menu);
      const i = items.indexOf(document.activeElement);
      if (ev.key === 'ArrowDown') {
        ev.preventDefault();
        items[(i + 1) % items.length].focus();
      } else if (ev.key === 'ArrowUp') {
        ev.preventDefault();
        items[(i - 1 + items.length) % items.length].focus();
      }
    });
    return wrap;
  }

  async function reissue(t, host, intro) {
    const data = await attempt(() => api('POST', `${tokenPath(t.jti)}/reissue`, undefined, { ifMatch: false }));
    if (!data || !data.jwt) return;
    hideError();
    const old = $('#new-jwt-box');
    if (old) old.remove();
    const box = jwtBox(data.jwt, intro || `A new JWT for “${t.name}” (same jti ${data.jti || t.jti}: same permissions; the old JWT keeps working until the jti is revoked).`);
    host.prepend(box);
    $('#copy-new-jwt', box).focus();
  }

  async function deleteToken(t) {
    const yes = await confirmDialog({
      title: `Delete the token “${t.name}”?`,
      message: `Deleting is permanent: the entry is removed from the token registry and its jti ${t.jti} is revoked, so every JWT of it is refused from the next request on.`,
      ok: `Delete ${t.name}`,
    });
    if (!yes) return false;
    const done = await attempt(() => api('DELETE', tokenPath(t.jti)));
    if (!done) return false;
    hideError();
    toast(`Token “${t.name}” deleted`);
    return true;
  }

  function stageRadios(stages, selected, legend) {
    const fs = el('fieldset', { id: 'token-stage-group' }, el('legend', { text: legend }));
    const wrap = el('div', { class: 'checks' });
    fs.append(wrap);
    for (const s of stages) {
      wrap.append(
        el(
          'label',
          { class: 'check' },
          el('input', { type: 'radio', name: 'token-stage', value: s, id: `token-stage-${s}`, checked: s === selected }),
          s,
        ),
      );
    }
    return fs;
  }
  const checkedStage = (root) => {
    const r = $('input[name="token-stage"]:checked', root);
    return r ? r.value : null;
  };

  async function viewTokens() {
    const [data, meta] = await Promise.all([api('GET', '/admin/api/tokens'), loadMeta()]);
    const root = el('div');
    const notices = el('div');
    const head = pageHead(
      'Tokens',
      'Permanent Auth Tokens the gateway knows by their jti: each has its own default stage, content permissions and Management API permissions.',
    );
    root.append(head, notices);
    if (canWrite()) {
      head.append(el('button', { type: 'button', class: 'btn btn-primary', id: 'add-token', text: 'Add token', onclick: () => openAdd() }));
    }
    const tokens = data.tokens || [];
    const rows = tokens.map((t) => {
      const actions = [['token-open', 'Open', () => (location.hash = `#/tokens/${enc(t.jti)}`)]];
      if (canWrite()) {
        actions.push(['token-reissue', 'Re-issue', () => reissue(t, notices)]);
        actions.push([
          'token-delete',
          'Delete',
          async () => {
            if (await deleteToken(t)) render({ keepError: false });
          },
        ]);
      }
      return el(
        'tr',
        { class: 'token-row', dataset: { jti: t.jti } },
        el('td', { class: 'c-name' }, el('a', { href: `#/tokens/${enc(t.jti)}`, text: t.name })),
        el('td', { class: 'c-description', text: t.description || '' }),
        el('td', { class: 'c-stage' }, el('span', { class: 'tag', text: t.default_stage })),
        el('td', { class: 'c-jti' }, jtiCell(t.jti)),
        el('td', { class: 'c-when c-created' }, when(t.created)),
        el('td', { class: 'c-when c-updated' }, when(t.updated)),
        el('td', { class: 'c-status' }, statusBadge(t.revoked)),
        el('td', { class: 'c-actions' }, tokenMenu(t, actions)),
      );
    });
    root.append(
      el(
        'section',
        { class: 'card' },
        el(
          'div',
          { class: 'tokens-wrap' },
          el(
            'table',
            { id: 'tokens' },
            el(
              'thead',
              null,
              el(
                'tr',
                null,
                ['Name', 'Description', 'Default stage', 'jti', 'Created', 'Updated', 'Status'].map((h) => el('th', { scope: 'col', text: h })),
                el('th', { scope: 'col', class: 'c-actions' }, el('span', { class: 'visually-hidden', text: 'Actions' })),
              ),
            ),
            el('tbody', null, rows.length ? rows : el('tr', null, el('td', { colspan: '8', class: 'empty', text: 'No tokens yet.' }))),
          ),
        ),
      ),
    );

    function openAdd() {
      const d = formDialog(root, { id: 'token-dialog', title: 'Add token' });
      const form = el('form', { class: 'form-grid' });
      d.append(form);
      const defaultStage = (meta.stages || []).includes('PUBLISHED') ? 'PUBLISHED' : (meta.stages || [])[0];
      const error = el('p', { class: 'form-error', role: 'alert', id: 'token-error' });
      form.append(
        el('p', { class: 'muted', text: 'The gateway signs a new JWT for it. You configure its permissions next; it can do nothing until then.' }),
        el('div', { class: 'field' }, el('label', { for: 'token-name', text: 'Name' }), el('input', { type: 'text', id: 'token-name', required: true, maxlength: '200', autocomplete: 'off' })),
        el('div', { class: 'field' }, el('label', { for: 'token-description', text: 'Description' }), el('textarea', { id: 'token-description', rows: '2', maxlength: '1000' })),
        stageRadios(meta.stages || [], defaultStage, 'Default stage'),
        error,
        el(
          'div',
          { class: 'form-actions' },
          el('button', { type: 'button', class: 'btn', text: 'Cancel', onclick: () => d.close() }),
          el('button', { type: 'submit', class: 'btn btn-primary', id: 'token-create', text: 'Add & configure permissions' }),
        ),
      );
      form.addEventListener('submit', async (ev) => {
        ev.preventDefault();
        error.textContent = '';
        const name = $('#token-name', form).value.trim();
        if (!name) {
          error.textContent = 'A token needs a name.';
          $('#token-name', form).focus();
          return;
        }
        const body = { name, description: $('#token-description', form).value, default_stage: checkedStage(form) };
        const done = await attempt(() => api('POST', '/admin/api/tokens', body), error);
        if (done && done.token) {
          hideError();
          S.pendingJwt = { jti: done.token.jti, jwt: done.jwt };
          d.close();
          location.hash = `#/tokens/${enc(done.token.jti)}`;
        }
      });
      d.showModal();
      $('#token-name', form).focus();
    }
    return root;
  }

  function managementPanel(jti) {
    const state = { all: false, selected: new Set(), perms: [] };
    const section = el('section', { class: 'card', id: 'management', 'aria-labelledby': 'mgmt-title' });
    section.append(
      el('div', { class: 'card-head' }, el('h2', { id: 'mgmt-title', text: 'Management API permissions' })),
      el('p', { class: 'lead', text: 'What this token may change through the management endpoint. Each operation of a management request needs its permission.' }),
    );
    const toggle = el('button', { type: 'button', class: 'btn-link', id: 'mgmt-toggle', 'aria-controls': 'mgmt-list', text: 'Show all permissions' });
    const enable = el('button', { type: 'button', class: 'btn btn-small', id: 'mgmt-enable', text: 'Enable selected' });
    const disable = el('button', { type: 'button', class: 'btn btn-small', id: 'mgmt-disable', text: 'Disable selected' });
    const tools = el('div', { class: 'mgmt-tools' }, toggle, el('span', { class: 'spacer' }));
    const count = el('span', { class: 'muted small', id: 'mgmt-count', 'aria-live': 'polite' });
    tools.append(count);
    if (canWrite()) tools.append(enable, disable);
    const listEl = el('ul', { class: 'mgmt-list', id: 'mgmt-list' });
    section.append(tools, listEl);

    function render() {
      const shown = state.all ? state.perms : state.perms.filter((p) => p.enabled);
      const names = new Set(shown.map((p) => p.name));
      for (const n of Array.from(state.selected)) if (!names.has(n)) state.selected.delete(n);
      toggle.textContent = state.all ? 'Show enabled permissions' : 'Show all permissions';
      toggle.setAttribute('aria-pressed', String(state.all));
      const enabledCount = state.perms.filter((p) => p.enabled).length;
      count.textContent = `${enabledCount} of ${state.perms.length} enabled`;
      const bulk = () => {
        enable.disabled = disable.disabled = state.selected.size === 0;
      };
      if (!shown.length) {
        listEl.replaceChildren(
          el('li', { class: 'empty', text: state.all ? 'The gateway knows no management permissions.' : 'No management permissions are enabled for this token.' }),
        );
        bulk();
        return;
      }
      listEl.replaceChildren(
        ...shown.map((p) => {
          const sel = el('input', { type: 'checkbox', class: 'mgmt-select', 'aria-label': `Select ${p.name}`, checked: state.selected.has(p.name) });
          sel.addEventListener('change', () => {
            if (sel.checked) state.selected.add(p.name);
            else state.selected.delete(p.name);
            bulk();
          });
          const sw = el('input', {
            type: 'checkbox',
            role: 'switch',
            class: 'mgmt-switch',
            'aria-label': `${p.name} enabled`,
            checked: p.enabled,
            disabled: !canWrite(),
          });
          const swState = el('span', { class: 'switch-state', text: p.enabled ? 'On' : 'Off' });
          sw.addEventListener('change', async () => {
            const on = sw.checked;
            swState.textContent = on ? 'On' : 'Off';
            const ok = await change(on ? [p.name] : [], on ? [] : [p.name]);
            if (!ok) {
              sw.checked = !on;
              swState.textContent = sw.checked ? 'On' : 'Off';
            }
          });
          return el(
            'li',
            { class: 'mgmt-row', dataset: { name: p.name, enabled: String(!!p.enabled) } },
            canWrite() ? sel : null,
            el('span', { class: 'mgmt-name', text: p.name }),
            el('span', { class: 'mgmt-desc', text: p.description || '' }),
            el('label', { class: 'switch' }, sw, swState),
          );
        }),
      );
      bulk();
    }

    async function change(on, off, clearSelection) {
      section.setAttribute('aria-busy', 'true');
      const data = await attempt(() => api('PATCH', `${tokenPath(jti)}/management`, { enable: on, disable: off }));
      section.setAttribute('aria-busy', 'false');
      if (!data) return false;
      hideError();
      if (clearSelection) state.selected.clear();
      state.perms = data.permissions || [];
      render();
      toast('Management permissions saved');
      return true;
    }

    toggle.addEventListener('click', () => {
      state.all = !state.all;
      render();
    });
    enable.addEventListener('click', () => change(Array.from(state.selected), [], true));
    disable.addEventListener('click', () => change([], Array.from(state.selected), true));

    (async () => {
      const data = await attempt(() => api('GET', `${tokenPath(jti)}/management`));
      if (!data) return;
      state.perms = data.permissions || [];
      render();
    })();
    return section;
  }

  async function viewToken(jti) {
    let data;
    try {
      data = await api('GET', tokenPath(jti));
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        return el(
          'div',
          null,
          pageHead('Token not found', `No token in the registry has the jti ${jti}.`),
          el('a', { href: '#/tokens', text: 'Back to the tokens' }),
        );
      }
      throw e;
    }
    const meta = await loadMeta();
    const t = data.token;
    const root = el('div');
    const title = el('h1', { tabindex: '-1', text: t.name });
    root.append(
      el(
        'div',
        { class: 'page-head' },
        el(
          'div',
          null,
          el('p', { class: 'breadcrumb' }, el('a', { href: '#/tokens', text: 'Tokens' }), ' / ', el('span', { class: 'crumb-name', text: t.name })),
          el('div', { class: 'row' }, title, statusBadge(t.revoked)),
        ),
      ),
    );
    const notices = el('div');
    root.append(notices);
    if (S.pendingJwt && S.pendingJwt.jti === t.jti) {
      notices.append(jwtBox(S.pendingJwt.jwt, `The token “${t.name}” was added. This is its JWT; give it its permissions below.`));
      S.pendingJwt = null; // shown once
    }

    // Details
    const details = el('section', { class: 'card', 'aria-labelledby': 'details-title' }, el('div', { class: 'card-head' }, el('h2', { id: 'details-title', text: 'Details' })));
    const form = el('form', { class: 'form-grid', id: 'token-form' });
    const ro = !canWrite();
    const name = el('input', { type: 'text', id: 'token-name', value: t.name, required: true, readonly: ro, maxlength: '200', autocomplete: 'off' });
    const desc = el('textarea', { id: 'token-description', rows: '2', readonly: ro, maxlength: '1000' });
    desc.value = t.description || '';
    const radios = stageRadios(meta.stages || [], t.default_stage, 'Default stage');
    if (ro) radios.disabled = true;
    const error = el('p', { class: 'form-error', role: 'alert', id: 'token-error' });
    form.append(
      el(
        'div',
        { class: 'details-grid' },
        el(
          'div',
          { class: 'form-grid' },
          el('div', { class: 'field' }, el('label', { for: 'token-name', text: 'Name' }), name),
          el('div', { class: 'field' }, el('label', { for: 'token-description', text: 'Description' }), desc),
          radios,
        ),
        el(
          'dl',
          { class: 'kv kv-side' },
        el('dt', { text: 'jti' }),
        el('dd', null, jtiCell(t.jti)),
        el('dt', { text: 'Created' }),
        el('dd', null, when(t.created)),
          el('dt', { text: 'Updated' }),
          el('dd', { id: 'token-updated' }, when(t.updated)),
          el('dt', { text: 'Default stage' }),
          el('dd', null, el('span', { class: 'tag', id: 'token-stage-tag', text: t.default_stage })),
        ),
      ),
      error,
    );
    if (!ro) {
      form.append(
        el(
          'div',
          { class: 'form-actions' },
          el('button', { type: 'button', class: 'btn', id: 'token-reissue-detail', text: 'Re-issue JWT', onclick: () => reissue(t, notices) }),
          el('button', { type: 'submit', class: 'btn btn-primary', id: 'token-save', text: 'Save' }),
        ),
      );
    }
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      if (ro) return;
      error.textContent = '';
      const body = {};
      const newName = name.value.trim();
      if (!newName) {
        error.textContent = 'A token needs a name.';
        return;
      }
      if (newName !== t.name) body.name = newName;
      if (desc.value !== (t.description || '')) body.description = desc.value;
      const stage = checkedStage(form);
      if (stage && stage !== t.default_stage) body.default_stage = stage;
      if (!Object.keys(body).length) {
        toast('Nothing to save');
        return;
      }
      const done = await attempt(() => api('PATCH', tokenPath(t.jti), body), error);
      if (done && done.token) {
        hideError();
        Object.assign(t, done.token);
        title.textContent = t.name;
        $('.crumb-name', root).textContent = t.name;
        $('#token-updated', root).replaceChildren(when(t.updated));
        $('#token-stage-tag', root).textContent = t.default_stage;
        toast('Token saved');
      }
    });
    details.append(form);
    root.append(details);

    root.append(permissionsPanel(`${tokenPath(t.jti)}/permissions`, meta, { who: `requests with this token` }).node);
    root.append(managementPanel(t.jti));

    if (!ro) {
      root.append(
        el(
          'section',
          { class: 'card card-danger', 'aria-labelledby': 'danger-title' },
          el('div', { class: 'card-head' }, el('h2', { id: 'danger-title', text: 'Delete this token' })),
          el('p', { class: 'muted', text: 'Removes the entry and revokes its jti: every JWT of this token is refused from the next request on. This cannot be undone.' }),
          el('button', {
            type: 'button',
            class: 'btn btn-danger',
            id: 'token-delete-detail',
            text: 'Delete token',
            onclick: async () => {
              if (await deleteToken(t)) location.hash = '#/tokens';
            },
          }),
        ),
      );
    }
    return root;
  }

  const STATUS_TEXT = {
    active: 'active: this jti is in the token list and the gateway accepts it.',
    revoked: 'revoked: the gateway refuses every JWT with this jti.',
    unknown: 'unknown: no token in the list has this jti; the gateway refuses it.',
    invalid: 'invalid: this is not a token the gateway can accept.',
  };

  function viewCheck() {
    const root = el('div');
    root.append(
      pageHead(
        "Can't find your token?",
        'Paste a JWT to see its header and claims, whether its signature verifies with a key of this gateway, and which token of the list it is. Nothing is stored or logged.',
      ),
    );
    const ta = el('textarea', { id: 'check-jwt', rows: '4', spellcheck: 'false', autocomplete: 'off', placeholder: 'eyJhbGciOi…' });
    const result = el('div', { class: 'check-result', id: 'check-result', 'aria-live': 'polite' });
    const form = el(
      'form',
      { class: 'form-grid', id: 'check-form' },
      el('div', { class: 'field' }, el('label', { for: 'check-jwt', text: 'JWT' }), ta),
      el('div', { class: 'form-actions' }, el('button', { type: 'submit', class: 'btn btn-primary', id: 'check-run', text: 'Check token' })),
    );
    root.append(el('section', { class: 'card' }, form, result));

    async function run() {
      const jwt = ta.value.trim();
      if (!jwt) {
        showError('Paste a JWT first.');
        return;
      }
      const data = await attempt(() => api('POST', '/admin/api/token-check', { jwt }, { ifMatch: false }));
      if (!data) return;
      hideError();
      show(data);
    }

    function show(r) {
      const status = r.status || 'invalid';
      const t = r.token;
      const kv = el(
        'dl',
        { class: 'kv' },
        el('dt', { text: 'Status' }),
        el(
          'dd',
          { id: 'check-status', class: `status-line status-${status}` },
          el('span', { class: `badge badge-${status}`, text: status }),
          ' ',
          STATUS_TEXT[status] || status,
        ),
        el('dt', { text: 'jti' }),
        el('dd', { id: 'check-jti' }, r.jti ? el('code', { text: r.jti }) : el('span', { class: 'muted', text: 'none (the claims carry no jti)' })),
        el('dt', { text: 'Signature' }),
        el(
          'dd',
          { id: 'check-verified' },
          r.verified === true
            ? el('span', null, el('span', { class: 'badge badge-verified', text: 'verified' }), ' ', r.verify_error || '')
            : r.verified === false
              ? el('span', null, el('span', { class: 'badge badge-invalid', text: 'not verified' }), ' ', r.verify_error || '')
              : el('span', null, el('span', { class: 'badge badge-unknown', text: 'not checked' }), ' ', r.verify_error || ''),
        ),
        el('dt', { text: 'In the list' }),
        el(
          'dd',
          { id: 'check-match' },
          t
            ? el('span', null, 'Yes: the same token as ', el('a', { href: `#/tokens/${enc(t.jti)}`, text: `“${t.name}”` }), t.revoked ? ' (revoked)' : ' (active)')
            : 'No: no token in the list has this jti.',
        ),
      );
      const actions = el('div', { class: 'row', id: 'check-actions' });
      const notices = el('div');
      if (t && canWrite() && !t.revoked) {
        actions.append(
          el('button', {
            type: 'button',
            class: 'btn btn-primary',
            id: 'check-keep',
            text: 'Keep (re-issue)',
            onclick: () => reissue(t, notices, `A fresh JWT for “${t.name}” (same jti, same permissions). Replace the lost one with it.`),
          }),
          el('button', {
            type: 'button',
            class: 'btn btn-danger-outline',
            id: 'check-revoke',
            text: 'Revoke',
            onclick: async () => {
              const yes = await confirmDialog({
                title: `Revoke “${t.name}”?`,
                message: `Every JWT with the jti ${t.jti} is refused from the next request on. The entry stays in the list, marked revoked.`,
                ok: `Revoke ${t.name}`,
              });
              if (!yes) return;
              const done = await attempt(() => api('POST', `${tokenPath(t.jti)}/revoke`));
              if (done) {
                toast(`Token “${t.name}” revoked`);
                run();
              }
            },
          }),
        );
      }
      const pretty = (v) => (v === null || v === undefined ? '—' : JSON.stringify(v, null, 2));
      result.replaceChildren(
        notices,
        kv,
        actions,
        el(
          'div',
          { class: 'two-col' },
          el('div', null, el('h3', { text: 'Header' }), el('pre', { class: 'json', id: 'check-header', text: pretty(r.header) })),
          el('div', null, el('h3', { text: 'Claims' }), el('pre', { class: 'json', id: 'check-claims', text: pretty(r.claims) })),
        ),
      );
    }

    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      run();
    });
    return root;
  }

  // ---------------------------------------------------------------------------------------------
  // Router

  const ROUTES = [
    [/^#\/endpoints$/, 'endpoints', 'Endpoints', () => viewEndpoints()],
    [/^#\/public$/, 'public', 'Public content API', () => viewPublic()],
    [/^#\/tokens$/, 'tokens', 'Tokens', () => viewTokens()],
    [/^#\/tokens\/(.+)$/, 'tokens', 'Token', (m) => viewToken(decodeURIComponent(m[1]))],
    [/^#\/check$/, 'check', "Can't find your token?", () => viewCheck()],
  ];

  async function render(opts = {}) {
    const hash = location.hash || '#/endpoints';
    const found = ROUTES.map((r) => [r, hash.match(r[0])]).find(([, m]) => m);
    if (!found) {
      location.replace('#/endpoints');
      return;
    }
    const [[, nav, title, view], match] = found;
    const gen = ++S.routeGen;
    closeMenu(false);
    if (!opts.keepError) hideError();
    for (const a of $$('.nav a')) {
      if (a.dataset.route === nav) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    document.title = `${title} · contentgate console`;
    const main = $('#view');
    let node;
    try {
      node = await view(match);
    } catch (e) {
      if (gen !== S.routeGen) return;
      handleErrorNoReload(e);
      node = el('div', null, pageHead(title, null), el('p', { class: 'empty', text: 'This screen could not be loaded.' }));
    }
    if (gen !== S.routeGen) return; // a newer navigation won
    main.replaceChildren(node);
    main.dataset.screen = nav;
    main.dataset.ready = String(gen);
    if (opts.focus) {
      const h = $('h1', main);
      if (h) h.focus();
    }
  }

  /** Like handleError, but a 412 while loading a screen must not loop. */
  function handleErrorNoReload(e) {
    if (e instanceof ApiError && e.status === 412) {
      showError('Someone else changed the policy; reloaded');
      return;
    }
    handleError(e);
  }

  // ---------------------------------------------------------------------------------------------
  // Start

  async function start() {
    $('#error-close').addEventListener('click', hideError);
    let who;
    try {
      who = await api('GET', '/admin/api/whoami');
    } catch (e) {
      handleError(e);
      $('#view').replaceChildren(
        el('p', null, 'The console could not identify your session. ', el('a', { href: '/console', text: 'Sign in again' }), '.'),
      );
      return;
    }
    S.who = who;
    $('#whoami').textContent = `${who.name} · ${who.scope}`;
    $('#logout-csrf').value = who.csrf || '';
    if (!canWrite()) {
      const banner = $('#readonly');
      banner.textContent =
        who.scope !== 'write'
          ? 'Read-only: your credential has the read scope. Changes are disabled.'
          : `Read-only: ${who.read_only_reason || 'the policy source cannot be written'}. Changes are disabled.`;
      banner.hidden = false;
      document.body.classList.add('is-readonly');
    }
    window.addEventListener('hashchange', () => render({ focus: true }));
    if (!location.hash) history.replaceState(null, '', '#/endpoints');
    render();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
