/**
 * The engine pins as the TypeScript side sees them: the pinned revisions and the Python versions
 * agree with the worker's data (`python3 -m kiapi_worker.pins`), the model specs carry the revision
 * the engine loads, and readiness judges a pinned repo by the snapshot of that revision only.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { registerCapabilities } from '../../src/capabilities/index.js';
import { CapabilityRegistry } from '../../src/core/capability.js';
import { ModelRegistry } from '../../src/core/models/model-spec.js';
import { PINNED_REVISIONS, pinnedRevision } from '../../src/core/models/revisions.js';
import { weightsStatus } from '../../src/core/models/weights.js';
import { PACKAGE_ROOT } from '../../src/core/package-info.js';
import { writeRecord } from '../../src/core/setup/activation-records.js';
import { pythonFits, readEnginePython } from '../../src/core/setup/python.js';
import { engineLock, installSteps, mfluxMismatch, type Pins } from '../../src/core/setup/venv.js';
import { tempDir } from '../support/server.js';

const WORKER_DIR = path.join(PACKAGE_ROOT, 'worker');
const EDIT = 'Qwen/Qwen-Image-Edit-2509';
const EDIT_COMMIT = 'd3968ef930e841f4c73640fb8afa3b306a78167e';
const OTHER_COMMIT = 'abc1234567890abc1234567890abc1234567890a';

const dirs: string[] = [];
after(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

function workerPins(): Pins {
  const r = spawnSync(process.env.KIAPI_TEST_PYTHON ?? 'python3', ['-m', 'kiapi_worker.pins'], {
    encoding: 'utf8',
    env: { ...process.env, PYTHONPATH: WORKER_DIR },
  });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as Pins;
}

void describe('engine pins: TypeScript and the worker agree', () => {
  const pins = workerPins();

  void it('pinned revisions are the same table', () => {
    assert.deepEqual(pins.pinned_revisions, { ...PINNED_REVISIONS });
    assert.equal(pinnedRevision(EDIT), EDIT_COMMIT);
    assert.equal(pinnedRevision('ideogram-ai/ideogram-4-fp8'), 'ee79a7237b519f1402ceacf952f30c8a31ec5073');
    assert.equal(pinnedRevision('Qwen/Qwen-Image'), null);
    assert.equal(pinnedRevision('toString'), null);
  });

  void it('the default model specs carry the revision the engine loads', () => {
    const models = new ModelRegistry();
    registerCapabilities(new CapabilityRegistry(models), {});
    const byName = Object.fromEntries(models.all().map((s) => [`${s.family}/${s.name}`, s]));
    assert.equal(byName['qwen/image']!.revision, null);
    assert.equal(byName['qwen/edit-2509']!.revision, EDIT_COMMIT);
    assert.equal(byName['ideogram4/fp8']!.revision, pins.pinned_revisions['ideogram-ai/ideogram-4-fp8']);
    // Another repo in the setting loads main, as mflux pins by repo id.
    const custom = new ModelRegistry();
    registerCapabilities(new CapabilityRegistry(custom), { KIAPI_QWEN_EDIT_MODEL: 'me/my-edit' });
    assert.equal(custom.resolve('qwen', 'edit-2509').revision, null);
  });

  void it("the Python check follows pins.py's Requires-Python and lock versions", () => {
    const engine = readEnginePython(WORKER_DIR);
    assert.equal(engine.requires, pins.requires_python);
    assert.deepEqual(engine.versions, pins.lock_pythons);
    assert.deepEqual(engine.min, [3, 11]);
    assert.equal(pythonFits('3.10.14', engine), false);
    assert.equal(pythonFits('3.11.7', engine), true);
    assert.equal(pythonFits('3.13.1', engine), true);
    assert.equal(pythonFits('3.14.0', engine), false, 'not covered by the lock');
  });

  void it('each platform installs from its lock: --no-deps -r, then the worker under -c', () => {
    for (const [platform, flavour, file] of [
      ['darwin-arm64', 'metal', 'darwin-arm64.txt'],
      ['linux-cuda', 'cuda13', 'linux-cuda13.txt'],
      ['linux-cpu', 'cpu', 'linux-cpu.txt'],
    ] as const) {
      const lock = engineLock(pins, platform);
      assert.equal(lock.flavour, flavour);
      assert.equal(lock.path, path.join(WORKER_DIR, 'locks', file));
      assert.match(fs.readFileSync(lock.path, 'utf8'), new RegExp(`^mflux==${pins.mflux_version.replaceAll('.', '\\.')}$`, 'm'));
      assert.deepEqual(installSteps(lock, WORKER_DIR), [
        ['--no-deps', '--only-binary=:all:', '-r', lock.path],
        ['-c', lock.path, WORKER_DIR],
      ]);
    }
    assert.throws(() => engineLock(pins, 'other'), /no engine lock for platform other/);
  });

  void it('an mflux other than the supported one is reported, not refused', () => {
    assert.equal(mfluxMismatch({ mflux: '0.24.0', mflux_supported: '0.24.0' }), null);
    assert.match(mfluxMismatch({ mflux: '0.18.0', mflux_supported: '0.24.0' }) ?? '', /mflux 0\.18\.0 is installed, kiapi supports mflux 0\.24\.0: the worker starts and runs it anyway.*untested/);
  });
});

void describe('readiness of a pinned repo is judged at the pinned revision', () => {
  function cache(): { env: NodeJS.ProcessEnv; repoDir: string } {
    const root = tempDir('kiapi-weights-');
    dirs.push(root);
    const env = { HF_HUB_CACHE: path.join(root, 'hub'), KIAPI_DATA_DIR: path.join(root, 'data') };
    return { env, repoDir: path.join(root, 'hub', `models--${EDIT.replace('/', '--')}`) };
  }
  function snapshot(repoDir: string, commit: string, files: Record<string, string>, listing = true): string {
    const dir = path.join(repoDir, 'snapshots', commit);
    for (const [file, text] of Object.entries(files)) {
      fs.mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
      fs.writeFileSync(path.join(dir, file), text);
    }
    if (listing) {
      fs.mkdirSync(path.join(repoDir, 'trees'), { recursive: true });
      const entries = Object.fromEntries(Object.entries(files).map(([f, t]) => [f, { size: Buffer.byteLength(t) }]));
      fs.writeFileSync(path.join(repoDir, 'trees', `${commit}.json`), JSON.stringify({ format_version: 1, files: entries }));
    }
    return dir;
  }

  void it('a complete snapshot at another commit (main) is not ready, and says what the engine loads', () => {
    const { env, repoDir } = cache();
    snapshot(repoDir, OTHER_COMMIT, { 'model_index.json': '{}' });
    fs.mkdirSync(path.join(repoDir, 'refs'), { recursive: true });
    fs.writeFileSync(path.join(repoDir, 'refs', 'main'), OTHER_COMMIT);
    const status = weightsStatus(EDIT, env);
    assert.equal(status.ready, false);
    assert.equal(status.path, null);
    assert.equal(status.revision, null);
    assert.equal(status.detail, `${EDIT} is cached at ${OTHER_COMMIT.slice(0, 12)}…, the engine loads ${EDIT_COMMIT.slice(0, 12)}…; run kiapi activate`);
    // The same cache is ready for an unpinned reading (main), which is what mflux would not load;
    // the revision it reports (for job records) is the commit main names.
    const unpinned = weightsStatus(EDIT, env, null);
    assert.equal(unpinned.ready, true);
    assert.equal(unpinned.revision, OTHER_COMMIT);
  });

  void it('the pinned snapshot, complete, is ready and is the path; incomplete is not', () => {
    const { env, repoDir } = cache();
    snapshot(repoDir, OTHER_COMMIT, { 'model_index.json': '{}' });
    const dir = snapshot(repoDir, EDIT_COMMIT, { 'model_index.json': '{"a": 1}', 'transformer/w.safetensors': 'weights' });
    const ready = weightsStatus(EDIT, env);
    assert.equal(ready.ready, true, ready.detail);
    assert.equal(ready.path, dir);
    assert.equal(ready.revision, EDIT_COMMIT);
    fs.rmSync(path.join(dir, 'transformer', 'w.safetensors'));
    const partial = weightsStatus(EDIT, env);
    assert.equal(partial.ready, false);
    assert.match(partial.detail, /download is incomplete \(transformer\/w\.safetensors is missing\)/);
  });

  void it('nothing cached: names the revision', () => {
    const { env } = cache();
    assert.match(weightsStatus(EDIT, env).detail, new RegExp(`${EDIT}@${EDIT_COMMIT.slice(0, 12)} \\(the revision the engine loads\\) is not in the Hugging Face cache`));
  });

  void it('an activation record of another commit does not make it ready; one of the pinned commit does', () => {
    const { env, repoDir } = cache();
    const old = snapshot(repoDir, OTHER_COMMIT, { 'model_index.json': '{}' }, false);
    const record = {
      repo: EDIT,
      revision: 'main',
      commit: OTHER_COMMIT,
      cacheDir: env.HF_HUB_CACHE!,
      snapshot: old,
      files: [{ path: 'model_index.json', size: 2, blob: null }],
      bytes: 2,
      activatedAt: new Date().toISOString(),
      kiapiVersion: 'test',
      huggingfaceHub: 'test',
    };
    writeRecord(env.KIAPI_DATA_DIR!, record);
    const stale = weightsStatus(EDIT, env);
    assert.equal(stale.ready, false);
    assert.match(stale.detail, /is cached at abc123456789…, the engine loads d3968ef930e8…; run kiapi activate/);
    const pinned = snapshot(repoDir, EDIT_COMMIT, { 'model_index.json': '{}' }, false);
    writeRecord(env.KIAPI_DATA_DIR!, { ...record, revision: EDIT_COMMIT, commit: EDIT_COMMIT, snapshot: pinned });
    const ok = weightsStatus(EDIT, env);
    assert.equal(ok.ready, true, ok.detail);
    assert.equal(ok.path, pinned);
    assert.equal(ok.revision, EDIT_COMMIT, 'the activation record names the commit');
  });
});
