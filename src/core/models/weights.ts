/**
 * Where a model's weights are and whether they are complete, without touching the network.
 * A model setting may name a Hugging Face repo (looked up in the standard HF cache, honouring
 * HF_HUB_CACHE / HF_HOME) or a local directory (people keep weights on external disks).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

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

export function weightsStatus(repo: string, env: NodeJS.ProcessEnv = process.env): WeightsStatus {
  if (isLocalPath(repo) || (fs.existsSync(repo) && fs.statSync(repo).isDirectory())) {
    const dir = repo.startsWith('~/') ? path.join(os.homedir(), repo.slice(2)) : path.resolve(repo);
    if (fs.existsSync(dir) && fs.statSync(dir).isDirectory() && fs.readdirSync(dir).length > 0) {
      return { ready: true, path: dir, detail: `local directory ${dir}` };
    }
    return { ready: false, path: null, detail: `local directory ${dir} does not exist or is empty` };
  }
  const cache = repoCacheDir(repo, env);
  const ref = path.join(cache, 'refs', 'main');
  if (!fs.existsSync(ref)) return { ready: false, path: null, detail: `${repo} is not in the Hugging Face cache (${hfHubCache(env)})` };
  const revision = fs.readFileSync(ref, 'utf8').trim();
  const snapshot = path.join(cache, 'snapshots', revision);
  if (!fs.existsSync(snapshot) || fs.readdirSync(snapshot).length === 0) {
    return { ready: false, path: null, detail: `${repo}@${revision.slice(0, 12)} has no files in the Hugging Face cache` };
  }
  const incomplete = fs.existsSync(path.join(cache, 'blobs'))
    ? fs.readdirSync(path.join(cache, 'blobs')).some((f) => f.endsWith('.incomplete'))
    : false;
  if (incomplete) return { ready: false, path: null, detail: `${repo} download is incomplete` };
  return { ready: true, path: snapshot, detail: `${repo}@${revision.slice(0, 12)} in ${hfHubCache(env)}` };
}
