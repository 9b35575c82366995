/**
 * Where a model's weights are and whether they are complete, without touching the network.
 * A model setting may name a Hugging Face repo (looked up in the standard HF cache, honouring
 * HF_HUB_CACHE / HF_HOME) or a local directory (people keep weights on external disks).
 *
 * When `kiapi activate` downloaded the repo into this cache, its activation record lists every
 * file of the snapshot, so completeness is exact. A cache filled by another tool (`hf download`)
 * has no record and is judged by its `main` ref: complete when huggingface_hub's own listing of that
 * commit (`trees/<commit>.json`) is all there, else when no partial download is left in `blobs/`.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { dataDirFrom } from '../config.js';
import { checkRecord, readRecord } from '../setup/activation-records.js';

export interface WeightsStatus {
  ready: boolean;
  /** The directory mflux should load, when ready. */
  path: string | null;
  detail: string;
}

export function isLocalPath(repo: string): boolean {
  return path.isAbsolute(repo) || repo.startsWith('./') || repo.startsWith('../') || repo.startsWith('~/');
}

export function hfHubCache(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HF_HUB_CACHE) return env.HF_HUB_CACHE;
  const home = env.HF_HOME ?? path.join(env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'huggingface');
  return path.join(home, 'hub');
}

/** The cache folder of a repo: `models--org--name`. */
export function repoCacheDir(repo: string, env: NodeJS.ProcessEnv = process.env): string {
  return path.join(hfHubCache(env), `models--${repo.replaceAll('/', '--')}`);
}

/** The directory a model setting names, when it names a local directory rather than a repo id. */
export function localWeightsDir(repo: string): string | null {
  if (!isLocalPath(repo) && !(fs.existsSync(repo) && fs.statSync(repo).isDirectory())) return null;
  return repo.startsWith('~/') ? path.join(os.homedir(), repo.slice(2)) : path.resolve(repo);
}

export function weightsStatus(repo: string, env: NodeJS.ProcessEnv = process.env): WeightsStatus {
  const dir = localWeightsDir(repo);
  if (dir !== null) {
    if (fs.existsSync(dir) && fs.statSync(dir).isDirectory() && fs.readdirSync(dir).length > 0) {
      return { ready: true, path: dir, detail: `local directory ${dir}` };
    }
    return { ready: false, path: null, detail: `local directory ${dir} does not exist or is empty` };
  }
  const record = readRecord(dataDirFrom(env), repo);
  if (record && path.resolve(record.cacheDir) === path.resolve(hfHubCache(env))) {
    const check = checkRecord(record);
    if (check.complete) return { ready: true, path: record.snapshot, detail: check.detail };
    return { ready: false, path: null, detail: `${check.detail}; run kiapi activate again` };
  }
  const cache = repoCacheDir(repo, env);
  const ref = path.join(cache, 'refs', 'main');
  if (!fs.existsSync(ref)) return { ready: false, path: null, detail: `${repo} is not in the Hugging Face cache (${hfHubCache(env)})` };
  const revision = fs.readFileSync(ref, 'utf8').trim();
  const snapshot = path.join(cache, 'snapshots', revision);
  if (!fs.existsSync(snapshot) || fs.readdirSync(snapshot).length === 0) {
    return { ready: false, path: null, detail: `${repo}@${revision.slice(0, 12)} has no files in the Hugging Face cache` };
  }
  const listed = treeListing(cache, revision);
  if (listed) {
    // huggingface_hub's own listing of the commit: completeness is exact.
    const missing = Object.entries(listed).find(([file, info]) => {
      try {
        return fs.statSync(path.join(snapshot, file)).size !== info.size;
      } catch {
        return true;
      }
    });
    if (missing) return { ready: false, path: null, detail: `${repo} download is incomplete (${missing[0]} is missing)` };
    return { ready: true, path: snapshot, detail: `${repo}@${revision.slice(0, 12)} in ${hfHubCache(env)}` };
  }
  const incomplete = fs.existsSync(path.join(cache, 'blobs'))
    ? fs.readdirSync(path.join(cache, 'blobs')).some((f) => f.endsWith('.incomplete'))
    : false;
  if (incomplete) return { ready: false, path: null, detail: `${repo} download is incomplete` };
  return { ready: true, path: snapshot, detail: `${repo}@${revision.slice(0, 12)} in ${hfHubCache(env)}` };
}

/** The file list huggingface_hub (>= 1.2x) caches per commit in `trees/<commit>.json`, if any. */
function treeListing(cache: string, commit: string): Record<string, { size: number }> | null {
  try {
    const parsed = JSON.parse(fs.readFileSync(path.join(cache, 'trees', `${commit}.json`), 'utf8')) as {
      format_version?: number;
      files?: Record<string, { size: number }>;
    };
    return parsed.format_version === 1 && parsed.files ? parsed.files : null;
  } catch {
    return null;
  }
}
