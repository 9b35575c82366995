/** Controls the generation forms share: output size (presets or custom), seed, steps, guidance, format. */
import { field, h, input, select, uid, type Field } from './dom.js';

export const SIZE_PRESETS: Array<[string, string]> = [
  ['1024x1024', 'Square — 1024 × 1024'],
  ['512x512', 'Small square — 512 × 512'],
  ['1024x768', 'Landscape 4:3 — 1024 × 768'],
  ['768x1024', 'Portrait 3:4 — 768 × 1024'],
  ['1344x768', 'Wide 16:9 — 1344 × 768'],
  ['768x1344', 'Tall 9:16 — 768 × 1344'],
  ['custom', 'Custom…'],
];

export interface SizeControl {
  el: HTMLElement;
  fields: { size: Field<HTMLSelectElement>; width: Field<HTMLInputElement>; height: Field<HTMLInputElement> };
  value(): { width: number; height: number };
  set(width: number, height: number): void;
  onChange(fn: () => void): void;
}

export function sizeControl(defaultSize = '1024x1024', presets = SIZE_PRESETS): SizeControl {
  const preset = field('Size', select(presets));
  preset.control.value = defaultSize;
  const width = field('Width (px)', input({ type: 'number', min: 16, step: 16, value: 1024, inputmode: 'numeric' }), 'A multiple of 16.');
  const height = field('Height (px)', input({ type: 'number', min: 16, step: 16, value: 1024, inputmode: 'numeric' }), 'A multiple of 16.');
  const custom = h('div', { class: 'row', hidden: true }, width.wrap, height.wrap);
  const listeners: Array<() => void> = [];
  const sync = () => {
    const v = preset.control.value;
    custom.hidden = v !== 'custom';
    if (v !== 'custom') {
      const [w, hh] = v.split('x').map(Number);
      width.control.value = String(w);
      height.control.value = String(hh);
    }
    for (const fn of listeners) fn();
  };
  preset.control.addEventListener('change', sync);
  width.control.addEventListener('input', () => listeners.forEach((fn) => fn()));
  height.control.addEventListener('input', () => listeners.forEach((fn) => fn()));
  sync();
  return {
    el: h('div', {}, preset.wrap, custom),
    fields: { size: preset, width, height },
    value: () => ({ width: Number(width.control.value), height: Number(height.control.value) }),
    set(w, hh) {
      const key = `${w}x${hh}`;
      preset.control.value = presets.some(([k]) => k === key) ? key : 'custom';
      sync();
      width.control.value = String(w);
      height.control.value = String(hh);
      for (const fn of listeners) fn();
    },
    onChange: (fn) => listeners.push(fn),
  };
}

export interface SeedControl {
  el: HTMLElement;
  field: Field<HTMLInputElement>;
  /** null: random. */
  value(): number | null;
  set(seed: number | null): void;
}

export function seedControl(): SeedControl {
  const name = uid('seed');
  const random = h('input', { type: 'radio', name, value: 'random', id: `${name}-r`, checked: true });
  const fixed = h('input', { type: 'radio', name, value: 'fixed', id: `${name}-f` });
  const seed = field('Seed', input({ type: 'number', min: 0, step: 1, inputmode: 'numeric', disabled: true, placeholder: 'random' }), 'The same seed with the same settings gives the same image.');
  const sync = () => {
    seed.control.disabled = !fixed.checked;
    if (fixed.checked && seed.control.value === '') seed.control.value = String(Math.floor(Math.random() * 2 ** 31));
  };
  random.addEventListener('change', sync);
  fixed.addEventListener('change', sync);
  const el = h(
    'fieldset',
    { class: 'seed' },
    h('legend', {}, 'Seed'),
    h('div', { class: 'row inline' }, h('label', {}, random, ' Random'), h('label', {}, fixed, ' Fixed')),
    seed.wrap,
  );
  // The visible legend already says "Seed": the number's own label stays for screen readers.
  seed.wrap.querySelector('label')?.classList.add('visually-hidden');
  return {
    el,
    field: seed,
    value: () => (fixed.checked && seed.control.value !== '' ? Number(seed.control.value) : null),
    set(v) {
      if (v === null) {
        random.checked = true;
        seed.control.value = '';
      } else {
        fixed.checked = true;
        seed.control.value = String(v);
      }
      sync();
    },
  };
}

export function formatField(): Field<HTMLSelectElement> {
  return field('Format', select([['png', 'PNG (lossless)'], ['jpeg', 'JPEG (small)'], ['webp', 'WebP (small)']]));
}

export function stepsField(hint: string): Field<HTMLInputElement> {
  return field('Steps', input({ type: 'number', min: 1, step: 1, inputmode: 'numeric', placeholder: 'server default' }), hint);
}

export function guidanceField(): Field<HTMLInputElement> {
  return field('Guidance', input({ type: 'number', min: 0, step: 0.5, inputmode: 'decimal', placeholder: 'server default' }), 'Higher follows the prompt more strictly. Empty: the server default.');
}

/** A number field's value, or undefined when left empty (the server's default applies). */
export function optionalNumber(f: Field<HTMLInputElement>): number | undefined {
  return f.control.value === '' ? undefined : Number(f.control.value);
}

export function setOptional(f: Field<HTMLInputElement>, v: unknown): void {
  f.control.value = typeof v === 'number' ? String(v) : '';
}

/** The output settings the two Qwen forms share: size, format, steps, guidance and seed. */
export interface OutputSettings {
  /** The rows to place in the form, in order. */
  rows: HTMLElement[];
  /** The fields by the request field a server message names. */
  fields: Record<string, Field>;
  size: SizeControl;
  steps: Field<HTMLInputElement>;
  seed: SeedControl;
  /** The request's settings; fields left empty are left out, so the server's defaults apply. */
  body(): Record<string, unknown>;
  /** Shows a finished job's settings again ("use these settings again"). */
  fill(params: Record<string, unknown>, usedSeed: number | null): void;
}

export function outputSettings(stepsHint: string): OutputSettings {
  const size = sizeControl();
  const steps = stepsField(stepsHint);
  const guidance = guidanceField();
  const seed = seedControl();
  const format = formatField();
  return {
    rows: [h('div', { class: 'row' }, size.el, format.wrap), h('div', { class: 'row' }, steps.wrap, guidance.wrap), seed.el],
    fields: { width: size.fields.width, height: size.fields.height, steps, guidance, seed: seed.field, format },
    size,
    steps,
    seed,
    body() {
      const { width, height } = size.value();
      return {
        width,
        height,
        ...(optionalNumber(steps) !== undefined ? { steps: optionalNumber(steps) } : {}),
        ...(optionalNumber(guidance) !== undefined ? { guidance: optionalNumber(guidance) } : {}),
        ...(seed.value() !== null ? { seed: seed.value() } : {}),
        format: format.control.value,
      };
    },
    fill(params, usedSeed) {
      if (typeof params.width === 'number' && typeof params.height === 'number') size.set(params.width, params.height);
      setOptional(steps, params.steps);
      setOptional(guidance, params.guidance);
      seed.set(usedSeed);
      if (typeof params.format === 'string') format.control.value = params.format;
    },
  };
}
