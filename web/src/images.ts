/**
 * Choosing input images: drop them on the zone, pick them from disk, or pick earlier results.
 * A dropped or picked file is uploaded at once (the Files API), so the form only holds file ids
 * and the upload's own error (too large, not an image) shows right here, where it was caused.
 */
import { fileUrl, getJson, uploadFile, type FileRecord, type Page } from './api.js';
import { asyncImage, h, uid } from './dom.js';

export interface ImagePicker {
  el: HTMLElement;
  ids(): string[];
  set(ids: string[]): void;
  add(id: string): void;
  setError(message: string | null): void;
}

export function imagePicker(opts: { label: string; multiple: boolean; hint: string; onChange?: () => void }): ImagePicker {
  let ids: string[] = [];
  const id = uid('img');
  const list = h('ul', { class: 'picked', 'aria-label': `${opts.label}: chosen images` });
  const error = h('p', { class: 'field-error', id: `${id}-err`, role: 'alert', hidden: true });
  const fileInput = h('input', {
    type: 'file',
    id,
    accept: 'image/png,image/jpeg,image/webp,image/gif',
    multiple: opts.multiple,
    class: 'visually-hidden',
    'aria-describedby': `${id}-hint ${id}-err`,
  });
  const status = h('span', { class: 'hint', 'aria-live': 'polite' });
  const resultsBox = h('div', { class: 'results-picker', hidden: true });

  const render = () => {
    list.replaceChildren(
      ...ids.map((fid, i) =>
        h(
          'li',
          {},
          asyncImage(fileUrl(fid, 256), `${opts.label} ${i + 1}`, 'thumb'),
          h('button', { type: 'button', class: 'small', 'aria-label': `Remove image ${i + 1}`, onclick: () => remove(fid) }, '✕'),
        ),
      ),
    );
    zone.classList.toggle('has-images', ids.length > 0);
    opts.onChange?.();
  };
  const remove = (fid: string) => {
    ids = ids.filter((x) => x !== fid);
    render();
  };
  const add = (fid: string) => {
    ids = opts.multiple ? [...ids.filter((x) => x !== fid), fid] : [fid];
    render();
  };
  const setError = (message: string | null) => {
    error.textContent = message ?? '';
    error.hidden = !message;
  };

  const uploadAll = async (files: File[]) => {
    setError(null);
    const chosen = opts.multiple ? files : files.slice(0, 1);
    for (const file of chosen) {
      status.textContent = `Uploading ${file.name}…`;
      try {
        const rec = await uploadFile(file, file.name);
        if (!rec.content_type.startsWith('image/')) {
          setError(`${file.name} is not an image the server can read (${rec.content_type}); use a png, jpeg, webp or gif.`);
          continue;
        }
        add(rec.file_id);
      } catch (err) {
        setError(`${file.name}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    status.textContent = '';
  };

  fileInput.addEventListener('change', () => {
    const files = [...(fileInput.files ?? [])];
    fileInput.value = '';
    void uploadAll(files);
  });

  const showResults = async () => {
    if (!resultsBox.hidden) {
      resultsBox.hidden = true;
      return;
    }
    resultsBox.hidden = false;
    resultsBox.replaceChildren(h('p', { class: 'hint' }, 'Loading recent images…'));
    try {
      const page = await getJson<Page<FileRecord>>('/v1/files?limit=24&content_type=image/*');
      if (page.data.length === 0) {
        resultsBox.replaceChildren(h('p', { class: 'hint' }, 'No images yet: generate one first, or drop one from your disk.'));
        return;
      }
      resultsBox.replaceChildren(
        ...page.data.map((f) =>
          h(
            'button',
            {
              type: 'button',
              class: 'pick',
              'aria-label': `Use ${f.filename}`,
              'data-file-id': f.file_id,
              onclick: () => {
                add(f.file_id);
                resultsBox.hidden = true;
              },
            },
            asyncImage(fileUrl(f.file_id, 256), f.filename, 'thumb'),
          ),
        ),
      );
    } catch (err) {
      resultsBox.replaceChildren(h('p', { class: 'field-error' }, err instanceof Error ? err.message : String(err)));
    }
  };

  const zone = h(
    'div',
    { class: 'drop-zone' },
    h('p', { id: `${id}-hint` }, opts.hint),
    h(
      'div',
      { class: 'actions' },
      h('label', { for: id, class: 'button' }, opts.multiple ? 'Choose images…' : 'Choose an image…'),
      fileInput,
      h('button', { type: 'button', onclick: () => void showResults() }, 'From earlier results…'),
      status,
    ),
    list,
    resultsBox,
  );
  zone.addEventListener('dragover', (e) => {
    e.preventDefault();
    zone.classList.add('dragging');
  });
  zone.addEventListener('dragleave', () => zone.classList.remove('dragging'));
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    zone.classList.remove('dragging');
    void uploadAll([...(e.dataTransfer?.files ?? [])]);
  });

  const el = h('fieldset', { class: 'images' }, h('legend', {}, opts.label), zone, error);
  return {
    el,
    ids: () => [...ids],
    set(next) {
      ids = opts.multiple ? [...next] : next.slice(0, 1);
      render();
    },
    add,
    setError,
  };
}
