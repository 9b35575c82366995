/**
 * A small stand-in for the Hugging Face Hub on 127.0.0.1, pointed at by `HF_ENDPOINT`. It answers
 * what huggingface_hub 1.x really calls for `model_info`, `list_repo_tree`, `hf_hub_download`,
 * `snapshot_download` and `verify_repo_checksums` (read from its source):
 *
 * - `GET /api/models/{repo}[/revision/{rev}]` (`?blobs=true` adds size, blobId, lfs per sibling);
 * - `GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=…` (files and folders, one page);
 * - `HEAD|GET /{repo}/resolve/{rev}/{path}` with `X-Repo-Commit`, `ETag` (LFS: the sha256, also as
 *   `X-Linked-Etag`/`X-Linked-Size`; otherwise the git blob id), `Content-Length` and `Range` (206).
 *
 * Errors carry `X-Error-Code` as the Hub does (`GatedRepo`, `RepoNotFound`, `RevisionNotFound`,
 * `EntryNotFound`), which huggingface_hub maps onto its exception classes. Gated repos list their
 * files to anyone (as the Hub does) but serve files only with a granted token: 401 without a token,
 * 403 with a token that has no access. Faults: cut the connection mid-file once, serve bytes that do
 * not match the advertised checksum, or stall mid-file. Every request is logged for assertions.
 */
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { Socket } from 'node:net';

export interface FakeFile {
  path: string;
  data: Buffer;
  /** Stored in LFS: the ETag is the sha256 and listings carry `lfs`. */
  lfs?: boolean;
  /** Size the listings advertise instead of the real one (for disk-space checks). */
  advertisedSize?: number;
}

export interface FakeRepo {
  id: string;
  /** 40 hex characters; `main` resolves to it. */
  commit: string;
  files: FakeFile[];
  gated?: boolean;
}

export interface LoggedRequest {
  method: string;
  path: string;
  range: string | null;
  authorization: string | null;
}

export interface FakeHub {
  url: string;
  requests: LoggedRequest[];
  repos: Map<string, FakeRepo>;
  addRepo(repo: FakeRepo): void;
  /** The first GET of this file sends `afterBytes` bytes, then the connection is destroyed. */
  cutOnce(repo: string, path: string, afterBytes: number): void;
  /** GETs of this file send different bytes than the checksum the listings advertise. */
  corrupt(repo: string, path: string): void;
  /** GETs of this file send `afterBytes` bytes and then nothing until the client gives up. */
  stall(repo: string, path: string, afterBytes: number): void;
  /** Drops every fault set so far (a stalled response in flight stays stalled). */
  clearFaults(): void;
  /** Requests whose path ends with `/{file}` of this repo and method. */
  fileRequests(repo: string, file: string, method?: string): LoggedRequest[];
  close(): Promise<void>;
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** The git blob id: what the Hub reports as `oid`/ETag for files not stored in LFS. */
export function gitBlobId(data: Buffer): string {
  return createHash('sha1').update(`blob ${data.length}\0`).update(data).digest('hex');
}

export function fakeCommit(seed: string): string {
  return createHash('sha1').update(seed).digest('hex');
}

/** Deterministic pseudo-random bytes (so a resumed download can be compared byte for byte). */
export function pseudoRandomBytes(size: number, seed: string): Buffer {
  const out = Buffer.alloc(size);
  let block = createHash('sha256').update(seed).digest();
  for (let i = 0; i < size; i += block.length) {
    block.copy(out, i, 0, Math.min(block.length, size - i));
    block = createHash('sha256').update(block).digest();
  }
  return out;
}

const GRANTED_TOKENS = new Set(['hf_granted']);

export async function startFakeHub(): Promise<FakeHub> {
  const repos = new Map<string, FakeRepo>();
  const requests: LoggedRequest[] = [];
  const cuts = new Map<string, number>();
  const corrupted = new Set<string>();
  const stalls = new Map<string, number>();
  const sockets = new Set<Socket>();

  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://fake');
    const path = decodeURIComponent(url.pathname);
    requests.push({
      method: req.method ?? 'GET',
      path,
      range: req.headers.range ?? null,
      authorization: req.headers.authorization ?? null,
    });
    try {
      route(req, res, url, path);
    } catch (err) {
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(String(err));
    }
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });

  function error(res: http.ServerResponse, status: number, code: string | null, message: string, extra: Record<string, string> = {}) {
    const headers: Record<string, string> = { 'content-type': 'application/json', 'x-error-message': message, ...extra };
    if (code) headers['x-error-code'] = code;
    res.writeHead(status, headers);
    res.end(JSON.stringify({ error: message }));
  }

  function findRepo(segments: string[]): { repo: FakeRepo; rest: string[] } | null {
    if (segments.length < 2) return null;
    const repo = repos.get(`${segments[0]}/${segments[1]}`);
    return repo ? { repo, rest: segments.slice(2) } : null;
  }

  function resolveRevision(repo: FakeRepo, rev: string): boolean {
    return rev === 'main' || rev === repo.commit;
  }

  function sibling(f: FakeFile, blobs: boolean): Record<string, unknown> {
    if (!blobs) return { rfilename: f.path };
    const size = f.advertisedSize ?? f.data.length;
    return {
      rfilename: f.path,
      size,
      blobId: gitBlobId(f.data),
      ...(f.lfs ? { lfs: { sha256: sha256(f.data), size, pointerSize: 134 } } : {}),
    };
  }

  function treeEntries(repo: FakeRepo, prefix: string, recursive: boolean): Record<string, unknown>[] {
    const out: Record<string, unknown>[] = [];
    const dirs = new Set<string>();
    for (const f of repo.files) {
      if (prefix && !f.path.startsWith(`${prefix}/`)) continue;
      const rel = prefix ? f.path.slice(prefix.length + 1) : f.path;
      const parts = rel.split('/');
      for (let i = 1; i < parts.length; i++) {
        const dir = [prefix, ...parts.slice(0, i)].filter(Boolean).join('/');
        if (recursive || i === 1) dirs.add(dir);
      }
      if (!recursive && parts.length > 1) continue;
      const size = f.advertisedSize ?? f.data.length;
      out.push({
        type: 'file',
        oid: gitBlobId(f.data),
        size,
        path: f.path,
        ...(f.lfs ? { lfs: { oid: sha256(f.data), size, pointerSize: 134 } } : {}),
      });
    }
    for (const dir of dirs) out.push({ type: 'directory', oid: createHash('sha1').update(dir).digest('hex'), size: 0, path: dir });
    return out;
  }

  function route(req: http.IncomingMessage, res: http.ServerResponse, url: URL, path: string): void {
    const segments = path.split('/').filter(Boolean);
    if (segments[0] === 'api' && segments[1] === 'models') {
      const found = findRepo(segments.slice(2));
      if (!found) return error(res, 404, 'RepoNotFound', 'Repository not found');
      const { repo, rest } = found;
      let rev = 'main';
      if (rest[0] === 'revision' && rest[1]) rev = rest[1];
      if (rest[0] === 'tree' && rest[1]) rev = rest[1];
      if (!resolveRevision(repo, rev)) return error(res, 404, 'RevisionNotFound', `Invalid rev id: ${rev}`);
      if (rest[0] === 'tree') {
        const recursive = ['true', 'True', '1'].includes(url.searchParams.get('recursive') ?? '');
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(treeEntries(repo, rest.slice(2).join('/'), recursive)));
        return;
      }
      const blobs = ['true', 'True', '1'].includes(url.searchParams.get('blobs') ?? '');
      const [org] = repo.id.split('/');
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          _id: repo.commit.slice(0, 24),
          id: repo.id,
          modelId: repo.id,
          author: org,
          sha: repo.commit,
          lastModified: '2026-01-01T00:00:00.000Z',
          createdAt: '2026-01-01T00:00:00.000Z',
          private: false,
          disabled: false,
          gated: repo.gated ? 'manual' : false,
          downloads: 0,
          likes: 0,
          tags: [],
          library_name: 'diffusers',
          siblings: repo.files.map((f) => sibling(f, blobs)),
          spaces: [],
        }),
      );
      return;
    }

    // /{org}/{name}/resolve/{rev}/{path...}
    const found = findRepo(segments);
    if (!found || found.rest[0] !== 'resolve' || !found.rest[1]) return error(res, 404, 'RepoNotFound', 'Repository not found');
    const { repo, rest } = found;
    const rev = rest[1]!;
    const filePath = rest.slice(2).join('/');
    if (!resolveRevision(repo, rev)) return error(res, 404, 'RevisionNotFound', `Invalid rev id: ${rev}`);
    if (repo.gated) {
      const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
      if (!token) {
        return error(res, 401, 'GatedRepo', `Access to model ${repo.id} is restricted. You must have access to it and be authenticated to access it. Please log in.`);
      }
      if (!GRANTED_TOKENS.has(token)) {
        return error(res, 403, 'GatedRepo', `Access to model ${repo.id} is restricted and you are not in the authorized list. Visit https://huggingface.co/${repo.id} to ask for access.`);
      }
    }
    const file = repo.files.find((f) => f.path === filePath);
    if (!file) return error(res, 404, 'EntryNotFound', `${filePath} does not exist`, { 'x-repo-commit': repo.commit });

    const key = `${repo.id}/${file.path}`;
    const etag = file.lfs ? sha256(file.data) : gitBlobId(file.data);
    let data = file.data;
    if (corrupted.has(key)) {
      data = Buffer.from(file.data);
      data[0] = (data[0] ?? 0) ^ 0xff;
    }
    const headers: Record<string, string | number> = {
      'content-type': 'application/octet-stream',
      'accept-ranges': 'bytes',
      'x-repo-commit': repo.commit,
      etag: `"${etag}"`,
    };
    if (file.lfs) {
      headers['x-linked-etag'] = `"${etag}"`;
      headers['x-linked-size'] = data.length;
    }
    let status = 200;
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (range && req.method === 'GET') {
      const start = Number(range[1]);
      const end = range[2] ? Number(range[2]) : data.length - 1;
      if (start >= data.length) {
        res.writeHead(416, { 'content-range': `bytes */${data.length}` });
        res.end();
        return;
      }
      status = 206;
      headers['content-range'] = `bytes ${start}-${end}/${data.length}`;
      data = data.subarray(start, end + 1);
    }
    headers['content-length'] = data.length;
    if (req.method === 'HEAD') {
      res.writeHead(200, headers);
      res.end();
      return;
    }
    const cutAt = cuts.get(key);
    if (cutAt !== undefined) {
      cuts.delete(key);
      res.writeHead(status, headers);
      res.write(data.subarray(0, cutAt), () => res.socket?.destroy());
      return;
    }
    const stallAt = stalls.get(key);
    if (stallAt !== undefined) {
      res.writeHead(status, headers);
      res.write(data.subarray(0, stallAt)); // and never more: the client cancels or times out
      return;
    }
    res.writeHead(status, headers);
    res.end(data);
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;

  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    repos,
    addRepo(repo) {
      repos.set(repo.id, repo);
    },
    cutOnce(repo, path, afterBytes) {
      cuts.set(`${repo}/${path}`, afterBytes);
    },
    corrupt(repo, path) {
      corrupted.add(`${repo}/${path}`);
    },
    stall(repo, path, afterBytes) {
      stalls.set(`${repo}/${path}`, afterBytes);
    },
    clearFaults() {
      cuts.clear();
      corrupted.clear();
      stalls.clear();
    },
    fileRequests(repo, file, method = 'GET') {
      return requests.filter((r) => r.method === method && r.path.startsWith(`/${repo}/resolve/`) && r.path.endsWith(`/${file}`));
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
