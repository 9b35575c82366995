/**
 * `kiapi activate`: from a fresh install to an engine and weights on disk, so `kiapi run` never
 * downloads anything in the middle of a request.
 *
 * 1. Engine: `<data dir>/venv` filled from the platform's lock (worker/locks/<flavour>.txt: the
 *    pinned mflux, the platform's MLX build, every dependency at an exact version) and the worker
 *    (skipped when it is already up to date, or when KIAPI_PYTHON names the engine's Python).
 * 2. Preflight for every selected repo before any byte of weights: access (gated repos need an
 *    accepted licence and a token), the commit, the file sizes, what is already cached, and the
 *    free disk space. Any problem stops here and nothing is downloaded for any model.
 *    Each repo is planned at the revision the engine loads (mflux's pinned commit, else main).
 * 3. Download each snapshot with huggingface_hub (worker/kiapi_worker/hub.py), verify checksums,
 *    and only then write the activation record. Ctrl-C stops cleanly; finished files stay in the
 *    cache and the next `kiapi activate` continues from there.
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { Config } from '../core/config.js';
import { SetupError } from '../core/errors.js';
import type { ModelSpec } from '../core/models/model-spec.js';
import { localWeightsDir, weightsStatus } from '../core/models/weights.js';
import { VERSION } from '../core/package-info.js';
import { checkRecord, readRecord, removeRecord, writeRecord, type ActivationRecord } from '../core/setup/activation-records.js';
import { freeSpace } from '../core/setup/disk.js';
import { planRevisionRemoval, removeRevision } from '../core/setup/hf-cache.js';
import { downloadRepo, planRepos, type HubContext, type RepoIssue, type RepoPlan } from '../core/setup/hub-driver.js';
import { assertEngineSupported, detectPlatform } from '../core/setup/platform.js';
import { findBasePython, readEnginePython } from '../core/setup/python.js';
import { readSetupSettings, type SetupSettings } from '../core/setup/setup-settings.js';
import {
  createVenv,
  engineLock,
  enginePaths,
  engineUpToDate,
  installSteps,
  mfluxMismatch,
  pipInstall,
  probeEngine,
  readPins,
  readStamp,
  writeStamp,
  type EngineProbe,
} from '../core/setup/venv.js';
import { WORKER_DIR } from './engine-location.js';
import { loadSettings } from './environment.js';
import { formatBytes } from './format.js';
import { createProgressView } from './progress-view.js';
import { confirm, isInteractive } from './prompt.js';
import { modelLabel, resolveSelection, SELECTION_OPTIONS } from './selection.js';

/** What the engine's venv roughly takes (MLX, with CUDA on Linux; torch is not installed). */
const ENGINE_DISK_BYTES = 6e9;

type Env = Record<string, string | undefined>;

export async function activateCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { ...SELECTION_OPTIONS, yes: { type: 'boolean', short: 'y' }, engine: { type: 'boolean' } },
    strict: true,
  });
  const { cli, config, models } = loadSettings();
  const setup = readSetupSettings(cli.env);
  const selected =
    values.engine && !values.all && !values.family && !values.model
      ? []
      : await resolveSelection(models, values, {
          verb: 'activate',
          describe: (s) => describeModel(s, cli.env),
        });
  if (selected.length === 0 && !values.engine) {
    console.log('No models selected.');
    return 1;
  }

  const local = selected.filter((s) => localWeightsDir(s.repo) !== null);
  for (const spec of local) {
    const status = weightsStatus(spec.repo, cli.env);
    if (!status.ready) throw new SetupError(`${modelLabel(spec)}: ${status.detail}; the model setting names a local directory, so there is nothing to download`);
    console.log(`${modelLabel(spec)}: uses ${status.detail}; nothing to download`);
  }

  const python = await ensureEngine(config, cli.env, setup);
  const remote = dedupeByRepo(selected.filter((s) => !local.includes(s)));
  if (remote.length === 0) {
    printNext(selected);
    return 0;
  }
  const code = await activateWeights(remote, { python, workerDir: WORKER_DIR, env: cli.env }, config, Boolean(values.yes), args);
  if (code === 0) printNext(selected);
  return code;
}

function describeModel(spec: ModelSpec, env: Env): string {
  const status = weightsStatus(spec.repo, env);
  return [
    `~${spec.diskGb} GB`,
    spec.default ? 'default' : '',
    spec.gated ? 'gated: needs an accepted licence and a token' : '',
    status.ready ? 'activated' : '',
  ]
    .filter(Boolean)
    .join(', ');
}

function dedupeByRepo(specs: ModelSpec[]): ModelSpec[] {
  const seen = new Set<string>();
  return specs.filter((s) => !seen.has(s.repo) && seen.add(s.repo));
}

function versions(p: EngineProbe): string {
  return `mflux ${p.mflux}, mlx ${p.mlx} (${p.device}), Python ${p.python}${p.huggingface_hub ? `, huggingface_hub ${p.huggingface_hub}` : ''}`;
}

/** Makes sure an engine Python exists and imports mflux; returns its path. */
async function ensureEngine(config: Config, env: Env, setup: SetupSettings): Promise<string> {
  if (config.python) {
    const probe = await probeEngine(config.python, WORKER_DIR, env);
    if (!probe.ok || !probe.huggingface_hub) {
      throw new SetupError(
        `KIAPI_PYTHON=${config.python} is not a working engine (${probe.reason ?? 'huggingface_hub is missing'}). ` +
          'Install mflux there (`pip install mflux==<pin>`, see worker/kiapi_worker/pins.py), or unset KIAPI_PYTHON so that ' +
          '`kiapi activate` makes its own venv in the data dir.',
      );
    }
    console.log(`engine: KIAPI_PYTHON=${config.python} (${versions(probe)}); no venv made`);
    const mismatch = mfluxMismatch(probe);
    if (mismatch) console.log(`engine: warning: ${mismatch}`);
    return config.python;
  }
  const paths = enginePaths(config.dataDir);
  const existing = await probeEngine(paths.python, WORKER_DIR, env);
  const stamp = readStamp(paths);
  if (existing.ok && stamp && (setup.platform === 'auto' || setup.platform === stamp.platform)) {
    // The platform the venv was made for (a linux-cpu venv stays one without the setting).
    const pins = await readPins(paths.python, WORKER_DIR, env);
    if (engineUpToDate(existing, pins, stamp, engineLock(pins, stamp.platform, setup.lock))) {
      console.log(`engine: ready at ${paths.dir} (${versions(existing)}; ${stamp.flavour} lock)`);
      return paths.python;
    }
  }

  const platform = detectPlatform(setup);
  assertEngineSupported(platform);
  const base = await findBasePython(setup.python, platform.kind, readEnginePython(WORKER_DIR));
  if (!existing.ok && existing.reason?.endsWith('does not exist')) {
    const free = freeSpace(paths.dir);
    if (free.bytes < ENGINE_DISK_BYTES) {
      throw new SetupError(
        `not enough disk space for the engine in ${free.path}: it needs about ${formatBytes(ENGINE_DISK_BYTES)}, ${formatBytes(free.bytes)} is free. ` +
          'Free space, or set KIAPI_DATA_DIR to a larger disk.',
      );
    }
  }
  console.log(`engine: ${platform.detail}; Python ${base.version} (${base.executable})`);
  const made = await createVenv(base, paths, (l) => console.log(`  ${l}`));
  console.log(`engine: ${made === 'created' ? 'created' : 'reusing'} venv ${paths.dir}`);
  const pins = await readPins(base.executable, WORKER_DIR, env);
  const lock = engineLock(pins, platform.kind, setup.lock);
  console.log(`engine: installing ${pins.mflux} from the ${lock.flavour} lock ${lock.path}`);
  for (const step of installSteps(lock, WORKER_DIR)) {
    console.log(`engine: pip install ${step.join(' ')}${setup.pipArgs.length ? ` (KIAPI_PIP_ARGS: ${setup.pipArgs.join(' ')})` : ''}`);
    await pipInstall(paths.python, step, setup.pipArgs, (l) => console.log(`  ${l}`));
  }
  const probe = await probeEngine(paths.python, WORKER_DIR, env);
  if (!probe.ok) {
    throw new SetupError(`the engine was installed but does not start: ${probe.reason ?? 'unknown reason'}. Rerun \`kiapi activate\`; if it persists, \`kiapi deactivate --engine\` and activate again.`);
  }
  writeStamp(paths, lock, pins);
  console.log(`engine: ready (${versions(probe)})`);
  const mismatch = mfluxMismatch(probe);
  if (mismatch) console.log(`engine: warning: ${mismatch}`);
  return paths.python;
}

const REASON_TEXT: Record<string, string> = {
  not_authenticated: 'gated: no Hugging Face token found, or the token was rejected',
  access_denied: 'access has not been approved or the licence has not been accepted for this token',
  not_found: 'repository or revision not found (check the name and the model setting)',
  unreachable: 'the Hugging Face Hub cannot be reached',
  offline: 'HF_HUB_OFFLINE is set; unset it to download',
};

function issueText(issue: RepoIssue): string {
  return `  - ${issue.repo} (${REASON_TEXT[issue.reason] ?? 'error'}): ${issue.message}`;
}

/** The preflight's refusal: every problem, and what to do about the gated ones. */
function preflightError(issues: RepoIssue[], venvDir: string, args: string[]): SetupError {
  const lines = ['cannot activate; nothing was downloaded:', ...issues.map(issueText)];
  const gated = issues.filter((i) => i.reason === 'not_authenticated' || i.reason === 'access_denied');
  if (gated.length > 0) {
    lines.push(
      'To use a gated model:',
      ...gated.map((i) => `  1. sign in on huggingface.co and accept the licence: https://huggingface.co/${i.repo}`),
      `  2. authenticate: \`hf auth login\` (installed in the engine: ${path.join(venvDir, 'bin', 'hf')} auth login) or \`export HF_TOKEN=hf_...\``,
      `  3. rerun: kiapi activate ${args.join(' ')}`.trimEnd(),
    );
  }
  if (issues.some((i) => i.reason === 'unreachable')) {
    lines.push('Check the network (and HF_ENDPOINT, if set), then rerun `kiapi activate`.');
  }
  return new SetupError(lines.join('\n'));
}

async function activateWeights(specs: ModelSpec[], hub: HubContext, config: Config, yes: boolean, args: string[]): Promise<number> {
  const byRepo = new Map(specs.map((s) => [s.repo, s]));
  console.log(`checking ${specs.length} repo${specs.length > 1 ? 's' : ''} on ${hub.env.HF_ENDPOINT ?? 'https://huggingface.co'} …`);
  const { plans, issues } = await planRepos(
    hub,
    specs.map((s) => ({ repo: s.repo, gated: s.gated })),
  );

  // Offline but already complete: that model is fine as it is.
  const blocking = issues.filter((issue) => {
    const record = readRecord(config.dataDir, issue.repo);
    const fine = (issue.reason === 'unreachable' || issue.reason === 'offline') && record && checkRecord(record).complete;
    if (fine) console.log(`${modelLabel(byRepo.get(issue.repo)!)}: already activated (could not check for updates: ${issue.message})`);
    return !fine;
  });
  if (blocking.length > 0) throw preflightError(blocking, enginePaths(config.dataDir).dir, args);

  for (const plan of plans) {
    // hub.py plans each repo at the revision the engine loads; the model spec says the same.
    const wanted = byRepo.get(plan.repo)!.revision ?? 'main';
    if (plan.revision !== wanted) {
      throw new SetupError(`${plan.repo}: planned at ${plan.revision}, but the engine loads ${wanted} (worker/kiapi_worker/engine_api.py and src/core/models/revisions.ts disagree)`);
    }
  }

  const todo: RepoPlan[] = [];
  for (const plan of plans) {
    const record = readRecord(config.dataDir, plan.repo);
    if (record && record.commit === plan.commit && path.resolve(record.cacheDir) === path.resolve(plan.cache_dir) && checkRecord(record).complete) {
      console.log(`${modelLabel(byRepo.get(plan.repo)!)}: already activated (${plan.repo}@${plan.commit.slice(0, 12)})`);
    } else {
      todo.push(plan);
    }
  }
  if (todo.length === 0) return 0;

  const need = todo.reduce((sum, p) => sum + p.files.filter((f) => !f.cached).reduce((s, f) => s + f.size, 0), 0);
  const all = todo.reduce((sum, p) => sum + p.files.reduce((s, f) => s + f.size, 0), 0);
  const cacheDir = todo[0]!.cache_dir;
  const free = freeSpace(cacheDir);
  for (const p of todo) {
    const size = p.files.reduce((s, f) => s + f.size, 0);
    const cached = p.files.filter((f) => f.cached).reduce((s, f) => s + f.size, 0);
    console.log(
      `  ${modelLabel(byRepo.get(p.repo)!).padEnd(16)} ${p.repo}@${p.commit.slice(0, 12)}  ${p.files.length} files, ${formatBytes(size)}` +
        `${cached > 0 ? ` (${formatBytes(cached)} already cached)` : ''}${p.gated ? ', gated: access ok' : ''}`,
    );
  }
  if (need > free.bytes) {
    throw new SetupError(
      `not enough disk space in ${cacheDir}: the download needs ${formatBytes(need)} more (${formatBytes(all)} in all, ` +
        `${formatBytes(all - need)} already cached) and ${formatBytes(free.bytes)} is free on ${free.path}. ` +
        'Free space, or point HF_HOME (or HF_HUB_CACHE) at a larger disk. Nothing was downloaded.',
    );
  }
  if (!yes && isInteractive() && need > 0) {
    if (!(await confirm(`Download ${formatBytes(need)} into ${cacheDir} (${formatBytes(free.bytes)} free)?`, true))) {
      console.log('Canceled.');
      return 1;
    }
  }

  const controller = new AbortController();
  const onSigint = () => controller.abort();
  process.on('SIGINT', onSigint);
  try {
    for (const plan of todo) {
      const spec = byRepo.get(plan.repo)!;
      console.log(`downloading ${modelLabel(spec)} (${plan.repo}@${plan.commit.slice(0, 12)}) into ${plan.cache_dir}`);
      const view = createProgressView(process.stdout, Boolean(process.stdout.isTTY));
      const outcome = await downloadRepo(hub, { repo: plan.repo, revision: plan.revision, commit: plan.commit }, (e) => view.handle(e), controller.signal);
      view.finish();
      if (outcome.status === 'canceled') {
        const rerun = `kiapi activate ${args.join(' ')}`.trimEnd();
        console.error(`interrupted: ${modelLabel(spec)} is not activated. Finished files stay in the cache; rerun \`${rerun}\` to continue.`);
        return 130;
      }
      if (outcome.status === 'error') {
        const previous = readRecord(config.dataDir, plan.repo);
        // A re-verification of the recorded revision failed: it is not activated any more.
        if (previous?.commit === plan.commit) removeRecord(config.dataDir, plan.repo);
        console.error(`kiapi: downloading ${plan.repo} failed (${outcome.reason}): ${outcome.message}`);
        console.error(
          outcome.reason === 'checksum'
            ? 'The damaged files were removed from the cache; rerun `kiapi activate` to download them again.'
            : 'Nothing was marked activated; rerun `kiapi activate` to continue (finished files stay in the cache).',
        );
        return 1;
      }
      const done = outcome.done;
      const previous = readRecord(config.dataDir, plan.repo);
      const record: ActivationRecord = {
        repo: done.repo,
        revision: done.revision,
        commit: done.commit,
        cacheDir: done.cache_dir,
        snapshot: done.snapshot,
        files: done.files,
        bytes: done.bytes,
        activatedAt: new Date().toISOString(),
        kiapiVersion: VERSION,
        huggingfaceHub: done.huggingface_hub,
      };
      writeRecord(config.dataDir, record);
      console.log(`activated ${modelLabel(spec)}: ${formatBytes(done.bytes)} verified in ${done.snapshot}`);
      if (previous && previous.commit !== done.commit) {
        // The revision an earlier activation downloaded is superseded; blobs both share stay.
        const removal = planRevisionRemoval(previous.cacheDir, previous.repo, previous.commit);
        removeRevision(removal);
        console.log(`  removed the previous revision ${previous.commit.slice(0, 12)} (${formatBytes(removal.bytes)})`);
      }
    }
  } finally {
    process.off('SIGINT', onSigint);
  }
  return 0;
}

function printNext(selected: ModelSpec[]): void {
  if (selected.length === 0) {
    console.log('Next: kiapi activate --model NAME to download weights, then kiapi run');
    return;
  }
  console.log('Next: kiapi run   (then kiapi check for a test image per model, kiapi status for an overview)');
}
