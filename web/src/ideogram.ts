/**
 * The Ideogram tab: a caption builder. The caption's parts are filled in as fields, each element's
 * box is drawn on a canvas of the output's aspect ratio (or typed as left/top/right/bottom),
 * colours are picked, and the caption JSON is shown live with the problems the server's own
 * verifier finds (POST …/captions/validate) as it is written.
 *
 * Boxes are stored as the model reads them, [y_min, x_min, y_max, x_max] on 0..1000, and shown the
 * way a person thinks of a box: left, top, right, bottom.
 */
import { ApiError, needsToken, postJson } from './api.js';
import { seedControl, setOptional, sizeControl, formatField } from './common-fields.js';
import { field, h, input, select, setFormError, showError, type Field } from './dom.js';
import { submitJob, type JobPanel } from './job-panel.js';

export const IDEOGRAM_PATH = '/v1/image/ideogram4/generate';
const VALIDATE_PATH = '/v1/image/ideogram4/captions/validate';

type BBox = [number, number, number, number];

interface CaptionElement {
  type: 'text' | 'obj';
  bbox: BBox | null;
  text: string;
  desc: string;
  palette: string[];
}

interface CaptionState {
  high: string;
  aesthetics: string;
  lighting: string;
  styleKind: 'photo' | 'art_style';
  styleValue: string;
  medium: string;
  palette: string[];
  background: string;
  elements: CaptionElement[];
}

const PRESETS: Record<string, { label: string; size: [number, number]; state: CaptionState }> = {
  card: {
    label: 'Greeting card',
    size: [1024, 1024],
    state: {
      high: 'A greeting card with the word HELLO above a small paper bird.',
      aesthetics: 'clean, minimal, warm',
      lighting: 'soft studio light',
      styleKind: 'photo',
      styleValue: 'flat lay, top-down',
      medium: 'photograph',
      palette: ['#F4E9D8', '#1B3A4B', '#E07A5F'],
      background: 'Cream paper texture.',
      elements: [
        { type: 'text', bbox: [200, 150, 400, 850], text: 'HELLO', desc: 'Bold navy serif letters.', palette: ['#1B3A4B'] },
        { type: 'obj', bbox: [500, 350, 800, 650], text: '', desc: 'A folded coral paper bird.', palette: [] },
      ],
    },
  },
  poster: {
    label: 'Concert poster',
    size: [768, 1024],
    state: {
      high: 'A bold concert poster for a jazz night.',
      aesthetics: 'retro, high contrast, graphic',
      lighting: 'flat',
      styleKind: 'art_style',
      styleValue: 'screen print',
      medium: 'poster',
      palette: ['#101820', '#F2AA4C', '#FFFFFF'],
      background: 'Deep black with a subtle grain.',
      elements: [
        { type: 'text', bbox: [80, 100, 260, 900], text: 'JAZZ NIGHT', desc: 'Huge orange condensed letters.', palette: ['#F2AA4C'] },
        { type: 'obj', bbox: [300, 250, 800, 750], text: '', desc: 'A white saxophone silhouette.', palette: ['#FFFFFF'] },
        { type: 'text', bbox: [850, 200, 930, 800], text: 'FRIDAY 9 PM', desc: 'Small white sans-serif caps.', palette: [] },
      ],
    },
  },
  blank: {
    label: 'Empty caption',
    size: [1024, 1024],
    state: { high: '', aesthetics: '', lighting: '', styleKind: 'photo', styleValue: '', medium: '', palette: [], background: '', elements: [] },
  },
};

/** The caption as the model reads it: keys in the order the verifier expects. */
export function buildCaption(s: CaptionState): Record<string, unknown> {
  const style: Record<string, unknown> = {};
  const put = (key: string, v: string) => {
    if (v.trim()) style[key] = v;
  };
  put('aesthetics', s.aesthetics);
  put('lighting', s.lighting);
  if (s.styleKind === 'photo') {
    put('photo', s.styleValue);
    put('medium', s.medium);
  } else {
    put('medium', s.medium);
    put('art_style', s.styleValue);
  }
  if (s.palette.length > 0) style.color_palette = [...s.palette];
  const elements = s.elements.map((e) => {
    const out: Record<string, unknown> = { type: e.type };
    if (e.bbox) out.bbox = [...e.bbox];
    if (e.type === 'text') out.text = e.text;
    out.desc = e.desc;
    if (e.palette.length > 0) out.color_palette = [...e.palette];
    return out;
  });
  return {
    high_level_description: s.high,
    ...(Object.keys(style).length > 0 ? { style_description: style } : {}),
    compositional_deconstruction: { background: s.background, elements },
  };
}

function readState(caption: Record<string, unknown>): CaptionState {
  const str = (v: unknown) => (typeof v === 'string' ? v : '');
  const style = (caption.style_description ?? {}) as Record<string, unknown>;
  const comp = (caption.compositional_deconstruction ?? {}) as Record<string, unknown>;
  const colours = (v: unknown) => (Array.isArray(v) ? v.filter((c): c is string => typeof c === 'string') : []);
  return {
    high: str(caption.high_level_description),
    aesthetics: str(style.aesthetics),
    lighting: str(style.lighting),
    styleKind: 'art_style' in style ? 'art_style' : 'photo',
    styleValue: str(style.art_style ?? style.photo),
    medium: str(style.medium),
    palette: colours(style.color_palette),
    background: str(comp.background),
    elements: (Array.isArray(comp.elements) ? (comp.elements as Array<Record<string, unknown>>) : []).map((e) => ({
      type: e.type === 'text' ? 'text' : 'obj',
      bbox: Array.isArray(e.bbox) && e.bbox.length === 4 ? (e.bbox.map(Number) as BBox) : null,
      text: str(e.text),
      desc: str(e.desc),
      palette: colours(e.color_palette),
    })),
  };
}

/** Indented JSON with short lists (a box, a palette) kept on one line, as a person reads them. */
function prettyCaption(caption: Record<string, unknown>): string {
  return JSON.stringify(caption, null, 2).replace(/\[\s+([^[\]{}]*?)\s+\]/g, (_m, inner: string) => `[${inner.split(/,\s+/).join(', ')}]`);
}

export interface IdeogramForm {
  el: HTMLElement;
  fill(params: Record<string, unknown>, seed: number | null): void;
  setSeed(seed: number): void;
  /** Checks the caption again (after the token was entered). */
  revalidate(): void;
}

const IDEOGRAM_SIZES: Array<[string, string]> = [
  ['1024x1024', 'Square — 1024 × 1024'],
  ['512x512', 'Small square — 512 × 512'],
  ['768x1024', 'Portrait 3:4 — 768 × 1024'],
  ['1024x768', 'Landscape 4:3 — 1024 × 768'],
  ['1344x768', 'Wide 16:9 — 1344 × 768'],
  ['custom', 'Custom…'],
];

export function ideogramForm(panel: JobPanel): IdeogramForm {
  let state: CaptionState = structuredClone(PRESETS.card!.state);
  /** The element whose box the next drawing replaces (null: a drawing adds an element). */
  let armed: number | null = null;

  const presetSelect = field('Start from', select(Object.entries(PRESETS).map(([k, p]) => [k, p.label])), 'Replaces the caption below.');
  const high = field('High-level description', h('textarea', { rows: 2 }), 'One sentence: what the whole image is.');
  const aesthetics = field('Aesthetics', input({ type: 'text' }));
  const lighting = field('Lighting', input({ type: 'text' }));
  const styleKind = field('Style kind', select([['photo', 'Photo (camera, lens)'], ['art_style', 'Art style']]));
  const styleValue = field('Photo / art style', input({ type: 'text' }), 'For a photo: camera and lens; for art: the style (watercolour, screen print…).');
  const medium = field('Medium', input({ type: 'text' }));
  const palette = paletteEditor('Palette', 16, () => state.palette, (p) => ((state.palette = p), changed()));
  const background = field('Background', h('textarea', { rows: 2 }));

  const canvas = h('div', { class: 'bbox-canvas', role: 'img', 'aria-label': 'Layout of the image: drag to draw a box' });
  const canvasHint = h('p', { class: 'hint', id: 'bbox-hint' }, 'Drag on the canvas to add an element with that box. Each box can also be typed in its element below.');
  const elementList = h('ol', { class: 'elements' });
  const addElement = h('button', { type: 'button' }, 'Add an element');
  const jsonView = h('pre', { class: 'caption-json', tabindex: 0, 'aria-label': 'Caption JSON' });
  const problems = h('ul', { class: 'problems' });
  const verdict = h('p', { class: 'verdict', 'aria-live': 'polite' });

  const size = sizeControl('1024x1024', IDEOGRAM_SIZES);
  const preset = field('Quality preset', select([['V4_TURBO_12', 'Turbo — 12 steps'], ['V4_DEFAULT_20', 'Default — 20 steps'], ['V4_QUALITY_48', 'Quality — 48 steps']]));
  const seed = seedControl();
  const format = formatField();
  const strict = h('input', { type: 'checkbox', id: 'strict', checked: true });
  const formError = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Generate with Ideogram 4');
  const fields: Record<string, Field> = { width: size.fields.width, height: size.fields.height, seed: seed.field, preset, format, prompt: high };

  const textFields: Array<[Field<HTMLInputElement | HTMLTextAreaElement | HTMLSelectElement>, keyof CaptionState]> = [
    [high, 'high'],
    [aesthetics, 'aesthetics'],
    [lighting, 'lighting'],
    [styleValue, 'styleValue'],
    [medium, 'medium'],
    [background, 'background'],
  ];
  for (const [f, key] of textFields) {
    f.control.addEventListener('input', () => {
      (state as unknown as Record<string, unknown>)[key] = f.control.value;
      changed(false);
    });
  }
  styleKind.control.addEventListener('change', () => {
    state.styleKind = styleKind.control.value === 'art_style' ? 'art_style' : 'photo';
    changed(false);
  });
  presetSelect.control.addEventListener('change', () => {
    const p = PRESETS[presetSelect.control.value];
    if (!p) return;
    state = structuredClone(p.state);
    size.set(p.size[0], p.size[1]);
    loadFields();
  });
  addElement.addEventListener('click', () => {
    state.elements.push({ type: 'text', bbox: [400, 250, 600, 750], text: '', desc: '', palette: [] });
    changed();
    elementList.querySelector<HTMLElement>('li:last-child select')?.focus();
  });
  size.onChange(() => drawCanvas());

  function loadFields(): void {
    high.control.value = state.high;
    aesthetics.control.value = state.aesthetics;
    lighting.control.value = state.lighting;
    styleKind.control.value = state.styleKind;
    styleValue.control.value = state.styleValue;
    medium.control.value = state.medium;
    background.control.value = state.background;
    palette.render();
    changed();
  }

  /** After any edit: the JSON, the canvas, the validation; the element list only when its shape changed. */
  function changed(rebuildElements = true): void {
    if (rebuildElements) renderElements();
    drawCanvas();
    jsonView.textContent = prettyCaption(buildCaption(state));
    scheduleValidation();
  }

  let validationTimer: number | undefined;
  let validationRun = 0;
  function scheduleValidation(): void {
    window.clearTimeout(validationTimer);
    validationTimer = window.setTimeout(() => void validate(), 250);
  }
  async function validate(): Promise<void> {
    const run = ++validationRun;
    if (needsToken()) {
      verdict.textContent = 'Enter the access token (Token button, top right) to have the caption checked.';
      delete verdict.dataset.valid;
      return;
    }
    verdict.textContent = 'Checking…';
    delete verdict.dataset.valid;
    try {
      const answer = await postJson<{ valid: boolean; problems: string[] }>(VALIDATE_PATH, { prompt: buildCaption(state) });
      if (run !== validationRun) return;
      problems.replaceChildren(...answer.problems.map((p) => h('li', {}, p)));
      verdict.textContent = answer.valid ? 'The caption passes strict validation.' : `${answer.problems.length} problem${answer.problems.length === 1 ? '' : 's'} (strict validation would refuse it):`;
      verdict.dataset.valid = String(answer.valid);
      markElementProblems(answer.problems);
    } catch (err) {
      if (run !== validationRun) return;
      verdict.dataset.valid = 'false';
      verdict.textContent = `The caption could not be checked: ${err instanceof ApiError ? err.message : String(err)}`;
      problems.replaceChildren();
    }
  }
  function markElementProblems(list: string[]): void {
    elementList.querySelectorAll<HTMLElement>('.element-problems').forEach((el, i) => {
      const mine = list.filter((p) => p.startsWith(`elements[${i}]`));
      el.textContent = mine.join(' · ');
      el.hidden = mine.length === 0;
    });
  }

  function renderElements(): void {
    elementList.replaceChildren(...state.elements.map((el, i) => elementCard(el, i)));
  }

  function elementCard(el: CaptionElement, i: number): HTMLElement {
    const n = i + 1;
    const type = field(`Element ${n} type`, select([['text', 'Text'], ['obj', 'Object']]));
    type.control.value = el.type;
    const text = field(`Element ${n} text`, input({ type: 'text', value: el.text }), 'The exact words to render.');
    text.wrap.hidden = el.type !== 'text';
    const desc = field(`Element ${n} description`, input({ type: 'text', value: el.desc }));
    type.control.addEventListener('change', () => {
      el.type = type.control.value === 'text' ? 'text' : 'obj';
      text.wrap.hidden = el.type !== 'text';
      changed(false);
    });
    text.control.addEventListener('input', () => ((el.text = text.control.value), changed(false)));
    desc.control.addEventListener('input', () => ((el.desc = desc.control.value), changed(false)));
    // Shown left, top, right, bottom; stored [y_min, x_min, y_max, x_max].
    const boxFields = (['Left', 'Top', 'Right', 'Bottom'] as const).map((side, k) => {
      const index = [1, 0, 3, 2][k]!;
      const f = field(`${side}`, input({ type: 'number', min: 0, max: 1000, step: 1, value: el.bbox ? el.bbox[index] : '', inputmode: 'numeric', 'aria-label': `Element ${n} box ${side.toLowerCase()} (0 to 1000)` }));
      f.control.addEventListener('input', () => {
        const v = f.control.value === '' ? 0 : Math.round(Number(f.control.value));
        el.bbox = el.bbox ?? [0, 0, 1000, 1000];
        el.bbox[index] = v;
        changed(false);
      });
      return f;
    });
    const elPalette = paletteEditor(`Element ${n} colours`, 5, () => el.palette, (p) => ((el.palette = p), changed(false)));
    elPalette.render();
    const card = h(
      'li',
      { class: `element${armed === i ? ' armed' : ''}`, 'data-index': i },
      h('div', { class: 'row' }, type.wrap, text.wrap),
      desc.wrap,
      h('fieldset', { class: 'box' }, h('legend', {}, `Box of element ${n} (0–1000 from the top-left corner)`), h('div', { class: 'row four' }, ...boxFields.map((f) => f.wrap))),
      elPalette.el,
      h('p', { class: 'field-error element-problems', hidden: true }),
      h(
        'div',
        { class: 'actions' },
        h('button', { type: 'button', 'aria-pressed': armed === i ? 'true' : 'false', onclick: () => ((armed = armed === i ? null : i), renderElements(), drawCanvas()) }, armed === i ? 'Drawing its box… (click to stop)' : 'Draw its box'),
        h('button', { type: 'button', class: 'danger', onclick: () => (state.elements.splice(i, 1), (armed = null), changed()) }, `Remove element ${n}`),
      ),
    );
    return card;
  }

  function drawCanvas(): void {
    const { width, height } = size.value();
    if (width > 0 && height > 0) canvas.style.aspectRatio = `${width} / ${height}`;
    canvas.replaceChildren(
      ...state.elements.map((el, i) => {
        if (!el.bbox) return h('span', { hidden: true });
        const [y0, x0, y1, x1] = el.bbox;
        const box = h('div', { class: `bbox ${el.type}${armed === i ? ' armed' : ''}`, 'aria-hidden': 'true' }, h('span', {}, `${i + 1} ${el.type === 'text' ? el.text || 'text' : el.desc.slice(0, 24) || 'object'}`));
        box.style.left = `${x0 / 10}%`;
        box.style.top = `${y0 / 10}%`;
        box.style.width = `${Math.max(0, x1 - x0) / 10}%`;
        box.style.height = `${Math.max(0, y1 - y0) / 10}%`;
        return box;
      }),
    );
  }

  // Drawing: pointer down, drag, up. Coordinates are per-mille of the canvas, as the caption wants.
  let drag: { x: number; y: number; ghost: HTMLElement } | null = null;
  const at = (e: PointerEvent) => {
    const r = canvas.getBoundingClientRect();
    const clamp = (v: number) => Math.min(1000, Math.max(0, Math.round(v)));
    return { x: clamp(((e.clientX - r.left) / r.width) * 1000), y: clamp(((e.clientY - r.top) / r.height) * 1000) };
  };
  canvas.addEventListener('pointerdown', (e) => {
    e.preventDefault();
    const p = at(e);
    const ghost = h('div', { class: 'bbox ghost' });
    canvas.append(ghost);
    drag = { ...p, ghost };
    canvas.setPointerCapture(e.pointerId);
  });
  canvas.addEventListener('pointermove', (e) => {
    if (!drag) return;
    const p = at(e);
    Object.assign(drag.ghost.style, {
      left: `${Math.min(p.x, drag.x) / 10}%`,
      top: `${Math.min(p.y, drag.y) / 10}%`,
      width: `${Math.abs(p.x - drag.x) / 10}%`,
      height: `${Math.abs(p.y - drag.y) / 10}%`,
    });
  });
  canvas.addEventListener('pointerup', (e) => {
    if (!drag) return;
    const p = at(e);
    const box: BBox = [Math.min(p.y, drag.y), Math.min(p.x, drag.x), Math.max(p.y, drag.y), Math.max(p.x, drag.x)];
    drag.ghost.remove();
    drag = null;
    if (box[2] - box[0] < 10 || box[3] - box[1] < 10) return; // a click, not a box
    const target = armed !== null ? state.elements[armed] : undefined;
    if (target) target.bbox = box;
    else state.elements.push({ type: state.elements.length === 0 ? 'text' : 'obj', bbox: box, text: '', desc: '', palette: [] });
    armed = null;
    changed();
  });

  const form = h(
    'form',
    { class: 'gen-form ideogram', 'aria-label': 'Ideogram 4 caption builder', novalidate: true },
    presetSelect.wrap,
    high.wrap,
    h(
      'fieldset',
      {},
      h('legend', {}, 'Style'),
      h('div', { class: 'row' }, aesthetics.wrap, lighting.wrap),
      h('div', { class: 'row' }, styleKind.wrap, styleValue.wrap, medium.wrap),
      palette.el,
    ),
    background.wrap,
    h(
      'fieldset',
      { class: 'boxes' },
      h('legend', {}, 'Elements and their boxes'),
      canvasHint,
      // The canvas beside the caption it makes and the server's verdict on it.
      h(
        'div',
        { class: 'canvas-row' },
        h('div', { class: 'canvas-wrap' }, canvas),
        h('section', { class: 'caption-check', 'aria-label': 'Caption check' }, h('h3', {}, 'Caption JSON (live)'), verdict, problems, jsonView),
      ),
      elementList,
      addElement,
    ),
    h('fieldset', {}, h('legend', {}, 'Output'), h('div', { class: 'row' }, size.el, preset.wrap, format.wrap), seed.el, h('label', { class: 'inline' }, strict, ' Strict caption validation (refuse a caption with problems)')),
    formError,
    h('div', { class: 'actions' }, submit),
  );
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    setFormError(formError, null);
    const { width, height } = size.value();
    const body: Record<string, unknown> = {
      prompt: buildCaption(state),
      preset: preset.control.value,
      width,
      height,
      ...(seed.value() !== null ? { seed: seed.value() } : {}),
      format: format.control.value,
      strict_caption_validation: strict.checked,
    };
    submit.disabled = true;
    submitJob(IDEOGRAM_PATH, body)
      .then((jobId) => panel.track(jobId, 'Ideogram 4', [], Number(/_(\d+)$/.exec(preset.control.value)?.[1] ?? 20)))
      .catch((err: unknown) => showError(err, fields, formError))
      .finally(() => (submit.disabled = false));
  });
  loadFields();
  return {
    el: form,
    fill(params, usedSeed) {
      if (params.prompt && typeof params.prompt === 'object') state = readState(params.prompt as Record<string, unknown>);
      if (typeof params.width === 'number' && typeof params.height === 'number') size.set(params.width, params.height);
      if (typeof params.preset === 'string') preset.control.value = params.preset;
      if (typeof params.format === 'string') format.control.value = params.format;
      strict.checked = params.strict_caption_validation === true;
      seed.set(usedSeed);
      setOptional(seed.field, usedSeed);
      loadFields();
    },
    setSeed: (s) => seed.set(s),
    revalidate: () => void validate(),
  };
}

interface PaletteEditor {
  el: HTMLElement;
  render(): void;
}

/** A list of colour pickers (uppercase #RRGGBB, as the caption wants) with add and remove. */
function paletteEditor(label: string, max: number, get: () => string[], set: (p: string[]) => void): PaletteEditor {
  const list = h('div', { class: 'palette' });
  const add = h('button', { type: 'button', class: 'small' }, 'Add colour');
  const render = () => {
    const colours = get();
    list.replaceChildren(
      ...colours.map((c, i) => {
        const picker = h('input', { type: 'color', value: c.toLowerCase(), 'aria-label': `${label}: colour ${i + 1}` });
        picker.addEventListener('input', () => {
          const next = [...get()];
          next[i] = picker.value.toUpperCase();
          set(next);
        });
        return h(
          'span',
          { class: 'swatch' },
          picker,
          h('button', { type: 'button', class: 'small', 'aria-label': `Remove ${label.toLowerCase()} colour ${i + 1}`, onclick: () => (set(get().filter((_, k) => k !== i)), render()) }, '✕'),
        );
      }),
    );
    add.disabled = colours.length >= max;
  };
  add.addEventListener('click', () => {
    set([...get(), '#808080']);
    render();
  });
  return { el: h('div', { class: 'palette-editor' }, h('span', { class: 'label' }, label), list, add), render };
}
