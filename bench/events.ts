/**
 * The `events` scenario: many watchers of one job (delivery latency, server memory, and whether
 * watching slows the job), and how far the ETA is off over a mixed run of jobs.
 */
import fs from 'node:fs';
import http from 'node:http';
import { spawnServer, tempDir, type SpawnedServer } from '../test/support/server.js';
import { fmt, percentile } from './stats.js';

type Figures = Record<string, string>;

const WATCHERS = 500;
const STEPS = 100;
const STEP_MS = 50;

interface JobJson {
  id: string;
  status: string;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  eta_s: number | null;
}

async function post(url: string, body: unknown): Promise<string> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...(body as object), mode: 'async' }) });
  if (res.status !== 202) throw new Error(`submission answered ${res.status}: ${await res.text()}`);
  return ((await res.json()) as { job_id: string }).job_id;
}

async function getJob(base: string, id: string): Promise<JobJson> {
  return (await (await fetch(`${base}/v1/jobs/${id}`)).json()) as JobJson;
}

async function finished(base: string, id: string): Promise<JobJson> {
  for (;;) {
    const job = await getJob(base, id);
    if (!['queued', 'running'].includes(job.status)) return job;
    await new Promise((r) => setTimeout(r, 20));
  }
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/**
 * One watcher on a plain keep-alive-less node:http request (a browser's EventSource costs the
 * server the same; a lighter client leaves more of the 2 cores to the server). It records, per
 * event, how long after the server stamped it (`at`) it arrived.
 */
function watcher(url: string, latencies: number[]): { connected: Promise<void>; ended: Promise<void> } {
  let onConnected!: () => void;
  const connected = new Promise<void>((r) => (onConnected = r));
  const ended = new Promise<void>((resolve, reject) => {
    const req = http.get(url, { agent: false }, (res) => {
      onConnected();
      let buffer = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        const now = Date.now();
        buffer += chunk;
        let at;
        while ((at = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, at);
          buffer = buffer.slice(at + 2);
          const stamp = /"at":([0-9.]+)/.exec(block);
          if (stamp && /^event: progress$/m.test(block)) latencies.push(now - Number(stamp[1]) * 1000);
        }
      });
      res.on('end', () => resolve());
      res.on('error', reject);
    });
    req.on('error', reject);
  });
  return { connected, ended };
}

async function jobSeconds(base: string, id: string): Promise<number> {
  const job = await finished(base, id);
  if (job.status !== 'succeeded' || job.started_at === null || job.finished_at === null) throw new Error(`job ${id} ended ${job.status}`);
  return job.finished_at - job.started_at;
}

/** Holds the queue with a job that runs until canceled, so watchers can connect before the measured job starts. */
async function withQueueHeld<T>(server: SpawnedServer, fn: () => Promise<T>): Promise<T> {
  const gen = `${server.url}/v1/image/qwen/generate`;
  const hold = await post(gen, { prompt: 'hold the queue', width: 64, height: 64, steps: 100 });
  try {
    return await fn();
  } finally {
    await fetch(`${server.url}/v1/jobs/${hold}/cancel`, { method: 'POST' });
  }
}

async function watchers(): Promise<Figures> {
  const dataDir = tempDir('kiapi-bench-');
  const server = await spawnServer({ KIAPI_DATA_DIR: dataDir, KIAPI_ENGINE: 'preview', KIAPI_PREVIEW_STEP_MS: String(STEP_MS), KIAPI_LOG_LEVEL: 'warn' });
  try {
    const gen = `${server.url}/v1/image/qwen/generate`;
    const body = { prompt: 'watched', width: 256, height: 256, steps: STEPS, seed: 1 };
    // Alone, twice (the first warms up), then with the watchers, then alone again.
    const alone: number[] = [];
    for (let i = 0; i < 2; i++) alone.push(await jobSeconds(server.url, await post(gen, body)));
    const rssBefore = rssMiB(server.child.pid!);
    const latencies: number[] = [];
    let rssPeak = rssBefore;
    const watched = await withQueueHeld(server, async () => {
      const id = await post(gen, body);
      const ws = Array.from({ length: WATCHERS }, () => watcher(`${server.url}/v1/jobs/${id}/events`, latencies));
      await Promise.all(ws.map((w) => w.connected));
      return { id, ws };
    });
    const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, rssMiB(server.child.pid!))), 100);
    await Promise.all(watched.ws.map((w) => w.ended));
    clearInterval(sampler);
    const withWatchers = await jobSeconds(server.url, watched.id);
    alone.push(await jobSeconds(server.url, await post(gen, body)));
    const baseline = (alone[1]! + alone[2]!) / 2;
    latencies.sort((a, b) => a - b);
    return {
      [`watchers of one ${STEPS}-step job (${STEP_MS} ms steps)`]: String(WATCHERS),
      'progress events delivered': String(latencies.length),
      'delivery latency p50 / p99 ms': `${fmt(percentile(latencies, 50))} / ${fmt(percentile(latencies, 99))}`,
      'server RSS before / peak while watched, MiB': `${fmt(rssBefore)} / ${fmt(rssPeak)}`,
      'job duration alone (mean of 2) / watched, s': `${fmt(baseline, 2)} / ${fmt(withWatchers, 2)}`,
      'watched / alone': fmt(withWatchers / baseline, 3),
    };
  } finally {
    await server.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

/**
 * ETA error: a fixed mix of sizes and step counts, submitted three at a time (so queued jobs are
 * estimated too), each job's `eta_s` read right after submission and compared with how long it
 * then took to finish. The first job of each kind has no history and no estimate.
 */
async function etaError(): Promise<Figures> {
  const dataDir = tempDir('kiapi-bench-');
  const server = await spawnServer({ KIAPI_DATA_DIR: dataDir, KIAPI_ENGINE: 'preview', KIAPI_PREVIEW_STEP_MS: '15', KIAPI_LOG_LEVEL: 'warn' });
  try {
    const gen = `${server.url}/v1/image/qwen/generate`;
    const kinds = [
      { width: 256, height: 256, steps: 20 },
      { width: 512, height: 512, steps: 12 },
      { width: 256, height: 256, steps: 40 },
      { width: 384, height: 256, steps: 16 },
    ];
    const errors: number[] = [];
    let unestimated = 0;
    for (let round = 0; round < 8; round++) {
      const batch: { id: string; eta: number | null; submitted: number }[] = [];
      for (let i = 0; i < 3; i++) {
        const kind = kinds[(round * 3 + i) % kinds.length]!;
        const id = await post(gen, { prompt: `eta ${round}.${i}`, seed: round * 3 + i, ...kind });
        batch.push({ id, eta: (await getJob(server.url, id)).eta_s, submitted: Date.now() / 1000 });
      }
      for (const b of batch) {
        const job = await finished(server.url, b.id);
        const actual = job.finished_at! - b.submitted;
        if (b.eta === null) unestimated++;
        else errors.push(Math.abs(b.eta - actual) / actual);
      }
    }
    errors.sort((a, b) => a - b);
    return {
      'ETA: jobs estimated / without history': `${errors.length} / ${unestimated}`,
      'ETA error median / p90 (|predicted - actual| / actual)': `${fmt(percentile(errors, 50), 3)} / ${fmt(percentile(errors, 90), 3)}`,
    };
  } finally {
    await server.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

export async function events(): Promise<Figures> {
  return { ...(await watchers()), ...(await etaError()) };
}
