/**
 * `kiapi activate` end to end without the network: the built CLI as a child process, a venv made
 * from a local wheel directory (fake mflux/mlx + the real huggingface_hub), and a fake Hugging Face
 * endpoint on 127.0.0.1 (HF_ENDPOINT). One venv for the whole file (in `before`); each test uses
 * its own repo and its own Hugging Face cache.
 *
 * Covers: venv creation; a public download that is verified and recorded; gated repos (401 without
 * a token, 403 with a token without access, the token file of `hf auth login`) refused before any
 * byte of any selected model; a connection cut mid-file resumed with Range; a checksum mismatch;
 * the disk-space refusal; Ctrl-C and the activation that continues; status; deactivate removing
 * only our revision; deactivate --engine.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { readRecord } from '../../src/core/setup/activation-records.js';
import { cleanEnv, HUB_TEST_VERSION, runCli, startCli, waitFor, wheelDir, wheelLock, type CliResult } from '../support/activation.js';
import { fakeCommit, gitBlobId, pseudoRandomBytes, sha256, startFakeHub, type FakeFile, type FakeHub } from '../support/fake-hf.js';
import { tempDir } from '../support/server.js';

const dirs: string[] = [];
function temp(prefix: string): string {
  const d = tempDir(prefix);
  dirs.push(d);
  return d;
}

function smallFiles(seed: string): FakeFile[] {
  return [
    { path: 'model_index.json', data: Buffer.from(`{"_class_name": "${seed}"}\n`) },
    { path: 'transformer/diffusion_pytorch_model.safetensors', data: pseudoRandomBytes(200_000, `${seed}-w`), lfs: true },
    { path: 'vae/config.json', data: Buffer.from('{"scale": 1}\n') },
  ];
}

function blobPath(hfHome: string, repo: string, file: FakeFile): string {
  return path.join(hfHome, 'hub', `models--${repo.replace('/', '--')}`, 'blobs', file.lfs ? sha256(file.data) : gitBlobId(file.data));
}

function snapshotDir(hfHome: string, repo: string, commit: string): string {
  return path.join(hfHome, 'hub', `models--${repo.replace('/', '--')}`, 'snapshots', commit);
}

interface StatusJson {
  engine: {
    ready: boolean;
    source: string | null;
    versions: Record<string, string | null> | null;
    reason: string | null;
    mflux: { found: string; supported: string; matches: boolean; note: string | null } | null;
  };
  models: {
    family: string;
    name: string;
    repo: string;
    revision: string;
    ready: boolean;
    detail: string;
    path: string | null;
    bytes: number | null;
    activation: { revision: string; commit: string } | null;
  }[];
}

void describe('kiapi activate (fake Hub, local wheels)', () => {
  let hub: FakeHub;
  let dataDir: string;
  let engineRun: CliResult;
  let pipArgs: string;
  let lock: string;

  /** The environment of one test: its own HF cache, models pointed at the test's repos. */
  function env(hfHome: string, models: { image?: string; edit?: string; ideogram?: string }, extra: Record<string, string | undefined> = {}) {
    return cleanEnv({
      KIAPI_DATA_DIR: dataDir,
      KIAPI_ACTIVATE_PLATFORM: 'linux-cuda',
      KIAPI_PIP_ARGS: pipArgs,
      KIAPI_ENGINE_LOCK: lock,
      HF_ENDPOINT: hub.url,
      HF_HOME: hfHome,
      KIAPI_QWEN_IMAGE_MODEL: models.image ?? 'kiapi-test/unused-image',
      KIAPI_QWEN_EDIT_MODEL: models.edit ?? 'kiapi-test/unused-edit',
      KIAPI_IDEOGRAM4_MODEL_REPO: models.ideogram ?? 'kiapi-test/unused-ideogram',
      ...extra,
    });
  }

  async function status(e: NodeJS.ProcessEnv): Promise<StatusJson> {
    const r = await runCli(['status', '--json'], e);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as StatusJson;
  }

  before(async () => {
    hub = await startFakeHub();
    dataDir = temp('kiapi-act-data-');
    const wheels = wheelDir();
    pipArgs = `--no-index --find-links ${wheels}`;
    lock = wheelLock(wheels);
    engineRun = await runCli(['activate', '--engine'], env(temp('kiapi-hf-'), {}), 300_000);
  });

  after(async () => {
    await hub.close();
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  void it('makes the engine venv from a local wheel directory, and reuses it', async () => {
    assert.equal(engineRun.code, 0, engineRun.stdout + engineRun.stderr);
    assert.match(engineRun.stdout, /engine: created venv/);
    // From the lock: everything at its locked version without resolving (mflux's torch never
    // looked at), then the worker held to the lock.
    assert.match(engineRun.stdout, /engine: installing mflux==0\.24\.0 from the cuda13 lock .*lock\.txt/);
    assert.ok(engineRun.stdout.includes(`engine: pip install --no-deps --only-binary=:all: -r ${lock}`), engineRun.stdout);
    assert.ok(engineRun.stdout.includes(`engine: pip install -c ${lock} `), engineRun.stdout);
    const stamp = JSON.parse(fs.readFileSync(path.join(dataDir, 'venv', 'kiapi-engine.json'), 'utf8')) as { flavour: string; lock: string };
    assert.deepEqual([stamp.flavour, stamp.lock], ['cuda13', lock]);
    assert.ok(fs.existsSync(path.join(dataDir, 'venv', 'bin', 'python')));
    const s = await status(env(temp('kiapi-hf-'), {}));
    const shown = JSON.stringify(s.engine);
    assert.equal(s.engine.ready, true, shown);
    assert.equal(s.engine.source, 'venv', shown);
    assert.equal(s.engine.versions?.mflux, '0.24.0', shown);
    assert.deepEqual(s.engine.mflux, { found: '0.24.0', supported: '0.24.0', matches: true, note: null }, shown);
    assert.equal(s.engine.versions?.mlx, '0.31.2', shown);
    assert.equal(s.engine.versions?.huggingface_hub, HUB_TEST_VERSION, shown);
    assert.equal(s.engine.versions?.worker_installed, '0.1.0', shown);
    const again = await runCli(['activate', '--engine'], env(temp('kiapi-hf-'), {}));
    assert.equal(again.code, 0, again.stdout + again.stderr);
    assert.match(again.stdout, /engine: ready at /, again.stdout + again.stderr);
    assert.doesNotMatch(again.stdout, /pip install/);
    // A changed lock (an update of worker/locks) installs again.
    fs.appendFileSync(lock, '# changed\n');
    const changed = await runCli(['activate', '--engine'], env(temp('kiapi-hf-'), {}), 300_000);
    assert.equal(changed.code, 0, changed.stdout + changed.stderr);
    assert.match(changed.stdout, /engine: pip install --no-deps/);
  });

  void it('a repo mflux pins is downloaded at the pinned commit, recorded with it, and ready only there', async () => {
    const repo = 'Qwen/Qwen-Image-Edit-2509';
    const pinned = 'd3968ef930e841f4c73640fb8afa3b306a78167e';
    hub.addRepo({ id: repo, commit: pinned, files: smallFiles('pinned') });
    const hf = temp('kiapi-hf-');
    const e = env(hf, { edit: repo });
    const r = await runCli(['activate', '--model', 'qwen/edit-2509'], e);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const infos = hub.requests.filter((q) => q.path.startsWith(`/api/models/${repo}`)).map((q) => q.path);
    assert.ok(infos.some((p) => p.startsWith(`/api/models/${repo}/revision/${pinned}`)), JSON.stringify(infos));
    assert.ok(!infos.some((p) => p.includes('/revision/main')), JSON.stringify(infos));
    const record = readRecord(dataDir, repo);
    assert.deepEqual([record?.revision, record?.commit], [pinned, pinned]);
    assert.equal(fs.existsSync(path.join(hf, 'hub', 'models--Qwen--Qwen-Image-Edit-2509', 'refs', 'main')), false);
    const edit = (await status(e)).models.find((m) => m.name === 'edit-2509')!;
    assert.equal(edit.ready, true, edit.detail);
    assert.equal(edit.revision, pinned);
    assert.equal(edit.path, snapshotDir(hf, repo, pinned));

    // Another cache holding only another commit of that repo (e.g. `hf download` of main).
    const other = temp('kiapi-hf-');
    const otherCommit = fakeCommit('another');
    const repoDir = path.join(other, 'hub', 'models--Qwen--Qwen-Image-Edit-2509');
    fs.mkdirSync(path.join(repoDir, 'snapshots', otherCommit), { recursive: true });
    fs.writeFileSync(path.join(repoDir, 'snapshots', otherCommit, 'model_index.json'), '{}');
    fs.mkdirSync(path.join(repoDir, 'refs'));
    fs.writeFileSync(path.join(repoDir, 'refs', 'main'), otherCommit);
    const stale = (await status(env(other, { edit: repo }))).models.find((m) => m.name === 'edit-2509')!;
    assert.equal(stale.ready, false);
    assert.equal(stale.detail, `${repo} is cached at ${otherCommit.slice(0, 12)}…, the engine loads ${pinned.slice(0, 12)}…; run kiapi activate`);
  });

  void it('downloads a public repo, verifies it, records it; status says ready; a rerun downloads nothing', async () => {
    const repo = 'kiapi-test/public';
    const files = smallFiles('public');
    const commit = fakeCommit(repo);
    hub.addRepo({ id: repo, commit, files });
    const hf = temp('kiapi-hf-');
    const e = env(hf, { image: repo });
    const r = await runCli(['activate', '--model', 'qwen/image'], e);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /activated qwen\/image/);
    assert.match(r.stdout, /done +transformer\/diffusion_pytorch_model\.safetensors/);
    for (const f of files) assert.deepEqual(fs.readFileSync(path.join(snapshotDir(hf, repo, commit), f.path)), f.data);
    const record = readRecord(dataDir, repo);
    assert.ok(record);
    assert.equal(record.commit, commit);
    assert.deepEqual(record.files.map((f) => f.path).sort(), files.map((f) => f.path).sort());
    assert.equal(fs.readFileSync(path.join(hf, 'hub', 'models--kiapi-test--public', 'refs', 'main'), 'utf8'), commit);

    const s = await status(e);
    const image = s.models.find((m) => m.name === 'image')!;
    assert.equal(image.ready, true, image.detail);
    assert.equal(image.activation?.commit, commit);
    assert.equal(image.bytes, files.reduce((n, f) => n + f.data.length, 0));
    assert.equal(s.models.find((m) => m.name === 'edit-2509')!.ready, false);

    const gets = hub.requests.filter((q) => q.method === 'GET' && q.path.startsWith(`/${repo}/resolve/`)).length;
    const again = await runCli(['activate', '--model', 'qwen/image'], e);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /already activated/);
    assert.equal(hub.requests.filter((q) => q.method === 'GET' && q.path.startsWith(`/${repo}/resolve/`)).length, gets);
  });

  void describe('gated repos are checked before any byte of any selected model', () => {
    const gated = 'kiapi-test/gated';
    const other = 'kiapi-test/public-beside-gated';
    before(() => {
      hub.addRepo({ id: gated, commit: fakeCommit(gated), gated: true, files: smallFiles('gated') });
      hub.addRepo({ id: other, commit: fakeCommit(other), files: smallFiles('other') });
    });

    function resolveRequests(): number {
      return hub.requests.filter((q) => q.path.startsWith(`/${gated}/resolve/`) || q.path.startsWith(`/${other}/resolve/`)).filter((q) => q.method === 'GET').length;
    }

    void it('no token: 401, says what to do, downloads nothing', async () => {
      const hf = temp('kiapi-hf-');
      const r = await runCli(['activate', '--model', 'qwen/image', '--model', 'fp8'], env(hf, { image: other, ideogram: gated }));
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stderr, /nothing was downloaded/);
      assert.match(r.stderr, /kiapi-test\/gated \(gated: no Hugging Face token found/);
      assert.match(r.stderr, /https:\/\/huggingface\.co\/kiapi-test\/gated/);
      assert.match(r.stderr, /hf auth login/);
      assert.match(r.stderr, /export HF_TOKEN=hf_\.\.\./);
      assert.match(r.stderr, /rerun: kiapi activate --model qwen\/image --model fp8/);
      assert.equal(resolveRequests(), 0);
      assert.equal(fs.existsSync(path.join(hf, 'hub', 'models--kiapi-test--public-beside-gated', 'blobs')), false);
      assert.equal(readRecord(dataDir, other), null);
      assert.equal(readRecord(dataDir, gated), null);
    });

    void it('a token without access: 403 → access not approved, downloads nothing', async () => {
      const hf = temp('kiapi-hf-');
      const r = await runCli(['activate', '--model', 'qwen/image', '--model', 'fp8'], env(hf, { image: other, ideogram: gated }, { HF_TOKEN: 'hf_no_access' }));
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stderr, /access has not been approved/);
      const probe = hub.requests.filter((q) => q.method === 'HEAD' && q.path.startsWith(`/${gated}/resolve/`) && q.authorization === 'Bearer hf_no_access');
      assert.ok(probe.length > 0, 'the access probe carried the token');
      assert.equal(resolveRequests(), 0);
      assert.equal(readRecord(dataDir, other), null);
    });

    void it('a granted token from the `hf auth login` token file: downloads', async () => {
      const hf = temp('kiapi-hf-');
      fs.writeFileSync(path.join(hf, 'token'), 'hf_granted');
      const r = await runCli(['activate', '--model', 'fp8'], env(hf, { ideogram: gated }));
      assert.equal(r.code, 0, r.stdout + r.stderr);
      assert.match(r.stdout, /gated: access ok/);
      assert.ok(readRecord(dataDir, gated));
    });
  });

  void it('a connection cut mid-file is resumed with a Range request; the file is byte-identical', async () => {
    const repo = 'kiapi-test/cut';
    // Larger than huggingface_hub's 10 MiB read chunk, so bytes reach the disk before the cut.
    const big: FakeFile = { path: 'transformer/diffusion_pytorch_model.safetensors', data: pseudoRandomBytes(24_000_000, 'cut'), lfs: true };
    hub.addRepo({ id: repo, commit: fakeCommit(repo), files: [{ path: 'model_index.json', data: Buffer.from('{}') }, big] });
    hub.cutOnce(repo, big.path, 15_000_000);
    const hf = temp('kiapi-hf-');
    const r = await runCli(['activate', '--model', 'edit-2509'], env(hf, { edit: repo }));
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const gets = hub.fileRequests(repo, big.path);
    assert.equal(gets.length, 2, JSON.stringify(gets));
    assert.equal(gets[0]!.range, null);
    assert.match(gets[1]!.range ?? '', /^bytes=[1-9]\d*-$/);
    assert.ok(fs.readFileSync(blobPath(hf, repo, big)).equals(big.data));
    assert.ok(readRecord(dataDir, repo));
  });

  void it('a checksum mismatch fails the download: not activated, the damaged file removed', async () => {
    const repo = 'kiapi-test/corrupt';
    const files = smallFiles('corrupt');
    hub.addRepo({ id: repo, commit: fakeCommit(repo), files });
    hub.corrupt(repo, files[1]!.path);
    const hf = temp('kiapi-hf-');
    const e = env(hf, { image: repo });
    const r = await runCli(['activate', '--model', 'image'], e);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /failed \(checksum\)/);
    assert.match(r.stderr, /transformer\/diffusion_pytorch_model\.safetensors \(sha256 expected/);
    assert.equal(readRecord(dataDir, repo), null);
    assert.equal(fs.existsSync(blobPath(hf, repo, files[1]!)), false);
    const s = await status(e);
    assert.equal(s.models.find((m) => m.name === 'image')!.ready, false);
  });

  void it('refuses when the disk is too small, before downloading', async () => {
    const repo = 'kiapi-test/huge';
    hub.addRepo({
      id: repo,
      commit: fakeCommit(repo),
      files: [{ path: 'model.safetensors', data: Buffer.from('x'), lfs: true, advertisedSize: 10 ** 16 }],
    });
    const r = await runCli(['activate', '--model', 'qwen/image'], env(temp('kiapi-hf-'), { image: repo }));
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /not enough disk space in .*: the download needs 10\.0 PB more .* is free/);
    assert.match(r.stderr, /Nothing was downloaded/);
    assert.equal(hub.fileRequests(repo, 'model.safetensors').length, 0);
  });

  void it('Ctrl-C leaves the model not activated; the next activate continues without fetching finished files again', async () => {
    const repo = 'kiapi-test/interrupted';
    const small: FakeFile = { path: 'model_index.json', data: Buffer.from('{"a": 1}') };
    const big: FakeFile = { path: 'transformer/weights.safetensors', data: pseudoRandomBytes(12_000_000, 'int'), lfs: true };
    hub.addRepo({ id: repo, commit: fakeCommit(repo), files: [small, big] });
    hub.stall(repo, big.path, 1_000_000);
    const hf = temp('kiapi-hf-');
    const e = env(hf, { image: repo });
    const run = startCli(['activate', '--model', 'image'], e);
    await waitFor('the small file in the cache and the big one in flight', () => fs.existsSync(blobPath(hf, repo, small)) && hub.fileRequests(repo, big.path).length > 0);
    run.kill('SIGINT');
    const first = await run.done;
    assert.equal(first.code, 130, first.stdout + first.stderr);
    assert.match(first.stderr, /interrupted: qwen\/image is not activated/);
    assert.equal(readRecord(dataDir, repo), null);

    hub.clearFaults();
    const second = await runCli(['activate', '--model', 'image'], e);
    assert.equal(second.code, 0, second.stdout + second.stderr);
    assert.ok(readRecord(dataDir, repo));
    assert.equal(hub.fileRequests(repo, small.path).length, 1, 'the finished file was not fetched again');
    assert.ok(fs.readFileSync(blobPath(hf, repo, big)).equals(big.data));
  });

  void it('deactivate removes only the revision activate downloaded; other revisions stay', async () => {
    const repo = 'kiapi-test/two-revisions';
    const files = smallFiles('two');
    const commit = fakeCommit(repo);
    hub.addRepo({ id: repo, commit, files });
    const hf = temp('kiapi-hf-');
    const e = env(hf, { image: repo });
    assert.equal((await runCli(['activate', '--model', 'image'], e)).code, 0);

    // Another revision, as another tool would have left it: one blob shared with ours, one of its own.
    const repoDir = path.join(hf, 'hub', 'models--kiapi-test--two-revisions');
    const other = fakeCommit('older');
    const shared = blobPath(hf, repo, files[0]!);
    const ownBlob = path.join(repoDir, 'blobs', 'f'.repeat(40));
    fs.writeFileSync(ownBlob, 'older weights');
    fs.mkdirSync(path.join(repoDir, 'snapshots', other, 'transformer'), { recursive: true });
    fs.symlinkSync(path.relative(path.join(repoDir, 'snapshots', other), shared), path.join(repoDir, 'snapshots', other, 'model_index.json'));
    fs.symlinkSync(path.relative(path.join(repoDir, 'snapshots', other, 'transformer'), ownBlob), path.join(repoDir, 'snapshots', other, 'transformer', 'w.safetensors'));
    fs.writeFileSync(path.join(repoDir, 'refs', 'v1'), other);

    const refused = await runCli(['deactivate', '--model', 'image'], e);
    assert.equal(refused.code, 2, refused.stdout + refused.stderr);
    assert.match(refused.stderr, /--yes/);
    assert.ok(fs.existsSync(snapshotDir(hf, repo, commit)));

    const r = await runCli(['deactivate', '--model', 'image', '--yes'], e);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /1 file\(s\) shared with other revisions stay/);
    assert.equal(fs.existsSync(snapshotDir(hf, repo, commit)), false);
    assert.equal(fs.existsSync(blobPath(hf, repo, files[1]!)), false, 'our own blob is gone');
    assert.equal(fs.existsSync(path.join(repoDir, 'refs', 'main')), false);
    assert.equal(fs.existsSync(path.join(repoDir, 'trees', `${commit}.json`)), false);
    assert.ok(fs.existsSync(shared), 'the shared blob stays');
    assert.ok(fs.existsSync(ownBlob));
    assert.equal(fs.readFileSync(path.join(repoDir, 'snapshots', other, 'model_index.json'), 'utf8'), files[0]!.data.toString());
    assert.equal(fs.readFileSync(path.join(repoDir, 'refs', 'v1'), 'utf8'), other);
    assert.equal(readRecord(dataDir, repo), null);
    const s = await status(e);
    assert.equal(s.models.find((m) => m.name === 'image')!.activation, null);

    const nothing = await runCli(['deactivate', '--model', 'image', '--yes'], e);
    assert.equal(nothing.code, 0);
    assert.match(nothing.stdout, /not activated by kiapi/);
  });

  void it('deactivate --engine removes the venv (last: the other tests use it)', async () => {
    const e = env(temp('kiapi-hf-'), {});
    const r = await runCli(['deactivate', '--engine', '--yes'], e);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /removed the engine venv/);
    assert.equal(fs.existsSync(path.join(dataDir, 'venv')), false);
    const s = await status(e);
    assert.equal(s.engine.ready, false);
    assert.match(s.engine.reason ?? '', /no engine installed/);
  });
});
