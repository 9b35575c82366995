/**
 * The Gallery tab: finished jobs as a paged grid of thumbnails (the server makes them), each with
 * its parameters and what can be done with it; and the uploads (images, LoRAs), deletable.
 */
import { curlFor, del, downloadFile, fileUrl, forgetFile, getJson, type FileRecord, type Job, type Page } from './api.js';
import { asText, asyncImage, h } from './dom.js';
import { EDIT_PATH } from './edit.js';
import { GENERATE_PATH } from './generate.js';
import { IDEOGRAM_PATH } from './ideogram.js';

export const PAGE_SIZE = 12;

export interface GalleryActions {
  reuse(job: Job): void;
}

const PATH_OF: Record<string, string> = { qwen: GENERATE_PATH, 'qwen-edit': EDIT_PATH, ideogram4: IDEOGRAM_PATH };
const LABEL_OF: Record<string, string> = { qwen: 'Generate', 'qwen-edit': 'Edit', ideogram4: 'Ideogram 4' };

/** The request body that repeats a job: its recorded parameters with the seed it actually used. */
export function requestOf(job: Job): Record<string, unknown> {
  const { mode: _mode, model: _model, ...rest } = job.params;
  const used = (job.result?.params as Record<string, unknown> | undefined)?.seed;
  const body: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(rest)) {
    if (v === null || (Array.isArray(v) && v.length === 0)) continue;
    if (k === 'scheduler' && v === 'linear') continue;
    if (k === 'quality' && v === 90) continue;
    if (k === 'warn_on_caption_issues' && v === true) continue;
    body[k] = v;
  }
  if (typeof used === 'number') body.seed = used;
  return body;
}

export function gallery(actions: GalleryActions) {
  const grid = h('ul', { class: 'grid', 'aria-label': 'Results' });
  const status = h('p', { class: 'hint', 'aria-live': 'polite' });
  const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const newer = h('button', { type: 'button', disabled: true }, '← Newer');
  const older = h('button', { type: 'button', disabled: true }, 'Older →');
  const pageLabel = h('span', { class: 'hint' });
  const uploads = h('ul', { class: 'uploads', 'aria-label': 'Uploads' });
  const uploadsError = h('p', { class: 'form-error', role: 'alert', hidden: true });
  let cursor: { after?: string; before?: string } = {};
  let page: Page<Job> | null = null;
  let pageNumber = 1;

  const showError = (el: HTMLElement, err: unknown) => {
    el.textContent = err instanceof Error ? err.message : String(err);
    el.hidden = false;
  };

  async function load(): Promise<void> {
    error.hidden = true;
    status.textContent = 'Loading…';
    const q = new URLSearchParams({ limit: String(PAGE_SIZE), status: 'succeeded' });
    if (cursor.after) q.set('after', cursor.after);
    if (cursor.before) q.set('before', cursor.before);
    try {
      page = await getJson<Page<Job>>(`/v1/jobs?${q.toString()}`);
    } catch (err) {
      status.textContent = '';
      showError(error, err);
      return;
    }
    const goingBack = cursor.before !== undefined;
    newer.disabled = pageNumber <= 1;
    older.disabled = goingBack ? false : !page.has_more;
    pageLabel.textContent = `Page ${pageNumber}`;
    status.textContent = page.data.length === 0 ? (pageNumber === 1 ? 'No results yet: generate something first.' : 'No more results.') : '';
    grid.replaceChildren(...page.data.map(card));
    await loadUploads();
  }

  function card(job: Job): HTMLElement {
    const fileId = job.artifacts[0];
    const path = PATH_OF[job.type] ?? GENERATE_PATH;
    const body = requestOf(job);
    const prompt = typeof job.params.prompt === 'string' ? job.params.prompt : asText((job.params.prompt as Record<string, unknown> | undefined)?.high_level_description, 'caption');
    const copied = h('span', { class: 'hint', 'aria-live': 'polite' });
    // Fetched when asked for: the grid itself loads only thumbnails.
    const download = h(
      'button',
      {
        type: 'button',
        disabled: !fileId,
        onclick: () => {
          if (fileId) downloadFile(fileId, `${fileId}.${asText(job.params.format, 'png')}`).catch((err: unknown) => showError(error, err));
        },
      },
      'Download',
    );
    const item = h(
      'li',
      { class: 'card', 'data-job-id': job.id },
      fileId ? asyncImage(fileUrl(fileId, 256), prompt, 'thumb') : h('div', { class: 'thumb missing' }, 'no image'),
      h('p', { class: 'card-title' }, h('strong', {}, LABEL_OF[job.type] ?? job.type), ' ', prompt),
      h('details', {}, h('summary', {}, 'Parameters'), h('pre', {}, JSON.stringify(body, null, 2))),
      h(
        'div',
        { class: 'actions' },
        h('button', { type: 'button', onclick: () => actions.reuse(job) }, 'Use these settings again'),
        download,
        h(
          'button',
          {
            type: 'button',
            onclick: () => {
              const text = curlFor(path, body, `out.${asText(job.params.format, 'png')}`);
              navigator.clipboard
                .writeText(text)
                .then(() => (copied.textContent = 'Copied.'))
                .catch(() => (copied.textContent = text));
            },
          },
          'Copy as curl',
        ),
        h(
          'button',
          {
            type: 'button',
            class: 'danger',
            onclick: () => {
              if (!confirm('Delete this result and its image?')) return;
              Promise.all([...job.artifacts.map((id) => del(`/v1/files/${id}`).then(() => forgetFile(id))), del(`/v1/jobs/${job.id}`)])
                .then(() => load())
                .catch((err: unknown) => showError(error, err));
            },
          },
          'Delete',
        ),
        copied,
      ),
    );
    return item;
  }

  async function loadUploads(): Promise<void> {
    uploadsError.hidden = true;
    try {
      const files = await getJson<Page<FileRecord>>('/v1/files?limit=100');
      const mine = files.data.filter((f) => !('params' in f.meta));
      uploads.replaceChildren(
        ...(mine.length === 0
          ? [h('li', { class: 'hint' }, 'No uploads yet.')]
          : mine.map((f) =>
              h(
                'li',
                { 'data-file-id': f.file_id },
                f.content_type.startsWith('image/') ? asyncImage(fileUrl(f.file_id, 128), f.filename, 'mini') : h('span', { class: 'mini file' }, 'LoRA'),
                h('span', {}, `${f.filename} (${Math.ceil(f.size / 1024)} KB)`),
                h(
                  'button',
                  {
                    type: 'button',
                    class: 'danger small',
                    'aria-label': `Delete ${f.filename}`,
                    onclick: () =>
                      void del(`/v1/files/${f.file_id}`)
                        .then(() => (forgetFile(f.file_id), loadUploads()))
                        .catch((err: unknown) => showError(uploadsError, err)),
                  },
                  'Delete',
                ),
              ),
            )),
      );
    } catch (err) {
      showError(uploadsError, err);
    }
  }

  older.addEventListener('click', () => {
    if (!page?.last_id) return;
    cursor = { after: page.last_id };
    pageNumber += 1;
    void load();
  });
  newer.addEventListener('click', () => {
    if (!page?.first_id || pageNumber <= 1) return;
    cursor = pageNumber === 2 ? {} : { before: page.first_id };
    pageNumber -= 1;
    void load();
  });
  const refresh = h('button', { type: 'button', onclick: () => ((cursor = {}), (pageNumber = 1), void load()) }, 'Refresh');

  const el = h(
    'div',
    { class: 'gallery' },
    h('div', { class: 'actions' }, refresh, newer, pageLabel, older),
    status,
    error,
    grid,
    h('h2', {}, 'Uploads'),
    h('p', { class: 'hint' }, 'Images and LoRA adapters you uploaded.'),
    uploadsError,
    uploads,
  );
  return {
    el,
    load: () => {
      cursor = {};
      pageNumber = 1;
      return load();
    },
  };
}
