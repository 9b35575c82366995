/**
 * What `kiapi activate` downloaded, one JSON file per repo in `<data dir>/activations/`. Written
 * only after a complete, verified download, so its presence means "activated"; `kiapi deactivate`
 * removes exactly the revision it names and `kiapi status` / the server's readiness check read it.
 */
import fs from 'node:fs';
import path from 'node:path';

export interface ActivationRecord {
  repo: string;
  /** What was asked for (a branch such as `main`). */
  revision: string;
  /** The commit that was downloaded: the snapshot directory's name. */
  commit: string;
  /** The Hugging Face cache it went into (HF_HUB_CACHE at the time). */
  cacheDir: string;
  snapshot: string;
  files: { path: string; size: number; blob: string | null }[];
  bytes: number;
  activatedAt: string;
  kiapiVersion: string;
  huggingfaceHub: string;
}

export function activationsDir(dataDir: string): string {
  return path.join(dataDir, 'activations');
}

/** `org/name` → `org--name.json` (the Hub forbids `--` in names, so this cannot collide). */
export function recordPath(dataDir: string, repo: string): string {
  return path.join(activationsDir(dataDir), `${repo.replace(/[^A-Za-z0-9._-]+/g, '--')}.json`);
}

export function readRecord(dataDir: string, repo: string): ActivationRecord | null {
  try {
    const record = JSON.parse(fs.readFileSync(recordPath(dataDir, repo), 'utf8')) as ActivationRecord;
    return record.repo === repo && typeof record.commit === 'string' && Array.isArray(record.files) ? record : null;
  } catch {
    return null;
  }
}

/** Atomic: a crash leaves the old record or the new one, never half of one. */
export function writeRecord(dataDir: string, record: ActivationRecord): string {
  const file = recordPath(dataDir, record.repo);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify(record, null, 2)}\n`);
  fs.renameSync(tmp, file);
  return file;
}

export function removeRecord(dataDir: string, repo: string): void {
  fs.rmSync(recordPath(dataDir, repo), { force: true });
}

/** Whether every recorded file is still in the recorded snapshot with its recorded size. */
export function checkRecord(record: ActivationRecord): { complete: boolean; detail: string } {
  for (const f of record.files) {
    try {
      if (fs.statSync(path.join(record.snapshot, f.path)).size !== f.size) {
        return { complete: false, detail: `${record.repo}: ${f.path} has the wrong size` };
      }
    } catch {
      return { complete: false, detail: `${record.repo}: ${f.path} is missing from ${record.snapshot}` };
    }
  }
  return { complete: true, detail: `${record.repo}@${record.commit.slice(0, 12)} in ${record.cacheDir}` };
}
