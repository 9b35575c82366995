/**
 * `npm run bench -- cluster`: several kiapi nodes sharing a real PostgreSQL and a real S3Proxy
 * (test/cluster/services.ts; run test/cluster/install.sh once first), each node the built CLI as
 * its own process on 127.0.0.1, measured over real HTTP:
 *
 * 1. throughput with 1, 2, 3 and again 1 node: a batch of async jobs whose engine time is sleep (the
 *    preview engine's KIAPI_PREVIEW_STEP_MS, as an accelerator would leave the CPU free), spread
 *    over the nodes' ports; jobs/s and the speed-up over one node, and from the job records where
 *    the time went (engine, the rest of a run, gaps between a node's jobs, start and tail);
 * 2. the scheduling cost per job: sequential sync 64×64 1-step jobs on a single-node kiapi and on
 *    a one-node cluster, requests alternating between the two so both see the same machine;
 * 3. cross-node sync latency: a model offered only by node B (KIAPI_CLUSTER_MODELS), sync requests
 *    to node A (which waits for B and answers from the shared stores) against requests to B.
 *
 * Each part gets its own database and bucket on the shared services. Every process started here
 * is stopped at the end, on failure too (and killed if the bench itself is interrupted).
 */
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startPostgres, startS3, type Postgres, type S3Server } from '../test/cluster/services.js';
import { spawnServer, tempDir, type SpawnedServer } from '../test/support/server.js';
import { fmt, percentile } from './stats.js';

type Figures = Record<string, string>;

/** Engine time per throughput job: STEPS × STEP_MS of sleep (~0.8 s), next to a tiny render. */
const STEP_MS = Number(process.env.KIAPI_BENCH_CLUSTER_STEP_MS ?? 100);
const STEPS = 8;
/** Jobs per throughput round: divisible by 1, 2 and 3, so every node count can split it evenly. */
const JOBS = Number(process.env.KIAPI_BENCH_CLUSTER_JOBS ?? 48);
/** Sequential sync requests per figure of parts 2 and 3 (each side). */
const SAMPLES = Number(process.env.KIAPI_BENCH_CLUSTER_SAMPLES ?? 200);
/** Submissions in flight at once while a batch is being queued. */
const SUBMITTERS = 6;

interface Services {
  db: Postgres;
  s3: S3Server;
  admin: pg.Client;
  rounds: number;
}

interface Node {
  id: string;
  server: SpawnedServer;
  dataDir: string;
}

/** Nodes still running (and their data dirs): killed and removed if the bench exits before stopping them. */
const live = new Map<SpawnedServer, string>();
/** Temp dirs of the services, removed if the bench exits before stopping them. */
const serviceDirs = new Set<string>();

function killLeftovers(): void {
  for (const [s, dir] of live) {
    s.child.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
  // services.ts's own exit hook has sent SIGKILL to PostgreSQL and S3Proxy by now or does next.
  for (const dir of serviceDirs) fs.rmSync(dir, { recursive: true, force: true });
}

/** An interrupted bench runs the exit hooks (here and in services.ts) instead of dying at once. */
function interrupted(): void {
  process.exit(130);
}

/** A fresh database and bucket for one part, so no part sees another's jobs. */
async function freshCluster(svc: Services): Promise<{ url: string; bucket: string }> {
  const n = ++svc.rounds;
  await svc.admin.query(`CREATE DATABASE kiapi_bench_${n}`);
  return { url: svc.db.url.replace(/\/kiapi$/, `/kiapi_bench_${n}`), bucket: `kiapi-bench-${n}` };
}

async function startNode(svc: Services, cluster: { url: string; bucket: string } | null, id: string, env: Record<string, string> = {}): Promise<Node> {
  const dataDir = tempDir('kiapi-bench-node-');
  const clusterEnv: Record<string, string> = cluster
    ? {
        KIAPI_CLUSTER_DATABASE_URL: cluster.url,
        KIAPI_CLUSTER_S3_BUCKET: cluster.bucket,
        KIAPI_CLUSTER_S3_ENDPOINT: svc.s3.endpoint,
        KIAPI_CLUSTER_NODE_ID: id,
        AWS_ACCESS_KEY_ID: svc.s3.accessKeyId,
        AWS_SECRET_ACCESS_KEY: svc.s3.secretAccessKey,
      }
    : {};
  try {
    const server = await spawnServer({ KIAPI_DATA_DIR: dataDir, KIAPI_ENGINE: 'preview', KIAPI_LOG_LEVEL: 'warn', ...clusterEnv, ...env }, 60_000);
    live.set(server, dataDir);
    return { id, server, dataDir };
  } catch (err) {
    fs.rmSync(dataDir, { recursive: true, force: true });
    throw err;
  }
}

async function stopNodes(nodes: Node[]): Promise<void> {
  await Promise.all(
    nodes.map(async (n) => {
      const killer = setTimeout(() => n.server.child.kill('SIGKILL'), 20_000);
      await n.server.stop();
      clearTimeout(killer);
      live.delete(n.server);
      fs.rmSync(n.dataDir, { recursive: true, force: true });
    }),
  );
}

/**
 * Makes a fresh database and bucket, starts the nodes one after the other (each joins a cluster
 * that is already there; `cluster: false` is a single-node kiapi beside it), runs `fn`, stops them.
 */
async function withNodes<T>(
  svc: Services,
  specs: { id: string; env?: Record<string, string>; cluster: boolean }[],
  fn: (nodes: Node[], records: pg.Client) => Promise<T>,
): Promise<T> {
  const cluster = await freshCluster(svc);
  const nodes: Node[] = [];
  // The bench's own reader of the part's records (the nodes create the tables at start-up).
  const records = new pg.Client({ connectionString: cluster.url });
  await records.connect();
  try {
    for (const s of specs) nodes.push(await startNode(svc, s.cluster ? cluster : null, s.id, s.env));
    return await fn(nodes, records);
  } finally {
    await stopNodes(nodes);
    await records.end().catch(() => undefined);
  }
}

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

/** One request over a keep-alive agent (node:http keeps the client's share small). */
function call(agent: http.Agent, url: string, method = 'GET', body?: unknown, headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request(url, { method, agent, headers: payload ? { 'content-type': 'application/json', ...headers } : headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(payload);
  });
}

/**
 * CPU time (user + system, every thread) of a process and all its descendants, in ms, from /proc
 * (Linux). Descendants by parent id, not by process group: PostgreSQL puts every backend in a
 * group of its own. Children already reaped count through their parent's cutime/cstime.
 */
function treeCpuMs(root: number): number {
  const procs = new Map<number, { ppid: number; ticks: number }>();
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    // After the command name (which may hold spaces): state, ppid, …, utime, stime, cutime, cstime (fields 14–17).
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    procs.set(Number(entry), { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]) });
  }
  const inTree = (pid: number): boolean => {
    for (let p = pid, hops = 0; p > 1 && hops < 64; p = procs.get(p)?.ppid ?? 0, hops++) if (p === root) return true;
    return false;
  };
  let ticks = 0;
  for (const [pid, proc] of procs) if (inTree(pid)) ticks += proc.ticks;
  return (ticks * 1000) / 100;
}

function cpuMsOf(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
}

/** CPU ms used so far by the kiapi nodes, PostgreSQL (all its backends) and S3Proxy. */
function cpuSnapshot(svc: Services, nodes: Node[]): { kiapi: number; postgres: number; s3proxy: number } {
  return {
    kiapi: nodes.reduce((sum, n) => sum + cpuMsOf(n.server.child.pid!), 0),
    postgres: svc.db.pid ? treeCpuMs(svc.db.pid) : NaN,
    s3proxy: svc.s3.pid ? treeCpuMs(svc.s3.pid) : NaN,
  };
}

const sorted = (xs: number[]) => [...xs].sort((a, b) => a - b);
const p = (xs: number[], q: number) => percentile(sorted(xs), q);
const load1 = () => fmt(os.loadavg()[0] ?? 0, 2);

async function submitAsync(agent: http.Agent, node: Node, seed: number, steps: number): Promise<string> {
  const res = await call(agent, `${node.server.url}/v1/image/qwen/generate`, 'POST', { prompt: `cluster ${seed}`, width: 64, height: 64, steps, seed, mode: 'async' });
  if (res.status !== 202) throw new Error(`submission to ${node.id} answered ${res.status}: ${res.body.toString().slice(0, 300)}`);
  return (JSON.parse(res.body.toString()) as { job_id: string }).job_id;
}

/** Submits `count` async jobs round-robin over the nodes, SUBMITTERS at a time; ids in order. */
async function submitBatch(agent: http.Agent, nodes: Node[], count: number, steps: number, seed0: number): Promise<string[]> {
  const ids: string[] = new Array<string>(count);
  let next = 0;
  await Promise.all(
    Array.from({ length: SUBMITTERS }, async () => {
      for (let i = next++; i < count; i = next++) ids[i] = await submitAsync(agent, nodes[i % nodes.length]!, seed0 + i, steps);
    }),
  );
  return ids;
}

interface JobRow {
  id: string;
  status: string;
  owner: string | null;
  created_at: number;
  started_at: number | null;
  finished_at: number | null;
  error: string | null;
  result: string | null;
}

/**
 * Waits until every job has finished, reading the shared database (one cheap query per 100 ms,
 * so the waiting costs the nodes nothing; the figures come from the records' own timestamps,
 * not from when this loop noticed).
 */
async function awaitBatch(clusterDb: pg.Client, ids: string[], timeoutMs: number): Promise<JobRow[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const res = await clusterDb.query<JobRow>('SELECT id, status, owner, created_at, started_at, finished_at, error, result FROM jobs WHERE id = ANY($1)', [ids]);
    if (res.rows.length === ids.length && res.rows.every((r) => !['queued', 'running'].includes(r.status))) return res.rows;
    if (Date.now() > deadline) throw new Error(`${res.rows.filter((r) => ['queued', 'running'].includes(r.status)).length} of ${ids.length} jobs not finished after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

interface Round {
  wallS: number;
  jobsPerS: number;
  perNode: Record<string, number>;
  /** Per job: claim to recorded end, s. */
  runS: number[];
  /** Per job: the engine's own time (the result's timings.total_s, 10 ms steps), s. */
  engineS: number[];
  /** Per node, between a job's end and the same node's next start, while work was queued: ms. */
  gapsMs: number[];
  /** Σ job run time / (nodes × wall): how busy the engines were. */
  busy: number;
  /** Where a node's wall time went, averaged over the nodes (s): running jobs, between them, before the first, after the last. */
  split: { run: number; gaps: number; start: number; tail: number };
  submitS: number;
  firstStartS: number;
  cpu: { kiapi: number; postgres: number; s3proxy: number };
  load: string;
}

/** Part 1, one node count: warm every node, then the batch; figures from the job records. */
async function throughputRound(svc: Services, count: number): Promise<Round> {
  const ids = ['a', 'b', 'c', 'd', 'e'].slice(0, count).map((x) => `bench-${x}`);
  return withNodes(
    svc,
    ids.map((id) => ({ id, cluster: true, env: { KIAPI_PREVIEW_STEP_MS: String(STEP_MS) } })),
    async (nodes, db) => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: SUBMITTERS + 2 });
      try {
        // Warm-up: a few 1-step jobs per node, until every node has run one (and holds the
        // model warm): placement prefers warm nodes, and a cold one would wait out the grace.
        for (let round = 0; ; round++) {
          const warm = await submitBatch(agent, nodes, 3 * count, 1, 100_000 + round * 100);
          await awaitBatch(db, warm, 60_000);
          const owners = new Set((await db.query<{ owner: string }>('SELECT DISTINCT owner FROM jobs WHERE owner IS NOT NULL')).rows.map((r) => r.owner));
          if (nodes.every((n) => owners.has(n.id)) || round >= 5) break;
        }

        const cpu0 = cpuSnapshot(svc, nodes);
        const t0 = Date.now() / 1000;
        const batch = await submitBatch(agent, nodes, JOBS, STEPS, 0);
        const submitS = Date.now() / 1000 - t0;
        const rows = await awaitBatch(db, batch, 600_000);
        const cpu1 = cpuSnapshot(svc, nodes);
        const failed = rows.filter((r) => r.status !== 'succeeded');
        if (failed.length > 0) throw new Error(`${failed.length} jobs did not succeed, e.g. ${failed[0]!.status}: ${failed[0]!.error}`);
        // The API agrees (one node, every job): the records are what a client would see.
        for (const id of batch) {
          const res = await call(agent, `${nodes[0]!.server.url}/v1/jobs/${id}`);
          const status = (JSON.parse(res.body.toString()) as { status: string }).status;
          if (res.status !== 200 || status !== 'succeeded') throw new Error(`GET /v1/jobs/${id} answered ${res.status} ${status}`);
        }

        const end = Math.max(...rows.map((r) => r.finished_at!));
        const wallS = end - t0;
        const perNode: Record<string, number> = {};
        for (const r of rows) perNode[r.owner!] = (perNode[r.owner!] ?? 0) + 1;
        const runS = rows.map((r) => r.finished_at! - r.started_at!);
        const engineS = rows.map((r) => (JSON.parse(r.result ?? '{}') as { timings?: { total_s?: number } }).timings?.total_s ?? NaN);
        const gapsMs: number[] = [];
        const split = { run: 0, gaps: 0, start: 0, tail: 0 };
        for (const n of nodes) {
          const mine = rows.filter((r) => r.owner === n.id).sort((a, b) => a.started_at! - b.started_at!);
          for (let i = 1; i < mine.length; i++) gapsMs.push((mine[i]!.started_at! - mine[i - 1]!.finished_at!) * 1000);
          if (mine.length === 0) continue;
          split.start += (mine[0]!.started_at! - t0) / count;
          split.tail += (end - mine[mine.length - 1]!.finished_at!) / count;
          for (const r of mine) split.run += (r.finished_at! - r.started_at!) / count;
        }
        split.gaps = wallS - split.run - split.start - split.tail;
        return {
          wallS,
          jobsPerS: JOBS / wallS,
          perNode,
          runS,
          engineS,
          gapsMs,
          busy: runS.reduce((a, b) => a + b, 0) / (count * wallS),
          split,
          submitS,
          firstStartS: Math.min(...rows.map((r) => r.started_at!)) - t0,
          cpu: { kiapi: cpu1.kiapi - cpu0.kiapi, postgres: cpu1.postgres - cpu0.postgres, s3proxy: cpu1.s3proxy - cpu0.s3proxy },
          load: load1(),
        };
      } finally {
        agent.destroy();
      }
    },
  );
}

interface Timed {
  latency: number[];
  /** Server-Timing parts per request (ms): wait (queued → claimed), engine, store, total (server side). */
  timing: Record<string, number[]>;
  answers: string[];
}

const timed = (): Timed => ({ latency: [], timing: {}, answers: [] });

/** One sync 64×64 1-step generation; its latency and how the server split it (Server-Timing). */
async function syncOnce(agent: http.Agent, url: string, seed: number, into: Timed): Promise<Answer> {
  const t = performance.now();
  const res = await call(agent, `${url}/v1/image/qwen/generate`, 'POST', { prompt: 'bench', width: 64, height: 64, steps: 1, seed }, { accept: 'image/png' });
  const ms = performance.now() - t;
  if (res.status !== 200) throw new Error(`sync generation answered ${res.status}: ${res.body.toString().slice(0, 300)}`);
  into.latency.push(ms);
  for (const m of String(res.headers['server-timing'] ?? '').matchAll(/([a-z]+);dur=([\d.]+)/g)) (into.timing[m[1]!] ??= []).push(Number(m[2]));
  into.answers.push(String(res.headers['content-type'] ?? '').split(';')[0]!);
  return res;
}

/**
 * Sequential sync requests to two servers in blocks of 10, alternating, so a minute when the
 * shared machine is slow falls on both alike.
 */
async function alternate(agent: http.Agent, a: string, b: string, n: number): Promise<[Timed, Timed]> {
  const ta = timed();
  const tb = timed();
  const warm = timed();
  for (let i = 0; i < 20; i++) {
    await syncOnce(agent, a, 900_000 + i, warm);
    await syncOnce(agent, b, 900_000 + i, warm);
  }
  for (let block = 0; block < n / 10; block++) {
    for (let i = 0; i < 10; i++) await syncOnce(agent, a, block * 10 + i, ta);
    for (let i = 0; i < 10; i++) await syncOnce(agent, b, block * 10 + i, tb);
  }
  return [ta, tb];
}

const pair = (xs: number[], digits = 2) => `${fmt(p(xs, 50), digits)} / ${fmt(p(xs, 90), digits)}`;
const kinds = (t: Timed) => [...new Set(t.answers)].join(', ');
/** p50 of each Server-Timing part; the client's latency beyond `total` is HTTP and the client. */
const timingSplit = (t: Timed) => {
  const parts = ['wait', 'engine', 'store', 'total'].map((k) => `${k} ${fmt(p(t.timing[k] ?? [], 50), 2)}`);
  return parts.join(', ');
};

/**
 * What PostgreSQL runs per job: every statement of `n` more sequential sync jobs, from the
 * server's log (log_min_duration_statement = 0, on for this count only: logging slows the server,
 * so no latency is measured meanwhile), by verb and table. The node's background statements
 * (heartbeat and poll every second, lease sweep) fall in the count too: a few per 50 jobs.
 */
async function statementCensus(svc: Services, agent: http.Agent, url: string, n: number): Promise<string> {
  const logFile = path.join(svc.db.dir, 'postgres.log');
  const adminPid = (await svc.admin.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!.pid;
  // A reload reaches every backend asynchronously: a marker statement showing up in the log says it has.
  const mark = async (label: string): Promise<number> => {
    for (let i = 0; ; i++) {
      await svc.admin.query(`SELECT '${label}-${i}' AS census`);
      const text = fs.readFileSync(logFile, 'utf8');
      const at = text.indexOf(`'${label}-${i}'`);
      if (at >= 0) return at;
      if (i > 100) throw new Error('statement logging did not take effect');
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  await svc.admin.query('ALTER SYSTEM SET log_min_duration_statement = 0');
  await svc.admin.query('SELECT pg_reload_conf()');
  let text: string;
  try {
    const from = await mark('census-start');
    const into = timed();
    for (let i = 0; i < n; i++) await syncOnce(agent, url, 500_000 + i, into);
    const to = await mark('census-end');
    text = fs.readFileSync(logFile, 'utf8').slice(from, to);
  } finally {
    await svc.admin.query('ALTER SYSTEM RESET log_min_duration_statement');
    await svc.admin.query('SELECT pg_reload_conf()');
  }
  const counts = new Map<string, number>();
  let total = 0;
  for (const m of text.matchAll(/\[(\d+)\] LOG: {2}duration: [\d.]+ ms {2}(?:statement|execute [^:]*): ([^\n]*(?:\n\t[^\n]*)*)/g)) {
    if (Number(m[1]) === adminPid) continue;
    const sql = m[2]!.replace(/\s+/g, ' ').trim();
    const verb = sql.split(' ')[0]!.toUpperCase();
    // The table written or read first (`FROM now()` is a function, not a table).
    const t = /\b(?:INTO|UPDATE)\s+([\w.]+)|\bFROM\s+([\w.]+)\b(?!\s*\()/i.exec(sql);
    const table = t?.[1] ?? t?.[2] ?? sql.split(' ')[1]?.replace(/\(.*/, '') ?? '';
    const key = `${verb} ${table}`.trim();
    counts.set(key, (counts.get(key) ?? 0) + 1);
    total++;
  }
  const parts = [...counts].sort((a, b) => b[1] - a[1]).map(([k, c]) => `${k} ${fmt(c / n, 1)}`);
  return `${fmt(total / n, 1)} = ${parts.join(', ')}`;
}

/** Part 2: the cluster's own cost per job, a single-node kiapi against a one-node cluster. */
async function overheadPart(svc: Services): Promise<Figures> {
  return withNodes(
    svc,
    [
      { id: 'single', cluster: false },
      { id: 'bench-solo', cluster: true },
    ],
    async ([single, solo]) => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      try {
        const cpu0 = { single: cpuMsOf(single!.server.child.pid!), ...cpuSnapshot(svc, [solo!]) };
        const [s, c] = await alternate(agent, single!.server.url, solo!.server.url, SAMPLES);
        const cpu1 = { single: cpuMsOf(single!.server.child.pid!), ...cpuSnapshot(svc, [solo!]) };
        const perJob = (ms: number) => fmt(ms / SAMPLES, 2);
        const statements = await statementCensus(svc, agent, solo!.server.url, 50);
        return {
          'sync 64x64 1-step requests per side (alternating blocks of 10)': String(SAMPLES),
          'single node: latency p50 / p90 ms': pair(s.latency),
          'single node: Server-Timing p50 ms': timingSplit(s),
          'one-node cluster: latency p50 / p90 ms': pair(c.latency),
          'one-node cluster: Server-Timing p50 ms': timingSplit(c),
          'cluster cost per job, p50 / p90 difference ms': `${fmt(p(c.latency, 50) - p(s.latency, 50), 2)} / ${fmt(p(c.latency, 90) - p(s.latency, 90), 2)}`,
          'kiapi CPU ms per job: single / cluster node': `${perJob(cpu1.single - cpu0.single)} / ${perJob(cpu1.kiapi - cpu0.kiapi)}`,
          'PostgreSQL CPU ms per cluster job (all backends)': perJob(cpu1.postgres - cpu0.postgres),
          'S3Proxy CPU ms per cluster job': perJob(cpu1.s3proxy - cpu0.s3proxy),
          'PostgreSQL statements per cluster job (50 more, logged)': statements,
          'answers (content types): single / cluster': `${kinds(s)} / ${kinds(c)}`,
          'load average (1 min) after part 2': load1(),
        };
      } finally {
        agent.destroy();
      }
    },
  );
}

/** Part 3: sync requests for a model only node B offers, sent to A (runs on B) and to B. */
async function crossNodePart(svc: Services): Promise<Figures> {
  return withNodes(
    svc,
    [
      { id: 'bench-b', cluster: true, env: { KIAPI_CLUSTER_MODELS: 'qwen/image' } },
      { id: 'bench-a', cluster: true, env: { KIAPI_CLUSTER_MODELS: 'qwen/edit-2509' } },
    ],
    async ([b, a], db) => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      try {
        const [viaA, viaB] = await alternate(agent, a!.server.url, b!.server.url, SAMPLES);
        const owners = (await db.query<{ owner: string; n: string }>('SELECT owner, count(*) AS n FROM jobs GROUP BY owner ORDER BY owner')).rows;
        return {
          'sync 64x64 1-step requests per side (alternating blocks of 10)': String(SAMPLES),
          'sent to A (model on B only): latency p50 / p90 ms': pair(viaA.latency),
          'sent to B (runs there): latency p50 / p90 ms': pair(viaB.latency),
          'sent to A: Server-Timing p50 ms': timingSplit(viaA),
          'sent to B: Server-Timing p50 ms': timingSplit(viaB),
          'cross-node cost, p50 / p90 difference ms': `${fmt(p(viaA.latency, 50) - p(viaB.latency, 50), 2)} / ${fmt(p(viaA.latency, 90) - p(viaB.latency, 90), 2)}`,
          'answers (content types): via A / via B': `${kinds(viaA)} / ${kinds(viaB)}`,
          'jobs run per node (from the records)': owners.map((o) => `${o.owner} ${o.n}`).join(', '),
          'load average (1 min) after part 3': load1(),
        };
      } finally {
        agent.destroy();
      }
    },
  );
}

export async function cluster(): Promise<Figures> {
  const parts = (process.env.KIAPI_BENCH_CLUSTER_PARTS ?? 'throughput,overhead,cross').split(',');
  const figures: Figures = {
    'machine: cores (nproc) / load average 1, 5, 15 min at start': `${os.availableParallelism()} / ${os.loadavg().map((l) => fmt(l, 2)).join(', ')}`,
  };
  process.on('exit', killLeftovers);
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);
  let db: Postgres | null = null;
  let s3: S3Server | null = null;
  let admin: pg.Client | null = null;
  try {
    db = await startPostgres();
    serviceDirs.add(db.dir);
    s3 = await startS3();
    serviceDirs.add(s3.dir);
    admin = new pg.Client({ connectionString: db.url.replace(/\/kiapi$/, '/postgres') });
    await admin.connect();
    const svc: Services = { db, s3, admin, rounds: 0 };
    if (parts.includes('throughput')) {
      figures['throughput: jobs per round, engine time per job'] = `${JOBS} async 64x64, ${STEPS} steps x ${STEP_MS} ms sleep = ${fmt((STEPS * STEP_MS) / 1000, 2)} s`;
      // One node again at the end: the speed-up divides figures taken minutes apart on a shared
      // machine, and the two 1-node rounds show how much a minute alone moves them.
      const order = [1, 2, 3, 1];
      const rounds: Round[] = [];
      for (const [i, count] of order.entries()) {
        const round = await throughputRound(svc, count);
        rounds.push(round);
        const k = `${count} node${count > 1 ? 's' : ''}${i === order.length - 1 ? ' (again)' : ''}`;
        figures[`${k}: jobs/s (wall s)`] = `${fmt(round.jobsPerS, 2)} (${fmt(round.wallS, 2)})`;
        figures[`${k}: jobs per node`] = Object.entries(round.perNode).sort().map(([n, c]) => `${n} ${c}`).join(', ');
        figures[`${k}: job run time p50 / p90 s (claim → end)`] = pair(round.runS, 3);
        figures[`${k}: engine time p50 / p90 s (the result's timings)`] = pair(round.engineS, 3);
        figures[`${k}: gap between a node's jobs p50 / p90 / max ms`] = `${pair(round.gapsMs, 1)} / ${fmt(Math.max(...round.gapsMs), 1)}`;
        figures[`${k}: engines busy (Σ run time / nodes × wall)`] = `${fmt(round.busy * 100, 1)} %`;
        const sp = round.split;
        figures[`${k}: per node, wall = run + gaps + before first + after last, s`] =
          `${fmt(round.wallS, 2)} = ${fmt(sp.run, 2)} + ${fmt(sp.gaps, 2)} + ${fmt(sp.start, 2)} + ${fmt(sp.tail, 2)}`;
        figures[`${k}: submission of the batch s / first claim after s`] = `${fmt(round.submitS, 2)} / ${fmt(round.firstStartS, 3)}`;
        figures[`${k}: CPU s kiapi / postgres / s3proxy (of ${fmt(round.wallS * os.availableParallelism(), 0)} core-s)`] =
          `${fmt(round.cpu.kiapi / 1000, 2)} / ${fmt(round.cpu.postgres / 1000, 2)} / ${fmt(round.cpu.s3proxy / 1000, 2)}`;
        figures[`${k}: load average (1 min) at the end`] = round.load;
      }
      const [first, two, three, last] = rounds as [Round, Round, Round, Round];
      const base = (first.jobsPerS + last.jobsPerS) / 2;
      figures['speed-up 2 nodes / 3 nodes over 1 (mean of both 1-node rounds)'] = `${fmt(two.jobsPerS / base, 2)}x / ${fmt(three.jobsPerS / base, 2)}x`;
      figures['speed-up 3 nodes over the first / the second 1-node round'] = `${fmt(three.jobsPerS / first.jobsPerS, 2)}x / ${fmt(three.jobsPerS / last.jobsPerS, 2)}x`;
    }
    if (parts.includes('overhead')) for (const [k, v] of Object.entries(await overheadPart(svc))) figures[`scheduling: ${k}`] = v;
    if (parts.includes('cross')) for (const [k, v] of Object.entries(await crossNodePart(svc))) figures[`cross-node: ${k}`] = v;
    figures['load average 1, 5, 15 min at the end'] = os.loadavg().map((l) => fmt(l, 2)).join(', ');
    return figures;
  } finally {
    await admin?.end().catch(() => undefined);
    await s3?.stop();
    await db?.stop();
    serviceDirs.clear();
    process.off('exit', killLeftovers);
    process.off('SIGINT', interrupted);
    process.off('SIGTERM', interrupted);
  }
}
