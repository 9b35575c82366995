/** Small DOM helpers: elements from a tag, attributes and children; labelled fields with an error slot. */
import { ApiError } from './api.js';

type Child = Node | string | null | undefined | false;
type Attrs = Record<string, string | number | boolean | EventListener | undefined | null>;

export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = String(v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

let ids = 0;
export function uid(prefix: string): string {
  ids += 1;
  return `${prefix}-${ids}`;
}

/** A labelled control with a hint and an error line tied to it (aria-describedby). */
export interface Field<E extends HTMLElement = HTMLElement> {
  wrap: HTMLElement;
  control: E;
  setError(message: string | null): void;
}

export function field<E extends HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement>(label: string, control: E, hint?: string): Field<E> {
  const id = control.id || uid('f');
  control.id = id;
  const err = h('p', { class: 'field-error', id: `${id}-err`, role: 'alert', hidden: true });
  const hintEl = hint ? h('p', { class: 'hint', id: `${id}-hint` }, hint) : null;
  control.setAttribute('aria-describedby', [hintEl ? `${id}-hint` : '', `${id}-err`].filter(Boolean).join(' '));
  const wrap = h('div', { class: 'field' }, h('label', { for: id }, label), control, hintEl, err);
  return {
    wrap,
    control,
    setError(message) {
      err.textContent = message ?? '';
      err.hidden = !message;
      if (message) control.setAttribute('aria-invalid', 'true');
      else control.removeAttribute('aria-invalid');
    },
  };
}

export function input(attrs: Attrs = {}): HTMLInputElement {
  return h('input', attrs);
}

export function select(options: Array<[string, string]>, attrs: Attrs = {}): HTMLSelectElement {
  return h('select', attrs, ...options.map(([value, label]) => h('option', { value }, label)));
}

/**
 * Shows an error where it belongs: beside the field the server named (or whose name the message
 * starts with), else in the form's own error line.
 */
export function showError(err: unknown, fields: Record<string, Field>, formError: HTMLElement): void {
  for (const f of Object.values(fields)) f.setError(null);
  const message = err instanceof Error ? err.message : String(err);
  if (err instanceof ApiError) {
    let placed = false;
    for (const { field: name, message: m } of err.fields) {
      const key = name.split('.')[0] ?? '';
      const target = fields[key];
      if (target) {
        target.setError(`${humanField(key)} ${m}`);
        placed = true;
      }
    }
    if (!placed) {
      // "width and height must be multiples of 16": the first field the message starts with.
      const named = Object.keys(fields).find((k) => new RegExp(`^(${k}|${k.replace('_', ' ')})\\b`, 'i').test(message));
      if (named) {
        fields[named]!.setError(message);
        placed = true;
      }
    }
    setFormError(formError, placed ? 'The server refused some values: see the messages beside them.' : message);
    return;
  }
  setFormError(formError, message);
}

export function setFormError(el: HTMLElement, message: string | null): void {
  el.textContent = message ?? '';
  el.hidden = !message;
}

function humanField(key: string): string {
  return key.replace(/_/g, ' ');
}

/** A value from JSON as text: strings and numbers as they are, anything else as `fallback`. */
export function asText(v: unknown, fallback = ''): string {
  return typeof v === 'string' || typeof v === 'number' ? String(v) : fallback;
}

/** An <img> whose source arrives later (a blob URL fetched with the token). */
export function asyncImage(src: Promise<string>, alt: string, cls = ''): HTMLImageElement {
  const img = h('img', { alt, class: cls, decoding: 'async' });
  src.then((u) => (img.src = u)).catch(() => (img.alt = `${alt} (could not be loaded)`));
  return img;
}
