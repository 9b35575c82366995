/**
 * The kiapi playground: tabs Generate / Edit / Ideogram / Gallery beside one job panel. The server
 * serves this page at `/`; everything it does goes through the public API with the token the
 * person entered (localStorage, this browser only).
 */
import { getJson, getToken, onUnauthorized, setToken, type Job, type Page } from './api.js';
import { editForm } from './edit.js';
import { gallery } from './gallery.js';
import { generateForm } from './generate.js';
import { h } from './dom.js';
import { ideogramForm } from './ideogram.js';
import { JobPanel } from './job-panel.js';

type TabName = 'generate' | 'edit' | 'ideogram' | 'gallery';

function start(): void {
  const root = document.getElementById('app');
  if (!root) return;
  const authOn = document.body.dataset.auth === 'on';

  const panel = new JobPanel({
    reuseSeed: (job) => {
      const seed = (job.result?.params as Record<string, unknown> | undefined)?.seed;
      if (typeof seed !== 'number') return;
      const form = job.type === 'qwen-edit' ? edit : job.type === 'ideogram4' ? ideogram : generate;
      form.setSeed(seed);
      show(job.type === 'qwen-edit' ? 'edit' : job.type === 'ideogram4' ? 'ideogram' : 'generate');
    },
    useAsEditInput: (fileId) => {
      edit.addImage(fileId);
      show('edit');
    },
    useAsInitImage: (fileId) => {
      generate.setInitImage(fileId);
      show('generate');
    },
    jobFinished: () => undefined,
  });
  const generate = generateForm(panel);
  const edit = editForm(panel);
  const ideogram = ideogramForm(panel);
  const gal = gallery({
    reuse: (job: Job) => {
      const used = (job.result?.params as Record<string, unknown> | undefined)?.seed;
      const seed = typeof used === 'number' ? used : null;
      if (job.type === 'qwen-edit') {
        edit.fill(job.params, seed);
        show('edit');
      } else if (job.type === 'ideogram4') {
        ideogram.fill(job.params, seed);
        show('ideogram');
      } else {
        generate.fill(job.params, seed);
        show('generate');
      }
    },
  });

  const tabs: Array<[TabName, string, HTMLElement]> = [
    ['generate', 'Generate', generate.el],
    ['edit', 'Edit', edit.el],
    ['ideogram', 'Ideogram', ideogram.el],
    ['gallery', 'Gallery', gal.el],
  ];
  const tabButtons = new Map<TabName, HTMLButtonElement>();
  const panels = new Map<TabName, HTMLElement>();
  const tablist = h('div', { role: 'tablist', 'aria-label': 'Playground sections', class: 'tabs' });
  for (const [name, label, content] of tabs) {
    const button = h('button', { type: 'button', role: 'tab', id: `tab-${name}`, 'aria-controls': `panel-${name}`, 'aria-selected': 'false', tabindex: -1 }, label);
    button.addEventListener('click', () => show(name));
    tabButtons.set(name, button);
    tablist.append(button);
    panels.set(name, h('section', { role: 'tabpanel', id: `panel-${name}`, 'aria-labelledby': `tab-${name}`, hidden: true, tabindex: 0 }, content));
  }
  // Arrow keys move between tabs (the WAI-ARIA tabs pattern); Tab moves into the panel.
  tablist.addEventListener('keydown', (e) => {
    const order = tabs.map(([n]) => n);
    const current = order.findIndex((n) => tabButtons.get(n) === document.activeElement);
    if (current < 0) return;
    let next: number;
    if (e.key === 'ArrowRight') next = (current + 1) % order.length;
    else if (e.key === 'ArrowLeft') next = (current - 1 + order.length) % order.length;
    else if (e.key === 'Home') next = 0;
    else if (e.key === 'End') next = order.length - 1;
    else return;
    e.preventDefault();
    show(order[next]!);
    tabButtons.get(order[next]!)?.focus();
  });

  function show(name: TabName): void {
    for (const [n, b] of tabButtons) {
      b.setAttribute('aria-selected', String(n === name));
      b.tabIndex = n === name ? 0 : -1;
      panels.get(n)!.hidden = n !== name;
    }
    if (location.hash !== `#${name}`) history.replaceState(null, '', `#${name}`);
    // Without the token the server needs, the lists would only answer 401: wait for it.
    if (authOn && !getToken()) return;
    if (name === 'gallery') void gal.load();
    if (name === 'generate') void generate.refreshLoras();
  }

  // The token: asked for when the server says 401, kept in this browser only.
  const tokenInput = h('input', { type: 'password', id: 'token', autocomplete: 'off', value: getToken(), 'aria-describedby': 'token-hint' });
  const tokenStatus = h('p', { class: 'hint', id: 'token-hint' }, 'Kept in this browser only (localStorage) and sent only to this server.');
  const tokenForm = h(
    'form',
    { class: 'token-form', hidden: true, 'aria-label': 'Access token' },
    h('label', { for: 'token' }, 'Access token (KIAPI_AUTH_TOKEN)'),
    h('div', { class: 'row inline' }, tokenInput, h('button', { type: 'submit', class: 'primary' }, 'Save'), h('button', { type: 'button', onclick: () => ((tokenInput.value = ''), setToken(''), (tokenStatus.textContent = 'Token forgotten.')) }, 'Forget')),
    tokenStatus,
  );
  tokenForm.addEventListener('submit', (e) => {
    e.preventDefault();
    setToken(tokenInput.value.trim());
    tokenStatus.textContent = 'Checking…';
    getJson('/v1/jobs?limit=1')
      .then(() => {
        tokenStatus.textContent = 'Token accepted.';
        tokenNote.textContent = 'Token accepted.';
        ideogram.revalidate();
        void followRunning();
        tokenForm.hidden = true;
        tokenButton.setAttribute('aria-expanded', 'false');
        const current = [...tabButtons].find(([, b]) => b.getAttribute('aria-selected') === 'true')?.[0] ?? 'generate';
        show(current);
      })
      .catch((err: unknown) => (tokenStatus.textContent = err instanceof Error ? err.message : String(err)));
  });
  const tokenButton = h('button', { type: 'button', 'aria-expanded': 'false', 'aria-controls': 'token-form' }, 'Token');
  tokenForm.id = 'token-form';
  tokenButton.addEventListener('click', () => {
    tokenForm.hidden = !tokenForm.hidden;
    tokenButton.setAttribute('aria-expanded', String(!tokenForm.hidden));
    if (!tokenForm.hidden) tokenInput.focus();
  });
  onUnauthorized(() => {
    tokenForm.hidden = false;
    tokenButton.setAttribute('aria-expanded', 'true');
  });

  const engine = h('span', { class: 'engine hint' });
  const tokenNote = h('span', { class: 'hint', role: 'status' });
  getJson<{ engine?: { name: string; detail: string } }>('/health')
    .then((hl) => (engine.textContent = hl.engine ? `engine: ${hl.engine.name}` : ''))
    .catch(() => undefined);

  root.replaceChildren(
    h(
      'header',
      { class: 'top' },
      h('h1', {}, 'kiapi ', h('span', { class: 'sub' }, 'playground')),
      engine,
      h('nav', { 'aria-label': 'Links' }, tokenNote, h('a', { href: '/docs' }, 'API docs'), tokenButton),
    ),
    tokenForm,
    h('main', { class: 'layout' }, h('div', { class: 'forms' }, tablist, ...panels.values()), panel.el),
  );
  if (authOn && !getToken()) {
    tokenForm.hidden = false;
    tokenButton.setAttribute('aria-expanded', 'true');
  }
  const initial = location.hash.slice(1) as TabName;
  show(tabs.some(([n]) => n === initial) ? initial : 'generate');
  void followRunning();

  /**
   * A job already running when the page opens (submitted before a reload, or by an agent through
   * the API) is followed in the panel, so the person sees what is being made right now.
   */
  async function followRunning(): Promise<void> {
    if (authOn && !getToken()) return;
    try {
      for (const status of ['running', 'queued']) {
        const page = await getJson<Page<Job>>(`/v1/jobs?status=${status}&limit=1`);
        const job = page.data[0];
        if (job) {
          const steps = typeof job.params.steps === 'number' ? job.params.steps : undefined;
          const images = (job.params.images as Array<{ file_id?: string }> | undefined) ?? [];
          panel.track(job.id, LABELS[job.type] ?? job.type, images.map((i) => i.file_id).filter((x): x is string => typeof x === 'string'), steps);
          return;
        }
      }
    } catch {
      // Nothing to follow is no error worth showing; a 401 opens the token form by itself.
    }
  }
}

const LABELS: Record<string, string> = { qwen: 'Generate', 'qwen-edit': 'Edit', ideogram4: 'Ideogram 4' };

start();
