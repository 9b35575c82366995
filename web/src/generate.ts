/** The Generate tab: Qwen text-to-image, and img2img when an image is dropped in. */
import { getJson, uploadFile, type FileRecord, type Page } from './api.js';
import { optionalNumber, outputSettings } from './common-fields.js';
import { field, h, input, setFormError, showError, type Field } from './dom.js';
import { imagePicker } from './images.js';
import { submitJob, type JobPanel } from './job-panel.js';

export const GENERATE_PATH = '/v1/image/qwen/generate';

export interface GenerateForm {
  el: HTMLElement;
  fill(params: Record<string, unknown>, seed: number | null): void;
  setSeed(seed: number): void;
  setInitImage(fileId: string): void;
  refreshLoras(): Promise<void>;
}

interface LoraChoice {
  fileId: string;
  filename: string;
  check: HTMLInputElement;
  scale: HTMLInputElement;
}

export function generateForm(panel: JobPanel): GenerateForm {
  const prompt = field('Prompt', h('textarea', { rows: 3, required: true, placeholder: 'a red fox reading a newspaper, the headline says KIAPI' }), 'Describe the image you want.');
  const negative = field('Negative prompt', h('textarea', { rows: 2, placeholder: 'blurry, low quality' }), 'Optional: what to keep out of the image.');
  const settings = outputSettings('More steps: slower, sometimes better. Empty: the server default (30).');
  const { size } = settings;
  const strength = field(
    'Image strength',
    input({ type: 'range', min: 0, max: 1, step: 0.05, value: 0.6 }),
    'Higher keeps more of your image; lower follows the prompt more freely (0 ignores the image).',
  );
  const strengthOut = h('output', { for: strength.control.id }, '0.60');
  strength.control.addEventListener('input', () => (strengthOut.textContent = Number(strength.control.value).toFixed(2)));
  strength.wrap.querySelector('label')?.append(' ', strengthOut);
  const strengthBox = h('div', { hidden: true }, strength.wrap);
  const init = imagePicker({
    label: 'Start from an image (img2img, optional)',
    multiple: false,
    hint: 'Drop an image here to start from it, or choose one.',
    onChange: () => (strengthBox.hidden = init.ids().length === 0),
  });

  const loraList = h('div', { class: 'lora-list' });
  const loraError = h('p', { class: 'field-error', role: 'alert', hidden: true });
  let loras: LoraChoice[] = [];
  /** LoRAs a reused job had, ticked once the list has loaded. */
  let wanted: Map<string, number> | null = null;
  const loraUpload = h('input', { type: 'file', accept: '.safetensors', id: 'lora-upload', class: 'visually-hidden' });
  loraUpload.addEventListener('change', () => {
    const file = loraUpload.files?.[0];
    loraUpload.value = '';
    if (!file) return;
    loraError.hidden = true;
    uploadFile(file, file.name)
      .then(async (rec) => {
        await refreshLoras();
        // Just uploaded: meant to be used.
        const added = loras.find((l) => l.fileId === rec.file_id);
        if (added) added.check.checked = true;
      })
      .catch((err: unknown) => {
        loraError.textContent = `${file.name}: ${err instanceof Error ? err.message : String(err)}`;
        loraError.hidden = false;
      });
  });
  const loraBox = h(
    'details',
    { class: 'loras' },
    h('summary', {}, 'LoRA adapters'),
    h('p', { class: 'hint' }, 'Tick uploaded .safetensors adapters to apply them (up to 4); scale 1 applies one at full weight.'),
    loraList,
    h('label', { for: 'lora-upload', class: 'button' }, 'Upload a LoRA…'),
    loraUpload,
    loraError,
  );

  async function refreshLoras(): Promise<void> {
    try {
      const page = await getJson<Page<FileRecord>>('/v1/files?limit=200&content_type=application/octet-stream');
      const checked = new Set(loras.filter((l) => l.check.checked).map((l) => l.fileId));
      const want = wanted;
      wanted = null;
      loras = page.data
        .filter((f) => f.filename.toLowerCase().endsWith('.safetensors'))
        .map((f) => ({
          fileId: f.file_id,
          filename: f.filename,
          check: h('input', { type: 'checkbox', id: `lora-${f.file_id}`, checked: want ? want.has(f.file_id) : checked.has(f.file_id) }),
          scale: h('input', { type: 'number', step: 0.1, value: want?.get(f.file_id) ?? 1, 'aria-label': `Scale of ${f.filename}`, class: 'scale' }),
        }));
      loraList.replaceChildren(
        ...(loras.length === 0
          ? [h('p', { class: 'hint' }, 'No LoRA uploaded yet.')]
          : loras.map((l) => h('div', { class: 'row inline' }, l.check, h('label', { for: l.check.id }, l.filename), l.scale))),
      );
    } catch {
      // Shown when the person opens the section again; the token prompt covers a 401.
    }
  }

  const formError = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Generate');
  const fields: Record<string, Field> = {
    prompt,
    negative_prompt: negative,
    ...settings.fields,
    image_strength: strength,
  };
  // A message about height or width is shown by the size preset when custom sizes are hidden.
  const form = h(
    'form',
    { class: 'gen-form', 'aria-label': 'Generate an image', novalidate: true },
    prompt.wrap,
    negative.wrap,
    init.el,
    strengthBox,
    ...settings.rows,
    loraBox,
    formError,
    h('div', { class: 'actions' }, submit),
  );

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    setFormError(formError, null);
    for (const f of Object.values(fields)) f.setError(null);
    init.setError(null);
    if (!prompt.control.value.trim()) {
      prompt.setError('Write a prompt first: it says what the image shows.');
      prompt.control.focus();
      return;
    }
    const initId = init.ids()[0];
    const body: Record<string, unknown> = {
      prompt: prompt.control.value,
      ...(negative.control.value.trim() ? { negative_prompt: negative.control.value } : {}),
      ...settings.body(),
      ...(initId ? { init_image: { type: 'file_id', file_id: initId }, image_strength: Number(strength.control.value) } : {}),
    };
    const chosen = loras.filter((l) => l.check.checked);
    if (chosen.length > 0) body.loras = chosen.map((l) => ({ file: { type: 'file_id', file_id: l.fileId }, scale: Number(l.scale.value) }));
    submit.disabled = true;
    submitJob(GENERATE_PATH, body)
      .then((jobId) => panel.track(jobId, initId ? 'img2img' : 'Generate', initId ? [initId] : [], optionalNumber(settings.steps)))
      .catch((err: unknown) => {
        if (err instanceof Error && /init_image/.test(err.message)) init.setError(err.message);
        if (err instanceof Error && /lora/i.test(err.message)) {
          loraError.textContent = err.message;
          loraError.hidden = false;
          loraBox.open = true;
        }
        showError(err, fields, formError);
        if (size.fields.size.control.value !== 'custom' && /\b(width|height)\b/.test(err instanceof Error ? err.message : '')) {
          size.fields.size.setError(err instanceof Error ? err.message : String(err));
        }
      })
      .finally(() => (submit.disabled = false));
  });

  return {
    el: form,
    fill(params, usedSeed) {
      prompt.control.value = typeof params.prompt === 'string' ? params.prompt : '';
      negative.control.value = typeof params.negative_prompt === 'string' ? params.negative_prompt : '';
      settings.fill(params, usedSeed);
      const initRef = params.init_image as { file_id?: string } | null | undefined;
      init.set(initRef?.file_id ? [initRef.file_id] : []);
      const refs = (params.loras as Array<{ file?: { file_id?: string }; scale?: number }> | undefined) ?? [];
      wanted = new Map(refs.filter((r) => typeof r.file?.file_id === 'string').map((r) => [r.file!.file_id!, r.scale ?? 1]));
      for (const l of loras) l.check.checked = wanted.has(l.fileId);
      if (typeof params.image_strength === 'number') {
        strength.control.value = String(params.image_strength);
        strengthOut.textContent = params.image_strength.toFixed(2);
      }
    },
    setSeed: (s) => settings.seed.set(s),
    setInitImage: (id) => init.set([id]),
    refreshLoras,
  };
}
