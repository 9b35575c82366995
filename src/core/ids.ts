/** Ids are `<prefix>_<32 hex>` (uuid4 without dashes), as in the original. */
import { randomUUID } from 'node:crypto';

export const FILE_ID_PATTERN = '^file_[0-9a-f]+$';
export const JOB_ID_PATTERN = '^job_[0-9a-f]+$';
const FILE_ID_RE = new RegExp(FILE_ID_PATTERN);
const JOB_ID_RE = new RegExp(JOB_ID_PATTERN);

export function newFileId(): string {
  return `file_${randomUUID().replaceAll('-', '')}`;
}

export function newJobId(): string {
  return `job_${randomUUID().replaceAll('-', '')}`;
}

/** File ids name blobs on disk, so anything else (e.g. `../x`) must never reach a path join. */
export function isFileId(id: string): boolean {
  return FILE_ID_RE.test(id) && id.length <= 64;
}

export function isJobId(id: string): boolean {
  return JOB_ID_RE.test(id) && id.length <= 64;
}
