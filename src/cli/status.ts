/**
 * `kiapi status [--json]`: is the engine ready (its Python imports mflux; versions), which models'
 * weights are complete and where (disk used), and is a server answering on the configured
 * host/port. Reads only: nothing is downloaded or changed.
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { Config } from '../core/config.js';
import type { ModelSpec } from '../core/models/model-spec.js';
import { weightsStatus } from '../core/models/weights.js';
import { VERSION } from '../core/package-info.js';
import { readRecord } from '../core/setup/activation-records.js';
import { pathBytes } from '../core/setup/disk.js';
import { snapshotBytes } from '../core/setup/hf-cache.js';
import { mfluxMismatch, probeEngine, type EngineProbe } from '../core/setup/venv.js';
import { enginePython, WORKER_DIR, type EngineSource } from './engine-location.js';
import { loadSettings } from './environment.js';
import { formatBytes, table } from './format.js';

type Env = Record<string, string | undefined>;

export interface EngineStatus {
  python: string | null;
  /** `KIAPI_PYTHON`, `venv` (made by kiapi activate), or null when there is none. */
  source: EngineSource | null;
  ready: boolean;
  reason: string | null;
  versions: Omit<EngineProbe, 'ok' | 'reason'> | null;
  /**
   * The mflux found against the one kiapi supports (pins.py), when the engine imports. Another
   * version still runs (the worker starts; an untested combination): `note` says so.
   */
  mflux: { found: string; supported: string; matches: boolean; note: string | null } | null;
}

export interface ModelStatus {
  family: string;
  name: string;
  default: boolean;
  repo: string;
  /** The revision the engine loads (mflux's pinned commit, or `main`). */
  revision: string;
  gated: boolean;
  ready: boolean;
  detail: string;
  path: string | null;
  bytes: number | null;
  activation: { revision: string; commit: string; activatedAt: string; bytes: number } | null;
}

export interface ServerStatus {
  url: string;
  /** A kiapi server answered /health there. */
  running: boolean;
  /** Its engine (`mflux`, `preview`), from /health. */
  engine: string | null;
  /** Something else answered on that port (not kiapi's /health). */
  other: boolean;
}

export async function engineStatus(config: Config, env: Env): Promise<EngineStatus> {
  const { python, source } = enginePython(config);
  if (!python) return { python: null, source: null, ready: false, reason: 'no engine installed (run kiapi activate)', versions: null, mflux: null };
  const probe = await probeEngine(python, WORKER_DIR, env);
  const { ok, reason, ...rest } = probe;
  const mflux =
    ok && probe.mflux && probe.mflux_supported
      ? { found: probe.mflux, supported: probe.mflux_supported, matches: probe.mflux === probe.mflux_supported, note: mfluxMismatch(probe) }
      : null;
  return { python, source, ready: ok, reason: ok ? null : (reason ?? 'unknown'), versions: ok ? rest : null, mflux };
}

export function modelStatus(spec: ModelSpec, config: Config, env: Env): ModelStatus {
  const status = weightsStatus(spec.repo, env, spec.revision);
  const record = readRecord(config.dataDir, spec.repo);
  let bytes: number | null = null;
  if (status.ready && status.path) bytes = pathOrSnapshotBytes(status.path);
  return {
    family: spec.family,
    name: spec.name,
    default: spec.default,
    repo: spec.repo,
    revision: spec.revision ?? 'main',
    gated: spec.gated,
    ready: status.ready,
    detail: status.detail,
    path: status.path,
    bytes,
    activation: record ? { revision: record.revision, commit: record.commit, activatedAt: record.activatedAt, bytes: record.bytes } : null,
  };
}

function pathOrSnapshotBytes(p: string): number {
  // A snapshot of the HF cache links into blobs/; a plain directory holds its files.
  return p.includes(`${path.sep}snapshots${path.sep}`) ? snapshotBytes(p) : pathBytes(p);
}

export async function serverStatus(config: Config, timeoutMs = 1500): Promise<ServerStatus> {
  const host = config.host === '0.0.0.0' ? '127.0.0.1' : config.host === '::' ? '::1' : config.host;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${config.port}`;
  try {
    const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(timeoutMs) });
    const body = (await res.json().catch(() => null)) as { status?: string; engine?: { name?: string } } | null;
    const kiapi = res.ok && body?.status === 'ok' && typeof body.engine?.name === 'string';
    return { url, running: kiapi, engine: kiapi ? (body.engine?.name ?? null) : null, other: !kiapi };
  } catch {
    return { url, running: false, engine: null, other: false };
  }
}

export async function statusCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({ args, options: { json: { type: 'boolean' } }, strict: true });
  const { cli, config, models } = loadSettings();
  const [engine, server] = await Promise.all([engineStatus(config, cli.env), serverStatus(config)]);
  const list = models.all().map((s) => modelStatus(s, config, cli.env));

  if (values.json) {
    console.log(JSON.stringify({ version: VERSION, dataDir: config.dataDir, settingsFile: cli.file.exists ? cli.file.path : null, engine, server, models: list }, null, 2));
    return 0;
  }

  console.log(`kiapi ${VERSION} — data dir ${config.dataDir}${cli.file.exists ? `, settings ${cli.file.path}` : ''}`);
  if (engine.ready && engine.versions) {
    const v = engine.versions;
    console.log(`Engine  ready: mflux ${v.mflux}, mlx ${v.mlx} (${v.device}), Python ${v.python}${v.huggingface_hub ? `, huggingface_hub ${v.huggingface_hub}` : ''}`);
    console.log(`        ${engine.python}${engine.source === 'KIAPI_PYTHON' ? ' (KIAPI_PYTHON)' : ''}`);
    if (engine.mflux?.note) console.log(`        warning: ${engine.mflux.note}`);
  } else {
    console.log(`Engine  not ready: ${engine.reason}${engine.python ? ` (${engine.python})` : ''}`);
  }
  console.log(
    `Server  ${
      server.running
        ? `running at ${server.url} (engine ${server.engine ?? '?'})`
        : server.other
          ? `${server.url} answers, but not as kiapi (another program uses the port?)`
          : `not running on ${server.url}`
    }`,
  );
  console.log('Models');
  const rows = [['FAMILY', 'MODEL', 'WEIGHTS', 'SIZE', 'WHERE']];
  for (const m of [...list].sort((a, b) => a.family.localeCompare(b.family))) {
    rows.push([
      m.family,
      `${m.name}${m.default ? ' *' : ''}`,
      m.ready ? 'ready' : 'missing',
      m.bytes !== null ? formatBytes(m.bytes) : '-',
      m.ready ? (m.path ?? m.detail) : m.detail,
    ]);
  }
  console.log(table(rows));
  const missing = list.filter((m) => !m.ready);
  if (!engine.ready) console.log('Next: kiapi activate');
  else if (missing.length > 0) console.log(`Next: kiapi activate ${missing.map((m) => `--model ${m.family}/${m.name}`).join(' ')}`);
  else console.log('Everything is activated. kiapi check makes a test image per model.');
  return 0;
}
