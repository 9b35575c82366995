/**
 * Where a model's weights are and whether they are complete, without touching the network.
 * A model setting may name a Hugging Face repo (looked up in the standard HF cache, honouring
 * HF_HUB_CACHE / HF_HOME) or a local directory (people keep weights on external disks).
 *
 * A repo counts at the revision the engine loads: mflux's pinned commit for it (revisions.ts), else
 * `main`. When `kiapi activate` downloaded that revision into this cache, its activation record lists
 * every file of the snapshot, so completeness is exact. A cache filled by another tool (`hf download`)
 * has no record and is judged by the snapshot of that commit (for `main`: the commit its ref names):
 * complete when huggingface_hub's own listing of that commit (`trees/<commit>.json`) is all there,
 * else when no partial download is left in `blobs/`.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { dataDirFrom } from '../config.js';
import { checkRecord, readRecord } from '../setup/activation-records.js';
import { pinnedRevision } from './revisions.js';

export interface WeightsStatus {
  ready: boolean;
  /** The directory mflux should load, when ready. */
  path: string | null;
  /** The Hub commit that directory is the snapshot of; null for a local directory or when not ready. */
  revision: string | null;
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

/**
 * `revision` is the commit the engine loads `repo` from (default: mflux's pin for that repo id, see
 * revisions.ts), or null for `main`. A pinned repo is ready only when the snapshot of that commit is
 * complete: a snapshot of another commit is not what the engine loads offline. `path` is then the
 * snapshot directory of that commit.
 */
export function weightsStatus(repo: string, env: NodeJS.ProcessEnv = process.env, revision: string | null = pinnedRevision(repo)): WeightsStatus {
  const dir = localWeightsDir(repo);
  if (dir !== null) {
    if (fs.existsSync(dir) && fs.statSync(dir).isDirectory() && fs.readdirSync(dir).length > 0) {
      return { ready: true, path: dir, revision: null, detail: `local directory ${dir}` };
    }
    return { ready: false, path: null, revision: null, detail: `local directory ${dir} does not exist or is empty` };
  }
  const found = readRecord(dataDirFrom(env), repo);
  // A record of another cache (HF_HOME changed since) says nothing about this one.
  const record = found && path.resolve(found.cacheDir) === path.resolve(hfHubCache(env)) ? found : null;
  if (record && (revision === null || record.commit === revision)) {
    const check = checkRecord(record);
    if (check.complete) return { ready: true, path: record.snapshot, revision: record.commit, detail: check.detail };
    return { ready: false, path: null, revision: null, detail: `${check.detail}; run kiapi activate again` };
  }
  const cache = repoCacheDir(repo, env);
  if (revision !== null) {
    const snapshot = path.join(cache, 'snapshots', revision);
    if (!fs.existsSync(snapshot) || fs.readdirSync(snapshot).length === 0) {
      const other = record?.commit ?? cachedCommits(cache)[0];
      const detail = other
        ? `${repo} is cached at ${other.slice(0, 12)}…, the engine loads ${revision.slice(0, 12)}…; run kiapi activate`
        : `${repo}@${revision.slice(0, 12)} (the revision the engine loads) is not in the Hugging Face cache (${hfHubCache(env)})`;
      return { ready: false, path: null, revision: null, detail };
    }
    return snapshotStatus(repo, cache, revision, env);
  }
  const ref = path.join(cache, 'refs', 'main');
  if (!fs.existsSync(ref)) return { ready: false, path: null, revision: null, detail: `${repo} is not in the Hugging Face cache (${hfHubCache(env)})` };
  return snapshotStatus(repo, cache, fs.readFileSync(ref, 'utf8').trim(), env);
}

/** Whether the cached snapshot of `commit` is complete (no activation record to go by). */
function snapshotStatus(repo: string, cache: string, commit: string, env: NodeJS.ProcessEnv): WeightsStatus {
  const snapshot = path.join(cache, 'snapshots', commit);
  if (!fs.existsSync(snapshot) || fs.readdirSync(snapshot).length === 0) {
    return { ready: false, path: null, revision: null, detail: `${repo}@${commit.slice(0, 12)} has no files in the Hugging Face cache` };
  }
  const listed = treeListing(cache, commit);
  if (listed) {
    // huggingface_hub's own listing of the commit: completeness is exact.
    const missing = Object.entries(listed).find(([file, info]) => {
      try {
        return fs.statSync(path.join(snapshot, file)).size !== info.size;
      } catch {
        return true;
      }
    });
    if (missing) return { ready: false, path: null, revision: null, detail: `${repo} download is incomplete (${missing[0]} is missing)` };
    return { ready: true, path: snapshot, revision: commit, detail: `${repo}@${commit.slice(0, 12)} in ${hfHubCache(env)}` };
  }
  const incomplete = fs.existsSync(path.join(cache, 'blobs'))
    ? fs.readdirSync(path.join(cache, 'blobs')).some((f) => f.endsWith('.incomplete'))
    : false;
  if (incomplete) return { ready: false, path: null, revision: null, detail: `${repo} download is incomplete` };
  return { ready: true, path: snapshot, revision: commit, detail: `${repo}@${commit.slice(0, 12)} in ${hfHubCache(env)}` };
}

/** The commits that have a snapshot in a repo's cache folder, `main`'s first. */
function cachedCommits(cache: string): string[] {
  let names: string[];
  try {
    names = fs.readdirSync(path.join(cache, 'snapshots')).filter((n) => fs.readdirSync(path.join(cache, 'snapshots', n)).length > 0);
  } catch {
    return [];
  }
  let main: string | null = null;
  try {
    main = fs.readFileSync(path.join(cache, 'refs', 'main'), 'utf8').trim();
  } catch {
    // no main ref
  }
  return names.sort((a, b) => Number(b === main) - Number(a === main) || a.localeCompare(b));
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
