/**
 * KIAPI_OPENAI_* settings and the public base URL: how many images one OpenAI-style request may
 * ask for, which model a request without `model` gets, and where `url` results point.
 */
import { EnvReader } from '../core/config.js';

export interface OpenAiSettings {
  /** KIAPI_OPENAI_MAX_N: the largest `n`; each image is its own job, so this bounds one request's share of the queue. */
  maxN: number;
  /** KIAPI_OPENAI_DEFAULT_MODEL: the model id (or kiapi alias) used when a request names none. */
  defaultModel: string;
  /** KIAPI_PUBLIC_BASE_URL: the scheme://host[:port] `url` results start with; null = from the request's Host. */
  publicBaseUrl: string | null;
}

export function readOpenAiSettings(env: Record<string, string | undefined>): OpenAiSettings {
  const r = new EnvReader(env);
  const maxN = r.number('KIAPI_OPENAI_MAX_N', 4, { integer: true, min: 1, max: 16 }, 'largest `n` (images per request) on POST /v1/images/generations and /edits');
  const defaultModel = r.string('KIAPI_OPENAI_DEFAULT_MODEL', 'qwen-image', 'model of an OpenAI-style image request that names none (qwen-image, qwen-image-edit, ideogram-4 or a kiapi alias)');
  const base = r.optionalString('KIAPI_PUBLIC_BASE_URL', 'scheme://host[:port][/prefix] that `url` results of the OpenAI image routes start with (default: from the request Host)');
  let publicBaseUrl: string | null = null;
  if (base !== null && base !== '') {
    try {
      const u = new URL(base);
      if (!['http:', 'https:'].includes(u.protocol)) throw new Error('not http(s)');
      publicBaseUrl = base.replace(/\/+$/, '');
    } catch {
      r.problems.push(`KIAPI_PUBLIC_BASE_URL: ${JSON.stringify(base)} is not an http(s) URL (e.g. https://kiapi.lan:8000)`);
    }
  }
  r.check();
  return { maxN, defaultModel, publicBaseUrl };
}
