/**
 * A kiapi cluster for tests: real PostgreSQL and S3Proxy (services.ts) and N kiapi nodes as real
 * processes (`node dist/src/cli/main.js run`, the preview engine), each with its own data dir,
 * port and node id (n0, n1, …), all on 127.0.0.1.
 *
 * Every process runs in its own process group and is killed with it when the test process exits,
 * so nothing outlives a test run, whatever way it ends. Node logs go to files; `logs()` gives
 * their tails, and `dumpLogsOnFailure` prints them when a test fails.
 *
 * A node can be killed (SIGKILL: the machine died), stopped (SIGTERM: a graceful shutdown) and
 * started again on the same port, data dir and node id; so can PostgreSQL and S3Proxy.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach } from 'node:test';
import { createParser } from 'eventsource-parser';
import { PACKAGE_ROOT } from '../../src/core/package-info.js';
import type { SseEvent } from '../support/sse.js';
import { controlled, freePort, startPostgres, startS3, tail, type Postgres, type S3Server } from './services.js';

/** The bucket every node of a test cluster shares (the nodes create it when missing). */
export const BUCKET = 'kiapi-cluster-test';

export interface ClusterNode {
  /** KIAPI_CLUSTER_NODE_ID: n0, n1, … */
  readonly id: string;
  readonly url: string;
  readonly port: number;
  readonly dataDir: string;
  readonly logFile: string;
  /** Its process id while it runs, else null. */
  readonly pid: number | null;
  /** SIGKILL to its process group, waiting until it is gone. */
  kill9(): Promise<void>;
  /** SIGTERM (a graceful shutdown), waiting for the exit; resolves with the exit code. */
  stop(): Promise<number | null>;
  /** Starts it again (killing it first if it runs) on the same port, data dir and node id; resolves once /health answers 200. */
  restart(): Promise<void>;
}

export interface Cluster {
  readonly nodes: ClusterNode[];
  readonly services: { pg: Postgres; s3: S3Server };
  /** The node with this id. */
  node(id: string): ClusterNode;
  /** The tail of every node's log (and the services'), for a failure message. */
  logs(lines?: number): string;
  /** Stops every node and service and removes their dirs; safe to call twice. */
  stop(): Promise<void>;
}

export interface ClusterOptions {
  nodes: number;
  /**
   * Extra environment: one record for every node, or one per node (index i for node ni), e.g.
   * KIAPI_PREVIEW_STEP_MS, KIAPI_CLUSTER_LEASE_S, KIAPI_CLUSTER_MODELS.
   */
  env?: Record<string, string> | Record<string, string>[];
}

/** How long a node may take to answer /health after its start (a loaded 2-core machine). */
const NODE_READY_MS = 90_000;

const started = new Set<Cluster>();

/**
 * Starts PostgreSQL, S3Proxy and `nodes` kiapi nodes (at once: they race the schema set-up and
 * the bucket creation, as real nodes would); resolves once each answers /health with 200.
 * A start that fails tears down what it started and throws with the logs' tails.
 */
export async function startCluster(opts: ClusterOptions): Promise<Cluster> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'kiapi-cluster-'));
  const [pgSvc, s3Svc] = await Promise.all([startPostgres(), startS3()]).catch(async (err: unknown) => {
    fs.rmSync(root, { recursive: true, force: true });
    throw err;
  });
  const nodes: (ClusterNode & { start(): Promise<void>; halt(): Promise<number | null> })[] = [];
  let stopped = false;
  const cluster: Cluster = {
    nodes,
    services: { pg: pgSvc, s3: s3Svc },
    node(id) {
      const n = nodes.find((x) => x.id === id);
      if (!n) throw new Error(`no node ${id} in this cluster (${nodes.map((x) => x.id).join(', ')})`);
      return n;
    },
    logs(lines = 40) {
      const parts = nodes.map((n) => `--- ${n.id} (${n.url}) ${n.logFile}\n${tail(n.logFile, lines)}`);
      for (const s of [pgSvc, s3Svc]) parts.push(`--- ${s.name}\n${tail(path.join(s.dir, `${s.name}.log`), 10)}`);
      return parts.join('\n');
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      started.delete(cluster);
      // Nodes first (they hold connections to both services), at once: each waits its own grace.
      await Promise.all(nodes.map((n) => n.halt().catch(() => undefined)));
      await Promise.all([pgSvc.stop(), s3Svc.stop()]);
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
  started.add(cluster);
  try {
    for (let i = 0; i < opts.nodes; i++) {
      const extra = Array.isArray(opts.env) ? (opts.env[i] ?? {}) : (opts.env ?? {});
      nodes.push(await makeNode(root, `n${i}`, pgSvc, s3Svc, extra));
    }
    await Promise.all(nodes.map((n) => n.start()));
  } catch (err) {
    const logs = cluster.logs();
    await cluster.stop();
    throw new Error(`the cluster did not start: ${(err as Error).message}\n${logs}`, { cause: err });
  }
  return cluster;
}

async function makeNode(
  root: string,
  id: string,
  pgSvc: Postgres,
  s3Svc: S3Server,
  extra: Record<string, string>,
): Promise<ClusterNode & { start(): Promise<void>; halt(): Promise<number | null> }> {
  const dir = path.join(root, id);
  const dataDir = path.join(dir, 'data');
  fs.mkdirSync(dataDir, { recursive: true });
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    // A developer's own settings file must not leak into tests: point at one that does not exist.
    KIAPI_CONFIG_FILE: path.join(dir, 'no-settings.yaml'),
    KIAPI_ENGINE: 'preview',
    KIAPI_DATA_DIR: dataDir,
    KIAPI_LOG_LEVEL: 'warn',
    KIAPI_CLUSTER_DATABASE_URL: pgSvc.url,
    KIAPI_CLUSTER_S3_BUCKET: BUCKET,
    KIAPI_CLUSTER_S3_ENDPOINT: s3Svc.endpoint,
    KIAPI_CLUSTER_S3_REGION: s3Svc.region,
    KIAPI_CLUSTER_NODE_ID: id,
    KIAPI_CLUSTER_NODE_URL: url,
    AWS_ACCESS_KEY_ID: s3Svc.accessKeyId,
    AWS_SECRET_ACCESS_KEY: s3Svc.secretAccessKey,
    ...extra,
  };
  const proc = controlled(
    id,
    dir,
    () =>
      spawn(process.execPath, [path.join(PACKAGE_ROOT, 'dist/src/cli/main.js'), 'run', '--host', '127.0.0.1', '--port', String(port)], {
        env,
        cwd: dir,
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
      }),
    async () => (await fetch(`${url}/health`)).status === 200,
    'SIGTERM',
    NODE_READY_MS,
  );
  return {
    id,
    url,
    port,
    dataDir,
    logFile: proc.logFile,
    get pid() {
      return proc.pid;
    },
    start: () => proc.start(),
    halt: () => proc.halt(),
    kill9: () => proc.kill(),
    stop: () => proc.halt(),
    restart: () => proc.restart(),
  };
}

/** Registers an afterEach that prints the cluster's logs when a test failed. */
export function dumpLogsOnFailure(cluster: () => Cluster | undefined): void {
  afterEach((t) => {
    const c = cluster();
    // `passed` is on the context since Node 20.12; @types/node does not know it yet.
    if ((t as { passed?: boolean }).passed === false && c) process.stderr.write(`\n=== logs after the failure of "${t.name}"\n${c.logs()}\n=== end of logs\n`);
  });
}

/** The cluster as /health shows it on one node. */
export interface ClusterView {
  node_id: string;
  nodes: { node_id: string; url: string; live: boolean; busy: boolean; running_job: string | null; capable: string[]; warm: string[] }[];
  queued: number;
}

/** GET /health's `cluster` view on `node`; throws when the answer has none. */
export async function clusterView(node: { id: string; url: string }): Promise<ClusterView> {
  const res = await fetch(`${node.url}/health`);
  const body = (await res.json()) as { cluster?: ClusterView };
  if (res.status !== 200 || !body.cluster) throw new Error(`${node.id}'s /health (${res.status}) has no cluster view: ${JSON.stringify(body).slice(0, 300)}`);
  return body.cluster;
}

/**
 * The node running `jobId`, from the cluster view's running_job (polled until a node shows it:
 * the job must be long enough to be seen running).
 */
export async function whoRuns(cluster: Cluster, jobId: string, timeoutMs = 60_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const live = cluster.nodes.find((n) => n.pid !== null)!;
    const view = await clusterView(live);
    // A killed node's row keeps its last running_job until its lease runs out: live rows only.
    const runner = view.nodes.find((n) => n.live && n.running_job === jobId);
    if (runner) return runner.node_id;
    if (Date.now() > deadline) throw new Error(`no node shows ${jobId} running within ${timeoutMs} ms: ${JSON.stringify(view.nodes)}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

export interface LiveStream {
  status: number;
  events: SseEvent[];
  /** Resolves once `predicate` holds for the events so far (or rejects when the stream ends first or after `timeoutMs`). */
  until(predicate: (events: SseEvent[]) => boolean, timeoutMs?: number): Promise<SseEvent[]>;
  /** Resolves when the server ended the stream. */
  ended: Promise<SseEvent[]>;
  close(): void;
}

/**
 * Opens an event stream and resolves once its answer's head arrived: the server subscribes the
 * stream before it sends the head, so whatever happens after this resolves is on the stream.
 */
export async function openStream(url: string, headers: Record<string, string> = {}): Promise<LiveStream> {
  const controller = new AbortController();
  const res = await fetch(url, { headers, signal: controller.signal });
  const events: SseEvent[] = [];
  const waiters = new Set<() => void>();
  const parser = createParser({
    onEvent: (m) => {
      if (!m.event) return;
      events.push({ id: m.id ?? '', event: m.event, data: JSON.parse(m.data) as Record<string, unknown> });
      for (const w of [...waiters]) w();
    },
  });
  let done = false;
  const ended = (async () => {
    if (res.status === 200 && res.body) {
      const decoder = new TextDecoder();
      try {
        for await (const chunk of res.body) parser.feed(decoder.decode(chunk as Uint8Array, { stream: true }));
      } catch {
        // Closed by us.
      }
    } else {
      await res.arrayBuffer().catch(() => undefined);
    }
    done = true;
    for (const w of [...waiters]) w();
    return events;
  })();
  return {
    status: res.status,
    events,
    ended,
    until: (predicate, timeoutMs = 60_000) =>
      new Promise<SseEvent[]>((resolve, reject) => {
        const timer = setTimeout(() => finish(new Error(`stream ${url}: condition not met within ${timeoutMs} ms; events: ${names()}`)), timeoutMs);
        const names = () => events.map((e) => `${e.event}#${e.id}`).join(',');
        const finish = (err?: Error) => {
          clearTimeout(timer);
          waiters.delete(check);
          if (err) reject(err);
          else resolve(events);
        };
        const check = () => {
          if (predicate(events)) finish();
          else if (done) finish(new Error(`stream ${url} ended before the condition held; events: ${names()}`));
        };
        waiters.add(check);
        check();
      }),
    close: () => controller.abort(),
  };
}
