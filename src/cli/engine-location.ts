/** Where the engine is: the worker package in this checkout, and the Python the server would run it with. */
import fs from 'node:fs';
import path from 'node:path';
import type { Config } from '../core/config.js';
import { PACKAGE_ROOT } from '../core/package-info.js';
import { enginePaths } from '../core/setup/venv.js';

/** The `kiapi_worker` package, run from here (first on PYTHONPATH) like the server does. */
export const WORKER_DIR = path.join(PACKAGE_ROOT, 'worker');

export type EngineSource = 'KIAPI_PYTHON' | 'venv';

/** The same choice as the server's `selectEngine`: KIAPI_PYTHON, else the venv kiapi activate made. */
export function enginePython(config: Config): { python: string | null; source: EngineSource | null } {
  if (config.python) return { python: config.python, source: 'KIAPI_PYTHON' };
  const venv = enginePaths(config.dataDir).python;
  return fs.existsSync(venv) ? { python: venv, source: 'venv' } : { python: null, source: null };
}
