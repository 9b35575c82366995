/**
 * Removing one revision from the Hugging Face cache without touching the others. The cache layout
 * (huggingface_hub's): `models--org--name/{blobs,snapshots/<commit>,refs/<name>,trees/<commit>.json,
 * .no_exist/<commit>}`, where snapshot files are symlinks into `blobs/` and revisions share blobs.
 * The original deleted every cached revision of a repo (docs/compatibility.md §11.24); here only the blobs no
 * other snapshot links to go, and a ref goes only when it points at the removed commit.
 */
import fs from 'node:fs';
import path from 'node:path';

export interface RevisionRemoval {
  repoDir: string;
  snapshotDir: string;
  /** Blob files only this revision uses. */
  blobs: string[];
  /** Bytes freed (blobs only this revision uses, plus regular files in the snapshot). */
  bytes: number;
  /** Blobs kept because another snapshot still links to them. */
  sharedBlobs: number;
  refs: string[];
  /** Other extras of the revision: its tree listing, its `.no_exist` markers. */
  extras: string[];
}

export function repoCacheFolder(cacheDir: string, repo: string): string {
  return path.join(cacheDir, `models--${repo.replaceAll('/', '--')}`);
}

/** Files under `dir` (recursively), without following directory symlinks. */
function walk(dir: string): string[] {
  const out: string[] = [];
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    return out;
  }
  for (const e of entries) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...walk(p));
    else out.push(p);
  }
  return out;
}

/** The blob each snapshot file links to (absolute), or null for a regular file. */
function linkTarget(file: string): string | null {
  try {
    if (!fs.lstatSync(file).isSymbolicLink()) return null;
    return path.resolve(path.dirname(file), fs.readlinkSync(file));
  } catch {
    return null;
  }
}

function sizeOf(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

export function planRevisionRemoval(cacheDir: string, repo: string, commit: string): RevisionRemoval {
  const repoDir = repoCacheFolder(cacheDir, repo);
  const snapshots = path.join(repoDir, 'snapshots');
  const snapshotDir = path.join(snapshots, commit);
  const ours = new Set<string>();
  let bytes = 0;
  for (const f of walk(snapshotDir)) {
    const target = linkTarget(f);
    if (target) ours.add(target);
    else bytes += sizeOf(f);
  }
  const others = new Set<string>();
  let otherSnapshots: string[] = [];
  try {
    otherSnapshots = fs.readdirSync(snapshots).filter((name) => name !== commit);
  } catch {
    // no snapshots at all
  }
  for (const name of otherSnapshots) {
    for (const f of walk(path.join(snapshots, name))) {
      const target = linkTarget(f);
      if (target) others.add(target);
    }
  }
  const blobs = [...ours].filter((b) => !others.has(b));
  bytes += blobs.reduce((sum, b) => sum + sizeOf(b), 0);
  const refs = walk(path.join(repoDir, 'refs')).filter((ref) => {
    try {
      return fs.readFileSync(ref, 'utf8').trim() === commit;
    } catch {
      return false;
    }
  });
  const extras = [path.join(repoDir, 'trees', `${commit}.json`), path.join(repoDir, '.no_exist', commit)].filter((p) => fs.existsSync(p));
  return { repoDir, snapshotDir, blobs, bytes, sharedBlobs: [...ours].length - blobs.length, refs, extras };
}

/** Deletes what the plan names; the repo folder goes too when nothing else is left in it. */
export function removeRevision(plan: RevisionRemoval): void {
  fs.rmSync(plan.snapshotDir, { recursive: true, force: true });
  for (const blob of plan.blobs) fs.rmSync(blob, { force: true });
  for (const ref of plan.refs) fs.rmSync(ref, { force: true });
  for (const extra of plan.extras) fs.rmSync(extra, { recursive: true, force: true });
  const leftovers = walk(plan.repoDir);
  if (leftovers.length === 0) {
    fs.rmSync(plan.repoDir, { recursive: true, force: true });
    // huggingface_hub keeps its download locks beside the repos: `<cache>/.locks/models--org--name`.
    fs.rmSync(path.join(path.dirname(plan.repoDir), '.locks', path.basename(plan.repoDir)), { recursive: true, force: true });
  }
}

/** Bytes a snapshot occupies: each blob it links to counted once, plus regular files. */
export function snapshotBytes(snapshotDir: string): number {
  const seen = new Set<string>();
  let bytes = 0;
  for (const f of walk(snapshotDir)) {
    const target = linkTarget(f) ?? f;
    if (seen.has(target)) continue;
    seen.add(target);
    bytes += sizeOf(target);
  }
  return bytes;
}
