/** Free space and sizes on disk, for activation's up-front check and for `kiapi status`. */
import fs from 'node:fs';
import path from 'node:path';

export interface FreeSpace {
  /** The existing directory that was measured (the target may not exist yet). */
  path: string;
  bytes: number;
}

/** Free bytes for an unprivileged user on the filesystem that holds (or will hold) `target`. */
export function freeSpace(target: string): FreeSpace {
  let dir = path.resolve(target);
  while (!fs.existsSync(dir) && path.dirname(dir) !== dir) dir = path.dirname(dir);
  const s = fs.statfsSync(dir);
  return { path: dir, bytes: Number(s.bavail) * Number(s.bsize) };
}

/** Total size of the regular files under `p` (symlinks not followed), 0 when absent. */
export function pathBytes(p: string): number {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(p);
  } catch {
    return 0;
  }
  if (!st.isDirectory()) return st.isFile() ? st.size : 0;
  let total = 0;
  for (const name of fs.readdirSync(p)) total += pathBytes(path.join(p, name));
  return total;
}
