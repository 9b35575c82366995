/**
 * Turns FileRefs from a request into local files before the job is queued, so a bad input is a
 * 400 naming it (`init_image`, `images[1]`, `loras[0]`) in sync and async mode alike. URL and
 * data-URL inputs become Files records with `meta.source`; if a later input of the same request
 * fails, the caller discards the ones already stored (nothing is kept for a rejected request).
 */
import { InputError } from '../errors.js';
import { diskFullError, isDiskFull } from './disk-full.js';
import type { FileRefValue } from './file-ref.js';
import type { FileRecord, FileStoreApi } from './file-store.js';
import { fetchUrlToFile, writeDataUrlToFile } from './remote-input.js';
import { redactUserInfo } from './url-safety.js';

export interface ResolvedInput {
  fileId: string;
  path: string;
  record: FileRecord;
  /** True when this resolution stored a new file (url / data_url). */
  created: boolean;
}

export interface InputLimits {
  maxInputBytes: number;
  urlTimeoutS: number;
  netAllowPrivateUrls: boolean;
}

export class InputResolver {
  constructor(
    private readonly files: FileStoreApi,
    private readonly limits: InputLimits,
  ) {}

  async resolve(ref: FileRefValue, kind: string, signal?: AbortSignal): Promise<ResolvedInput> {
    try {
      return await this.resolveRef(ref, kind, signal);
    } catch (err) {
      if (isDiskFull(err)) throw diskFullError(err, kind, this.files.tmpDir);
      throw err;
    }
  }

  private async resolveRef(ref: FileRefValue, kind: string, signal?: AbortSignal): Promise<ResolvedInput> {
    switch (refType(ref, kind)) {
      case 'file_id': {
        const record = await this.files.getForInput(ref.file_id ?? '', kind);
        return { fileId: record.file_id, path: await this.files.localPath(record.file_id), record, created: false };
      }
      case 'url': {
        const url = ref.url ?? '';
        const tmp = this.files.tempPath();
        const fetched = await fetchUrlToFile(url, tmp, {
          kind,
          maxBytes: this.limits.maxInputBytes,
          timeoutMs: this.limits.urlTimeoutS * 1000,
          allowPrivate: this.limits.netAllowPrivateUrls,
          signal,
        });
        const record = await this.files.saveFile(fetched.path, {
          filename: fetched.filename,
          contentType: fetched.contentType,
          meta: { source: 'url', url: redactUserInfo(url), kind },
          purpose: kind,
        });
        return { fileId: record.file_id, path: await this.files.localPath(record.file_id), record, created: true };
      }
      case 'data_url': {
        const tmp = this.files.tempPath();
        const decoded = await writeDataUrlToFile(ref.data_url ?? '', tmp, { kind, maxBytes: this.limits.maxInputBytes });
        const record = await this.files.saveFile(decoded.path, {
          filename: decoded.filename,
          contentType: decoded.contentType,
          meta: { source: 'data_url', kind },
          purpose: kind,
        });
        return { fileId: record.file_id, path: await this.files.localPath(record.file_id), record, created: true };
      }
    }
  }
}

/** The seed's branches default `type`, so a ref without it is read by the field it carries. */
function refType(ref: FileRefValue, kind: string): 'file_id' | 'url' | 'data_url' {
  if (ref.type) return ref.type;
  if (typeof ref.file_id === 'string') return 'file_id';
  if (typeof ref.url === 'string') return 'url';
  if (typeof ref.data_url === 'string') return 'data_url';
  throw new InputError(`${kind} must have one of file_id, url or data_url`);
}
