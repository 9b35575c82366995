/**
 * `npm run bench -- scale`: the same figures with 1 000 and with 100 000 jobs and files already in
 * the database, side by side, to show what grows with the tables. The records (and a tiny blob per
 * file, so start-up finds every file whole) are written straight into a prepared data dir before
 * the server starts; then the built server is spawned on it and measured over real HTTP.
 */
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { openDb } from '../src/core/db.js';
import { newFileId, newJobId } from '../src/core/ids.js';
import { spawnServer, tempDir } from '../test/support/server.js';
import { fmt, percentile } from './stats.js';

type Figures = Record<string, string>;

const SIZES = [1_000, 100_000];
/** Requests per latency figure (sequential, one keep-alive connection). */
const SAMPLES = 400;

/** Jobs and files as a week of use leaves them: finished, spread over the last six days. */
export function seed(dataDir: string, n: number): { jobIds: string[]; fileIds: string[] } {
  const db = openDb(dataDir);
  const filesDir = path.join(dataDir, 'files');
  fs.mkdirSync(filesDir, { recursive: true });
  const now = Date.now() / 1000;
  const span = 6 * 24 * 3600;
  const jobIds: string[] = [];
  const fileIds: string[] = [];
  const insertJob = db.prepare(
    `INSERT INTO jobs (id, type, params, status, result, artifacts, error, created_at, started_at, finished_at, progress, progress_label)
     VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, 1, 'done')`,
  );
  const insertFile = db.prepare(
    'INSERT INTO files (id, filename, content_type, size, created_at, meta, job_id, sha256) VALUES (?, ?, ?, 1, ?, ?, ?, NULL)',
  );
  db.transaction(() => {
    for (let i = 0; i < n; i++) {
      const t = now - span + (span * i) / n;
      const jobId = newJobId();
      const fileId = newFileId();
      const params = JSON.stringify({ prompt: `a lighthouse at dusk, take ${i}`, width: 1024, height: 1024, steps: 20, seed: i });
      const result = JSON.stringify({ file_id: fileId, image_bytes: 1, width: 1024, height: 1024, seed: i, format: 'png' });
      insertJob.run(jobId, i % 3 === 0 ? 'qwen-edit' : 'qwen', params, 'succeeded', result, JSON.stringify([fileId]), t, t, t + 20);
      // Two types, so a content_type filter skips rows as a real one would (a third are jpeg).
      const jpeg = i % 3 === 1;
      insertFile.run(fileId, `${fileId}.${jpeg ? 'jpg' : 'png'}`, jpeg ? 'image/jpeg' : 'image/png', t + 20, result, jobId);
      jobIds.push(jobId);
      fileIds.push(fileId);
    }
  })();
  db.close();
  const blob = Buffer.from([0]);
  for (const id of fileIds) fs.writeFileSync(path.join(filesDir, id), blob);
  return { jobIds, fileIds };
}

function rssMiB(pid: number): string {
  const kb = /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return kb ? fmt(Number(kb[1]) / 1024) : 'n/a';
}

function get(agent: http.Agent, url: string, method = 'GET', body?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = body ? { 'content-type': 'application/json', accept: 'image/png' } : {};
    const req = http.request(url, { method, agent, headers }, (res) => {
      let text = '';
      res.setEncoding('latin1');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** p50 / p99 (ms) of `SAMPLES` sequential calls; every answer must be a 200. */
async function latency(n: number, call: (i: number) => Promise<{ status: number; body: string }>): Promise<string> {
  for (let i = 0; i < 20; i++) await call(i); // warm up
  const lat: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    const res = await call(i);
    lat.push(performance.now() - t);
    if (res.status !== 200) throw new Error(`answer ${res.status}: ${res.body.slice(0, 200)}`);
  }
  lat.sort((a, b) => a - b);
  return `${fmt(percentile(lat, 50), 2)} / ${fmt(percentile(lat, 99), 2)}`;
}

async function measure(n: number): Promise<Figures> {
  const dataDir = tempDir('kiapi-bench-scale-');
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const seedStart = performance.now();
    const { jobIds, fileIds } = seed(dataDir, n);
    const seedS = (performance.now() - seedStart) / 1000;
    const t0 = performance.now();
    const server = await spawnServer({ KIAPI_DATA_DIR: dataDir, KIAPI_ENGINE: 'preview', KIAPI_LOG_LEVEL: 'warn' }, 120_000, { pollMs: 5 });
    const startS = (performance.now() - t0) / 1000;
    const pid = server.child.pid!;
    try {
      const rssStart = rssMiB(pid);
      // Random cursors across the whole table: a page deep in the list must cost what the first does.
      const pick = (ids: string[], i: number) => ids[(i * 7919) % ids.length]!;
      const jobPage = await latency(SAMPLES, (i) => get(agent, `${server.url}/v1/jobs?limit=100&after=${pick(jobIds, i)}`));
      const firstPage = await latency(SAMPLES, () => get(agent, `${server.url}/v1/jobs?limit=100`));
      const filtered = await latency(SAMPLES, (i) => get(agent, `${server.url}/v1/jobs?limit=100&type=qwen-edit&after=${pick(jobIds, i)}`));
      const filePage = await latency(SAMPLES, (i) => get(agent, `${server.url}/v1/files?limit=100&after=${pick(fileIds, i)}`));
      const fileType = await latency(SAMPLES, (i) => get(agent, `${server.url}/v1/files?limit=100&content_type=image/png&after=${pick(fileIds, i)}`));
      const fileFamily = await latency(SAMPLES, (i) => get(agent, `${server.url}/v1/files?limit=100&content_type=image/*&after=${pick(fileIds, i)}`));
      const fileJob = await latency(SAMPLES, (i) => get(agent, `${server.url}/v1/files?job_id=${pick(jobIds, i)}`));
      const jobById = await latency(SAMPLES, (i) => get(agent, `${server.url}/v1/jobs/${pick(jobIds, i)}`));
      const fileById = await latency(SAMPLES, (i) => get(agent, `${server.url}/v1/files/${pick(fileIds, i)}`));
      const body = (i: number) => JSON.stringify({ prompt: 'bench', width: 64, height: 64, steps: 1, seed: i });
      const generation = await latency(SAMPLES, (i) => get(agent, `${server.url}/v1/image/qwen/generate`, 'POST', body(i)));
      return {
        'rows (jobs, files)': `${n}, ${n}`,
        'seeding s (not the server)': fmt(seedS, 1),
        'start-up to first /health, s': fmt(startS, 2),
        'RSS after start-up, MiB': rssStart,
        'GET /v1/jobs?limit=100&after=<random> p50 / p99 ms': jobPage,
        'GET /v1/jobs?limit=100 (first page) p50 / p99 ms': firstPage,
        'GET /v1/jobs?limit=100&type=qwen-edit&after= p50 / p99 ms': filtered,
        'GET /v1/files?limit=100&after=<random> p50 / p99 ms': filePage,
        'GET /v1/files?limit=100&content_type=image/png&after= p50 / p99 ms': fileType,
        'GET /v1/files?limit=100&content_type=image/*&after= p50 / p99 ms': fileFamily,
        'GET /v1/files?job_id=<random> p50 / p99 ms': fileJob,
        'GET /v1/jobs/{id} p50 / p99 ms': jobById,
        'GET /v1/files/{id} p50 / p99 ms': fileById,
        'sync 64x64 1-step generation p50 / p99 ms': generation,
        'RSS after the run, MiB': rssMiB(pid),
      };
    } finally {
      await server.stop();
    }
  } finally {
    agent.destroy();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

/** Both sizes, one column each: `figure  1000 | 100000`. */
export async function scale(): Promise<Figures> {
  const runs: Figures[] = [];
  for (const n of SIZES) runs.push(await measure(n));
  const out: Figures = {};
  for (const key of Object.keys(runs[0]!)) out[key] = runs.map((r) => r[key]).join('  |  ');
  return out;
}
