/** The Edit tab: Qwen edit with one or more reference images, the result shown beside its inputs. */
import { optionalNumber, outputSettings } from './common-fields.js';
import { field, h, setFormError, showError, type Field } from './dom.js';
import { imagePicker } from './images.js';
import { submitJob, type JobPanel } from './job-panel.js';

export const EDIT_PATH = '/v1/image/qwen/edit';

export interface EditForm {
  el: HTMLElement;
  fill(params: Record<string, unknown>, seed: number | null): void;
  addImage(fileId: string): void;
  setSeed(seed: number): void;
}

export function editForm(panel: JobPanel): EditForm {
  const images = imagePicker({
    label: 'Images to edit',
    multiple: true,
    hint: 'Drop one or more images here, choose them from disk, or pick earlier results. The first one leads.',
  });
  const prompt = field('Instruction', h('textarea', { rows: 3, required: true, placeholder: 'put both foxes on a beach at sunset' }), 'Say what to change or how to combine the images.');
  const negative = field('Negative prompt', h('textarea', { rows: 2 }), 'Optional: what to keep out of the result.');
  const settings = outputSettings('Empty: the server default (30).');
  const formError = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Edit');
  const fields: Record<string, Field> = {
    prompt,
    negative_prompt: negative,
    ...settings.fields,
  };
  const form = h(
    'form',
    { class: 'gen-form', 'aria-label': 'Edit images', novalidate: true },
    images.el,
    prompt.wrap,
    negative.wrap,
    ...settings.rows,
    formError,
    h('div', { class: 'actions' }, submit),
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    setFormError(formError, null);
    images.setError(null);
    for (const f of Object.values(fields)) f.setError(null);
    const ids = images.ids();
    if (ids.length === 0) {
      images.setError('Add at least one image to edit.');
      return;
    }
    if (!prompt.control.value.trim()) {
      prompt.setError('Write an instruction first: it says what to change.');
      prompt.control.focus();
      return;
    }
    const body: Record<string, unknown> = {
      prompt: prompt.control.value,
      images: ids.map((id) => ({ type: 'file_id', file_id: id })),
      ...(negative.control.value.trim() ? { negative_prompt: negative.control.value } : {}),
      ...settings.body(),
    };
    submit.disabled = true;
    submitJob(EDIT_PATH, body)
      .then((jobId) => panel.track(jobId, 'Edit', ids, optionalNumber(settings.steps)))
      .catch((err: unknown) => {
        if (err instanceof Error && /\bimages\b/.test(err.message)) images.setError(err.message);
        showError(err, fields, formError);
      })
      .finally(() => (submit.disabled = false));
  });
  return {
    el: form,
    fill(params, usedSeed) {
      prompt.control.value = typeof params.prompt === 'string' ? params.prompt : '';
      negative.control.value = typeof params.negative_prompt === 'string' ? params.negative_prompt : '';
      settings.fill(params, usedSeed);
      const refs = (params.images as Array<{ file_id?: string }> | undefined) ?? [];
      images.set(refs.map((r) => r.file_id).filter((x): x is string => typeof x === 'string'));
    },
    addImage: (id) => images.add(id),
    setSeed: (s) => settings.seed.set(s),
  };
}
