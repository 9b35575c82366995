/** The bench scenarios: each returns named figures. */
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fakeMfluxEnv, readFakeCalls } from '../test/support/fake-mflux.js';
import { measurePreviewCost, realEngineEnv } from '../test/real-engine/support.js';
import { spawnServer, tempDir } from '../test/support/server.js';
import { cluster } from './cluster.js';
import { events } from './events.js';
import { scale } from './scale.js';
import { fmt, hammer, percentile } from './stats.js';

type Figures = Record<string, string>;

/** Reads a URL with node:http (no web-stream layer), so the figure is the server's, not fetch's. */
function drain(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    http
      .get(url, (res) => {
        let n = 0;
        res.on('data', (c: Buffer) => (n += c.length));
        res.on('end', () => resolve(n));
        res.on('error', reject);
      })
      .on('error', reject);
  });
}

const MIB = 1024 * 1024;

async function generate(url: string, body: unknown, accept = 'image/png'): Promise<Response> {
  return fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', accept }, body: JSON.stringify(body) });
}

interface SyncRun {
  /** Client-side latency per generation, sorted (ms). */
  latency: number[];
  /** The engine's share of each, from the answer's Server-Timing header, sorted (ms). */
  engine: number[];
  /** Latency minus engine time per generation, sorted (ms): what kiapi itself costs. */
  overhead: number[];
  jobId: string;
}

/** `n` sequential sync generations with consecutive seeds, each timed and split by Server-Timing. */
async function syncGenerations(url: string, req: Record<string, unknown>, n: number): Promise<SyncRun> {
  const latency: number[] = [];
  const engine: number[] = [];
  const overhead: number[] = [];
  let jobId = '';
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    const res = await generate(url, { ...req, seed: i });
    await res.arrayBuffer();
    const ms = performance.now() - t;
    if (!res.ok) throw new Error(`generation answered ${res.status}`);
    jobId = res.headers.get('x-kiapi-job-id') ?? jobId;
    const timing = /(?:^|,\s*)engine;dur=([\d.]+)/.exec(res.headers.get('server-timing') ?? '');
    if (!timing) throw new Error('no engine duration in the Server-Timing header');
    const engineMs = Number(timing[1]);
    latency.push(ms);
    engine.push(engineMs);
    overhead.push(ms - engineMs);
  }
  const sorted = (a: number[]) => a.sort((x, y) => x - y);
  return { latency: sorted(latency), engine: sorted(engine), overhead: sorted(overhead), jobId };
}

/** Sync 64×64 1-step generations, job polling, and download throughput vs. the disk. */
async function overhead(): Promise<Figures> {
  const dataDir = tempDir('kiapi-bench-');
  const server = await spawnServer({ KIAPI_DATA_DIR: dataDir, KIAPI_ENGINE: 'preview', KIAPI_LOG_LEVEL: 'warn' });
  try {
    const gen = `${server.url}/v1/image/qwen/generate`;
    const req = { prompt: 'bench', width: 64, height: 64, steps: 1, seed: 1 };
    for (let i = 0; i < 20; i++) await (await generate(gen, req)).arrayBuffer(); // warm up

    const n = 300;
    // The server's own CPU time (all its threads) per job: on a shared, busy machine wall-clock
    // latency mostly measures the neighbours; CPU seconds spent measure kiapi.
    const cpu0 = cpuMsOf(server.child.pid!);
    const t0 = performance.now();
    const sync = await syncGenerations(gen, req, n);
    const genSeconds = (performance.now() - t0) / 1000;
    const cpuPerJob = (cpuMsOf(server.child.pid!) - cpu0) / n;
    const jobId = sync.jobId;
    const lat = sync.latency;

    // The same on the mflux worker path with the fake mflux: its engine is a few lines of Python
    // in the worker process, the closest to a test double of the original's own engine. Its call
    // log is off: the original, run on the same fake for the comparison below, writes none.
    const workerDir = tempDir('kiapi-bench-');
    const workerEnv: Record<string, string> = { ...fakeMfluxEnv(workerDir, { KIAPI_MEMORY_LIMIT_GB: '200' }), KIAPI_DATA_DIR: workerDir, KIAPI_LOG_LEVEL: 'warn' };
    delete workerEnv.FAKE_MFLUX_LOG;
    const worker = await spawnServer(workerEnv);
    let onWorker: SyncRun;
    let workerSeconds: number;
    let workerCpuPerJob: number;
    let sideBySide: Figures = {};
    try {
      const wgen = `${worker.url}/v1/image/qwen/generate`;
      for (let i = 0; i < 20; i++) await (await generate(wgen, req)).arrayBuffer();
      const c0 = cpuMsOfTree(worker.child.pid!);
      const w0 = performance.now();
      onWorker = await syncGenerations(wgen, req, n);
      workerSeconds = (performance.now() - w0) / 1000;
      workerCpuPerJob = (cpuMsOfTree(worker.child.pid!) - c0) / n;
      const original = process.env.KIAPI_BENCH_ORIGINAL_URL;
      if (original) sideBySide = await againstOriginal(wgen, original.replace(/\/+$/, ''), req);
    } finally {
      await worker.stop();
      fs.rmSync(workerDir, { recursive: true, force: true });
    }

    const pollLat = await hammer(16, 5000, async () => {
      const res = await fetch(`${server.url}/v1/jobs/${jobId}`);
      await res.arrayBuffer();
    });

    // A 256 MiB file: uploaded once, then read back over HTTP and straight from disk.
    const size = 256 * MIB;
    const chunk = Buffer.alloc(MIB, 7);
    const form = new FormData();
    const srcPath = path.join(dataDir, 'bench-src.bin');
    await pipeline(Readable.from((function* () { for (let i = 0; i < size / MIB; i++) yield chunk; })()), fs.createWriteStream(srcPath));
    form.append('file', await fs.openAsBlob(srcPath), 'big.bin');
    const record = (await (await fetch(`${server.url}/v1/files`, { method: 'POST', body: form })).json()) as { file_id: string };
    fs.rmSync(srcPath);
    const blob = path.join(dataDir, 'files', record.file_id);

    const httpRates: number[] = [];
    const diskRates: number[] = [];
    for (let round = 0; round < 3; round++) {
      let t = performance.now();
      const got = await drain(`${server.url}/v1/files/${record.file_id}/download`);
      httpRates.push(got / MIB / ((performance.now() - t) / 1000));
      t = performance.now();
      let read = 0;
      for await (const part of fs.createReadStream(blob, { highWaterMark: MIB })) read += (part as Buffer).length;
      diskRates.push(read / MIB / ((performance.now() - t) / 1000));
    }
    const http = Math.max(...httpRates);
    const disk = Math.max(...diskRates);
    return {
      'sync 64x64 1-step generations (n)': String(n),
      'generations jobs/s': fmt(n / genSeconds),
      'generation latency p50 ms': fmt(percentile(lat, 50), 2),
      'generation latency p99 ms': fmt(percentile(lat, 99), 2),
      'preview engine time per job p50 ms (Server-Timing engine)': fmt(percentile(sync.engine, 50), 2),
      'kiapi overhead per job p50 / p99 ms (latency - engine)': `${fmt(percentile(sync.overhead, 50), 2)} / ${fmt(percentile(sync.overhead, 99), 2)}`,
      'server CPU ms per generation (user + sys)': fmt(cpuPerJob, 2),
      'fake-mflux worker: jobs/s': fmt(n / workerSeconds),
      'fake-mflux worker: latency p50 / p99 ms': `${fmt(percentile(onWorker.latency, 50), 2)} / ${fmt(percentile(onWorker.latency, 99), 2)}`,
      'fake-mflux worker: engine time p50 ms (incl. worker round trip)': fmt(percentile(onWorker.engine, 50), 2),
      'fake-mflux worker: kiapi overhead p50 / p99 ms': `${fmt(percentile(onWorker.overhead, 50), 2)} / ${fmt(percentile(onWorker.overhead, 99), 2)}`,
      'fake-mflux worker: CPU ms per generation (server + worker processes)': fmt(workerCpuPerJob, 2),
      ...sideBySide,
      'GET /v1/jobs/{id} requests/s (16 clients, 5 s)': fmt(pollLat.length / 5),
      'GET /v1/jobs/{id} p99 ms': fmt(percentile(pollLat, 99), 2),
      'download 256 MiB MB/s (best of 3)': fmt(http),
      'disk read same file MB/s (best of 3)': fmt(disk),
      'download / disk ratio': fmt(http / disk, 2),
      // Wall-clock figures on a shared 2-core machine say as much about the neighbours as about
      // kiapi; the 1-minute load average at the end puts them in context.
      'load average (1 min) at the end': fmt(os.loadavg()[0] ?? 0, 2),
    };
  } finally {
    await server.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

/**
 * The real-engine path on the fake mflux: a simulated 2 s generation at 1024² (20 steps × 0.1 s)
 * measured end to end through the server, and a simulated 20 s model load behind 5 identical
 * LoRA requests (the original rebuilt the model for each: 5 loads).
 */
async function engine(): Promise<Figures> {
  const dataDir = tempDir('kiapi-bench-');
  const env = {
    ...fakeMfluxEnv(dataDir, { KIAPI_MEMORY_LIMIT_GB: '200', FAKE_MFLUX_STEP_S: '0.1', FAKE_MFLUX_LOAD_S: '20' }),
    KIAPI_DATA_DIR: dataDir,
    KIAPI_LOG_LEVEL: 'warn',
  };
  const server = await spawnServer(env, 60_000);
  try {
    const gen = `${server.url}/v1/image/qwen/generate`;
    const body = { prompt: 'bench', width: 1024, height: 1024, steps: 20, seed: 1 };
    const loadStart = performance.now();
    await (await generate(gen, body, 'application/json')).json(); // includes the 20 s load
    const firstRequestS = (performance.now() - loadStart) / 1000;
    const ratios: number[] = [];
    const e2e: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t = performance.now();
      const job = (await (await generate(gen, { ...body, seed: i }, 'application/json')).json()) as { result: { timings: { total_s: number } } };
      const total = (performance.now() - t) / 1000;
      e2e.push(total);
      ratios.push(total / job.result.timings.total_s);
    }
    ratios.sort((a, b) => a - b);

    // A minimal adapter: one lora_A tensor of one float (kiapi checks a LoRA before queueing it).
    const header = Buffer.from('{"a.lora_A.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}');
    const lora = Buffer.concat([Buffer.alloc(8), header, Buffer.alloc(4)]);
    lora.writeBigUInt64LE(BigInt(header.length), 0);
    const form = new FormData();
    form.append('file', new Blob([lora]), 'style.safetensors');
    const up = (await (await fetch(`${server.url}/v1/files`, { method: 'POST', body: form })).json()) as { file_id: string };
    const loraBody = { prompt: 'lora', width: 256, height: 256, steps: 2, loras: [{ file: { type: 'file_id', file_id: up.file_id }, scale: 0.8 }] };
    const callsBefore = readFakeCalls(dataDir).filter((c) => c.event === 'init').length;
    const loraStart = performance.now();
    for (let i = 0; i < 5; i++) await (await generate(gen, { ...loraBody, seed: i })).arrayBuffer();
    const loraSeconds = (performance.now() - loraStart) / 1000;
    const loraLoads = readFakeCalls(dataDir).filter((c) => c.event === 'init').length - callsBefore;
    return {
      'first 1024² request incl. 20 s load, s': fmt(firstRequestS),
      '1024² 20-step sync end-to-end, s (median of 5)': fmt(e2e.sort((a, b) => a - b)[2]!, 2),
      'end-to-end / engine time (median of 5)': fmt(ratios[2]!, 3),
      'end-to-end / engine time (worst of 5)': fmt(ratios[4]!, 3),
      '5 identical LoRA requests: model loads': String(loraLoads),
      '5 identical LoRA requests: total s': fmt(loraSeconds),
    };
  } finally {
    await server.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

/**
 * The real engine (mflux + MLX from the CPU lock) on the tiny checkpoints of the real-engine lane
 * (`KIAPI_REAL_ENGINE_PYTHON` etc., set by `bash test/real-engine/run.sh` — see BENCHMARKS.md for
 * the command): sync 64×64 2-step latency against the time `generate_image` itself took, the
 * server's added milliseconds, each build's load time and measured size, and what step previews
 * cost (`measurePreviewCost`).
 */
async function realEngine(): Promise<Figures> {
  const dataDir = tempDir('kiapi-bench-real-');
  const server = await spawnServer({ ...realEngineEnv(), KIAPI_DATA_DIR: dataDir, KIAPI_LOG_LEVEL: 'warn' }, 120_000);
  try {
    const gen = `${server.url}/v1/image/qwen/generate`;
    const body = { prompt: 'bench', width: 64, height: 64, steps: 2 };
    const loadStart = performance.now();
    await (await generate(gen, { ...body, seed: 0 }, 'application/json')).json();
    const firstS = (performance.now() - loadStart) / 1000;
    const ratios: number[] = [];
    const added: number[] = [];
    const engineS: number[] = [];
    const e2eS: number[] = [];
    for (let i = 1; i <= 20; i++) {
      const t = performance.now();
      const job = (await (await generate(gen, { ...body, seed: i }, 'application/json')).json()) as { result: { timings: { total_s: number } } };
      const total = (performance.now() - t) / 1000;
      const inside = job.result.timings.total_s;
      engineS.push(inside);
      e2eS.push(total);
      ratios.push(total / inside);
      added.push((total - inside) * 1000);
    }
    const edit = `${server.url}/v1/image/qwen/edit`;
    const png = Buffer.from(await (await generate(gen, { ...body, seed: 99 })).arrayBuffer());
    await (await generate(edit, { ...body, images: [{ data_url: `data:image/png;base64,${png.toString('base64')}` }] }, 'application/json')).json();
    await (await generate(`${server.url}/v1/image/ideogram4/generate`, { prompt: 'bench', width: 256, height: 256, preset: 'V4_TURBO_12' }, 'application/json')).json();
    const health = (await (await fetch(`${server.url}/health`)).json()) as { memory: { loaded: { key: string; weight_gb: number }[] } };
    const q = (xs: number[], p: number) => percentile([...xs].sort((a, b) => a - b), p);
    const figures: Figures = {
      'first request incl. load, s': fmt(firstS, 2),
      'generate_image time, s (median of 20)': fmt(q(engineS, 50), 3),
      // Σ over the 20 jobs: the job record rounds the engine time to 10 ms, which this averages out.
      'end-to-end / generate_image (sum of 20)': fmt(e2eS.reduce((a, b) => a + b, 0) / engineS.reduce((a, b) => a + b, 0), 3),
      'end-to-end / generate_image (median of 20)': fmt(q(ratios, 50), 3),
      'end-to-end / generate_image (p90 of 20)': fmt(q(ratios, 90), 3),
      'server added ms per job (median of 20)': fmt(q(added, 50), 1),
      'server added ms per job (p90 of 20)': fmt(q(added, 90), 1),
    };
    for (const m of health.memory.loaded) figures[`measured GiB of build ${m.key}`] = fmt(m.weight_gb, 3);
    await server.stop();
    // Step previews, at the engine (the worker engine on the same tiny builds, after the server
    // has let go of its worker): the one-off fit and each preview against the step it follows.
    for (const [name, value] of Object.entries(await measurePreviewCost())) figures[`previews: ${name}`] = value;
    return figures;
  } finally {
    await server.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

/** CPU time (user + system, every thread) a process has used so far, in ms, from /proc (Linux). */
/**
 * kiapi on the fake-mflux worker and the original server (KIAPI_BENCH_ORIGINAL_URL, started by the
 * operator on the same fake mflux; see BENCHMARKS.md) in alternating blocks of sync generations,
 * so both see the same minutes of this shared machine: latency as the client sees it.
 */
async function againstOriginal(kiapiGen: string, originalBase: string, req: Record<string, unknown>): Promise<Figures> {
  const originalGen = `${originalBase}/v1/image/qwen/generate`;
  const blocks = Number(process.env.KIAPI_BENCH_ORIGINAL_BLOCKS ?? 10);
  const perBlock = 50;
  const one = async (url: string, seed: number): Promise<number> => {
    const t = performance.now();
    const res = await generate(url, { ...req, seed });
    const body = Buffer.from(await res.arrayBuffer());
    const ms = performance.now() - t;
    if (res.status !== 200 || body.subarray(1, 4).toString('latin1') !== 'PNG') {
      throw new Error(`${url} answered ${res.status} without a PNG: is KIAPI_BENCH_ORIGINAL_URL an original kiapi server on the fake mflux?`);
    }
    return ms;
  };
  for (let i = 0; i < 20; i++) await one(originalGen, i);
  const sides = { kiapi: { url: kiapiGen, ms: [] as number[], wall: 0 }, original: { url: originalGen, ms: [] as number[], wall: 0 } };
  for (let b = 0; b < blocks; b++) {
    // Each goes first in every other block: neither always follows the other's leftovers.
    const order = b % 2 === 0 ? [sides.kiapi, sides.original] : [sides.original, sides.kiapi];
    for (const side of order) {
      const t = performance.now();
      for (let i = 0; i < perBlock; i++) side.ms.push(await one(side.url, b * perBlock + i));
      side.wall += performance.now() - t;
    }
  }
  const figures: Figures = { 'side by side: blocks of 50 sync generations, each': String(blocks) };
  for (const [name, side] of Object.entries(sides)) {
    side.ms.sort((x, y) => x - y);
    figures[`side by side: ${name} latency p50 / p90 / p99 ms`] = [50, 90, 99].map((p) => fmt(percentile(side.ms, p), 2)).join(' / ');
    figures[`side by side: ${name} jobs/s`] = fmt(side.ms.length / (side.wall / 1000));
  }
  figures['side by side: kiapi p50 / original p50'] = fmt(percentile(sides.kiapi.ms, 50) / percentile(sides.original.ms, 50), 2);
  return figures;
}

/** CPU ms of a process and its descendants (the server and its engine worker), from /proc. */
function cpuMsOfTree(pid: number): number {
  let total = cpuMsOf(pid);
  for (const task of fs.readdirSync(`/proc/${pid}/task`)) {
    let children: string;
    try {
      children = fs.readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').trim();
    } catch {
      continue; // the thread ended meanwhile
    }
    for (const child of children ? children.split(' ') : []) total += cpuMsOfTree(Number(child));
  }
  return total;
}

function cpuMsOf(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) are space-separated; utime and stime
  // are fields 14 and 15, in clock ticks (100 per second on Linux).
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
}

/** Resident set size of a process in bytes, from /proc (Linux). */
function rssOf(pid: number): number {
  const kb = /^VmRSS:\s+(\d+) kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!kb) throw new Error(`no VmRSS for ${pid}`);
  return Number(kb[1]) * 1024;
}

interface Answer {
  status: number;
  body: string;
}

/** One request over a keep-alive agent (node:http: the client's own overhead stays small). */
function call(agent: http.Agent, url: string, method = 'GET', body?: string, headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, agent, headers: body ? { 'content-type': 'application/json', ...headers } : headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * Sustained mixed load: 200 clients polling `GET /v1/jobs/{id}` (ids of recent jobs) and 20
 * clients generating (sync, 256×256, 4 steps, preview engine) for KIAPI_BENCH_LOAD_S (120 s by
 * default: the issue asks for RSS at minute 1 and minute 2 of load). Every answer must be a 200.
 */
async function load(): Promise<Figures> {
  const seconds = Number(process.env.KIAPI_BENCH_LOAD_S ?? 120);
  const pollers = 200;
  const generators = 20;
  const dataDir = tempDir('kiapi-bench-');
  const server = await spawnServer({ KIAPI_DATA_DIR: dataDir, KIAPI_ENGINE: 'preview', KIAPI_PREVIEW_STEP_MS: '0', KIAPI_LOG_LEVEL: 'warn' });
  const pid = server.child.pid!;
  const agent = new http.Agent({ keepAlive: true, maxSockets: pollers + generators + 8 });
  const gen = `${server.url}/v1/image/qwen/generate`;
  const genBody = (seed: number) => JSON.stringify({ prompt: `load ${seed}`, width: 256, height: 256, steps: 4, seed });
  try {
    // Warm up and seed the id pool the pollers read from.
    const recent: string[] = [];
    for (let i = 0; i < 20; i++) {
      const res = await call(agent, gen, 'POST', genBody(i), { accept: 'application/json' });
      recent.push((JSON.parse(res.body) as { id: string }).id);
    }
    const rssStart = rssOf(pid);

    let errors = 0;
    const firstErrors: string[] = [];
    const fail = (what: string) => {
      errors++;
      if (firstErrors.length < 5) firstErrors.push(what);
    };
    const pollByMinute: number[][] = [];
    const genLatencies: number[] = [];
    let generated = 0;
    const rssAt: Record<number, number> = {};
    let rssPeak = rssStart;
    const t0 = performance.now();
    const end = t0 + seconds * 1000;
    const minuteOf = (t: number) => Math.floor((t - t0) / 60_000);

    const sampler = (async () => {
      let next = 60;
      while (performance.now() < end) {
        await new Promise((r) => setTimeout(r, 250));
        const rss = rssOf(pid);
        rssPeak = Math.max(rssPeak, rss);
        const elapsed = (performance.now() - t0) / 1000;
        if (elapsed >= next) {
          rssAt[next] = rss;
          next += 60;
        }
      }
      rssAt[Math.round((performance.now() - t0) / 1000)] ??= rssOf(pid);
    })();

    let seed = 1000;
    const generating = Array.from({ length: generators }, async () => {
      while (performance.now() < end) {
        const t = performance.now();
        try {
          const res = await call(agent, gen, 'POST', genBody(seed++), { accept: 'application/json' });
          if (res.status !== 200) fail(`generate → ${res.status} ${res.body.slice(0, 200)}`);
          else {
            const job = JSON.parse(res.body) as { id: string; status: string };
            if (job.status !== 'succeeded') fail(`generate → job ${job.status}`);
            recent.push(job.id);
            if (recent.length > 1000) recent.shift();
            generated++;
            genLatencies.push(performance.now() - t);
          }
        } catch (err) {
          fail(`generate → ${(err as Error).message}`);
        }
      }
    });
    const polling = Array.from({ length: pollers }, async () => {
      while (performance.now() < end) {
        const id = recent[Math.floor(Math.random() * recent.length)]!;
        const t = performance.now();
        try {
          const res = await call(agent, `${server.url}/v1/jobs/${id}`);
          const ms = performance.now() - t;
          if (res.status !== 200) fail(`poll → ${res.status} ${res.body.slice(0, 200)}`);
          else (pollByMinute[minuteOf(t)] ??= []).push(ms);
        } catch (err) {
          fail(`poll → ${(err as Error).message}`);
        }
      }
    });
    await Promise.all([...generating, ...polling, sampler]);
    const elapsed = (performance.now() - t0) / 1000;

    const allPolls = pollByMinute.flat().sort((a, b) => a - b);
    genLatencies.sort((a, b) => a - b);
    const mib = (n: number | undefined) => (n === undefined ? 'n/a' : fmt(n / MIB));
    const figures: Figures = {
      'load duration s': fmt(elapsed),
      'clients: polling + generating': `${pollers} + ${generators}`,
      'errors (non-200 or failed requests)': String(errors),
      'generations (256², 4 steps)': String(generated),
      'generations jobs/s': fmt(generated / elapsed),
      'generation latency p50 / p99 ms': `${fmt(percentile(genLatencies, 50))} / ${fmt(percentile(genLatencies, 99))}`,
      'GET /v1/jobs/{id} requests': String(allPolls.length),
      'GET /v1/jobs/{id} requests/s': fmt(allPolls.length / elapsed),
      'GET /v1/jobs/{id} p50 / p99 ms (all)': `${fmt(percentile(allPolls, 50), 2)} / ${fmt(percentile(allPolls, 99), 2)}`,
    };
    pollByMinute.forEach((lat, i) => {
      lat.sort((a, b) => a - b);
      figures[`GET /v1/jobs/{id} p99 ms, minute ${i + 1}`] = fmt(percentile(lat, 99), 2);
    });
    figures['server RSS MiB: before load'] = mib(rssStart);
    for (const [t, rss] of Object.entries(rssAt).sort(([a], [b]) => Number(a) - Number(b))) figures[`server RSS MiB: at ${t} s`] = mib(rss);
    if (rssAt[60] !== undefined && rssAt[120] !== undefined) figures['server RSS growth minute 1 → 2'] = `${fmt(((rssAt[120] - rssAt[60]) / rssAt[60]) * 100)} %`;
    figures['server RSS MiB: peak'] = mib(rssPeak);
    if (firstErrors.length > 0) figures['first errors'] = firstErrors.join(' | ');
    return figures;
  } finally {
    agent.destroy();
    await server.stop();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

export const scenarios: Record<string, () => Promise<Figures>> = { overhead, engine, load, 'real-engine': realEngine, scale, events, cluster };
