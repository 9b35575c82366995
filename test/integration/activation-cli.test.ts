/**
 * The activation commands that need no venv, as real child processes: `config` (template, init,
 * show, the precedence env > file > default, bad values naming the file, the file reaching the
 * server's families), bad input (unknown names list the valid ones, no selection without a TTY),
 * the unsupported-platform and missing-Python messages, `status`, and `check` on the fake engine
 * (KIAPI_PYTHON=python3 with the fake mflux on PYTHONPATH, as CI runs it).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { cleanEnv, runCli } from '../support/activation.js';
import { FAKE_MFLUX_PATH, fakeMfluxEnv, readFakeCalls } from '../support/fake-mflux.js';
import { postJson, spawnServer, startServer, tempDir, type SpawnedServer, type TestServer } from '../support/server.js';

const dirs: string[] = [];
function temp(prefix: string): string {
  const d = tempDir(prefix);
  dirs.push(d);
  return d;
}

after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

interface ShowJson {
  file: string;
  fileExists: boolean;
  settings: { name: string; value: string | null; source: string; description: string }[];
  problems: string[];
}

void describe('kiapi config', () => {
  let dir: string;
  let file: string;
  before(() => {
    dir = temp('kiapi-cfg-');
    file = path.join(dir, 'conf', 'settings.yaml');
  });
  const env = (extra: Record<string, string | undefined> = {}) => cleanEnv({ KIAPI_DATA_DIR: path.join(dir, 'data'), KIAPI_CONFIG_FILE: file, ...extra });

  void it('template lists every setting the code reads, each with a default and a description', async () => {
    const r = await runCli(['config', 'template'], env());
    assert.equal(r.code, 0, r.stderr);
    for (const name of [
      'KIAPI_PORT',
      'KIAPI_DATA_DIR',
      'KIAPI_MEMORY_LIMIT_GB',
      'KIAPI_QWEN_MAX_STEPS',
      'KIAPI_QWEN_DEFAULT_QUANTIZE',
      'KIAPI_IDEOGRAM4_DEFAULT_PRESET',
      'KIAPI_REQUEST_TIMEOUT_S',
      'KIAPI_PIP_ARGS',
      'KIAPI_ACTIVATE_PLATFORM',
      'KIAPI_ACTIVATE_PYTHON',
      'KIAPI_CONFIG_FILE',
    ]) {
      assert.match(r.stdout, new RegExp(`^# ${name}:`, 'm'), name);
    }
    assert.match(r.stdout, /^# KIAPI_PORT: 8000$/m);
    assert.match(r.stdout, /^# KIAPI_QWEN_MAX_STEPS: 100$/m);
    assert.doesNotMatch(r.stdout, /\(no description\)/);
  });

  void it('init writes a commented file once and prints its path', async () => {
    const first = await runCli(['config', 'init'], env());
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, new RegExp(`created ${file.replaceAll('/', '\\/')}`));
    const text = fs.readFileSync(file, 'utf8');
    assert.match(text, /^KIAPI_PORT: 8000$/m);
    assert.match(text, /^# KIAPI_AUTH_TOKEN:/m);
    fs.appendFileSync(file, '# mine\n');
    const second = await runCli(['config', 'init'], env());
    assert.match(second.stdout, /exists; left unchanged/);
    assert.match(fs.readFileSync(file, 'utf8'), /# mine/);
  });

  void it('show: env wins over the file, the file over the default; secrets are masked', async () => {
    fs.writeFileSync(file, 'KIAPI_PORT: 8123\nKIAPI_QWEN_MAX_STEPS: 50\nKIAPI_AUTH_TOKEN: sekrit\nKIAPI_WARMUP: [qwen/image]\n');
    const r = await runCli(['config', 'show', '--json'], env({ KIAPI_QWEN_MAX_STEPS: '60', KIAPI_SYNC_TIMEOUT_S: '90' }));
    assert.equal(r.code, 0, r.stderr);
    const show = JSON.parse(r.stdout) as ShowJson;
    const get = (n: string) => show.settings.find((s) => s.name === n)!;
    assert.deepEqual([get('KIAPI_PORT').value, get('KIAPI_PORT').source], ['8123', 'file']);
    assert.deepEqual([get('KIAPI_QWEN_MAX_STEPS').value, get('KIAPI_QWEN_MAX_STEPS').source], ['60', 'env']);
    assert.deepEqual([get('KIAPI_SYNC_TIMEOUT_S').value, get('KIAPI_SYNC_TIMEOUT_S').source], ['90', 'env']);
    assert.deepEqual([get('KIAPI_HOST').value, get('KIAPI_HOST').source], ['127.0.0.1', 'default']);
    assert.deepEqual([get('KIAPI_AUTH_TOKEN').value, get('KIAPI_AUTH_TOKEN').source], ['********', 'file']);
    assert.equal(get('KIAPI_WARMUP').value, '["qwen/image"]');
    assert.deepEqual(show.problems, []);
    const text = await runCli(['config', 'show'], env());
    assert.match(text.stdout, /KIAPI_PORT +8123 +file/);
    assert.doesNotMatch(text.stdout, /sekrit/);
  });

  void it('a bad value in the file is reported like a bad variable, naming the file', async () => {
    fs.writeFileSync(file, 'KIAPI_PORT: abc\n');
    const r = await runCli(['status'], env());
    assert.equal(r.code, 2);
    assert.ok(r.stderr.includes(`KIAPI_PORT="abc": expected an integer in 0..65535 (set in ${file})`), r.stderr);
    const fromEnv = await runCli(['status'], env({ KIAPI_PORT: 'xyz' }));
    assert.equal(fromEnv.code, 2);
    assert.match(fromEnv.stderr, /KIAPI_PORT="xyz": expected an integer in 0\.\.65535$/m, 'an env value is not blamed on the file');
    fs.writeFileSync(file, 'KIAPI_PROT: 8000\n');
    const unknown = await runCli(['status'], env());
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /KIAPI_PROT in .*settings\.yaml: unknown setting/);
    fs.writeFileSync(file, 'KIAPI_PORT: [1\n');
    const broken = await runCli(['config', 'show'], env());
    assert.equal(broken.code, 2);
    assert.ok(broken.stderr.includes(file), broken.stderr);
  });

  void it('kiapi run honours the file for the families too (KIAPI_QWEN_*), and the environment beats it', async () => {
    fs.writeFileSync(file, 'KIAPI_QWEN_MAX_STEPS: 5\n');
    const base = { KIAPI_CONFIG_FILE: file, KIAPI_DATA_DIR: temp('kiapi-cfg-run-') };
    let server: SpawnedServer | null = await spawnServer(base);
    try {
      const body = { prompt: 'a fox', width: 64, height: 64, steps: 6 };
      const refused = await postJson(`${server.url}/v1/image/qwen/generate`, body, { accept: 'application/json' });
      assert.equal(refused.status, 422, JSON.stringify(refused.json));
      await server.stop();
      server = await spawnServer({ ...base, KIAPI_QWEN_MAX_STEPS: '10' });
      const accepted = await postJson(`${server.url}/v1/image/qwen/generate`, body, { accept: 'application/json' });
      assert.equal(accepted.status, 200, JSON.stringify(accepted.json));
    } finally {
      await server?.stop();
    }
  });
});

void describe('setup commands: bad input and unsupported machines', () => {
  let dataDir: string;
  before(() => {
    dataDir = temp('kiapi-bad-');
  });
  const env = (extra: Record<string, string | undefined> = {}) => cleanEnv({ KIAPI_DATA_DIR: dataDir, ...extra });

  void it('unknown model or family names list the valid ones', async () => {
    const model = await runCli(['activate', '--model', 'qwen/nope'], env());
    assert.equal(model.code, 2);
    assert.match(model.stderr, /unknown model 'qwen\/nope'; known models:/);
    for (const known of ['qwen/image', 'qwen/edit-2509', 'ideogram4/fp8']) assert.ok(model.stderr.includes(known), model.stderr);
    const family = await runCli(['deactivate', '--family', 'flux'], env());
    assert.equal(family.code, 2);
    assert.match(family.stderr, /unknown family 'flux'; known families: ideogram4, qwen/);
    const check = await runCli(['check', '--model', 'nope'], env());
    assert.equal(check.code, 2);
    assert.match(check.stderr, /known models:/);
  });

  void it('without a terminal and without a selection: an error naming the flags', async () => {
    const r = await runCli(['activate'], env());
    assert.equal(r.code, 2);
    assert.match(r.stderr, /no models selected: pass --model NAME \(repeatable\), --family NAME or --all/);
  });

  void it('an unsupported platform is refused with what was found and what is needed', async () => {
    const r = await runCli(['activate', '--model', 'image'], env({ KIAPI_ACTIVATE_PLATFORM: 'other' }));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /the mflux engine cannot run on this machine\. Detected: KIAPI_ACTIVATE_PLATFORM=other/);
    assert.match(r.stderr, /macOS on Apple Silicon/);
    assert.match(r.stderr, /NVIDIA GPU/);
    assert.equal(fs.existsSync(path.join(dataDir, 'venv')), false);
  });

  void it('a missing python3 says what is needed', async () => {
    const named = await runCli(['activate', '--model', 'image'], env({ KIAPI_ACTIVATE_PLATFORM: 'linux-cuda', KIAPI_ACTIVATE_PYTHON: '/nonexistent/python3' }));
    assert.equal(named.code, 1);
    assert.match(named.stderr, /KIAPI_ACTIVATE_PYTHON=\/nonexistent\/python3: no such program/);
    assert.match(named.stderr, /Python >= 3\.11 \(3\.11, 3\.12 or 3\.13: mflux needs >=3\.11/);
    const emptyBin = temp('kiapi-nopath-');
    const onPath = await runCli(['activate', '--model', 'image'], env({ KIAPI_ACTIVATE_PLATFORM: 'linux-cuda', PATH: emptyBin }));
    assert.equal(onPath.code, 1, onPath.stderr);
    assert.match(onPath.stderr, /python3 was not found on PATH/);
    assert.match(onPath.stderr, /brew install python@3\.12|apt install python3/);
    assert.equal(fs.existsSync(path.join(dataDir, 'venv')), false);
  });

  void it('status with nothing installed: no engine, no activated model', async () => {
    const r = await runCli(['status', '--json'], env());
    assert.equal(r.code, 0, r.stderr);
    const s = JSON.parse(r.stdout) as { engine: { ready: boolean; reason: string }; models: { ready: boolean; activation: unknown }[] };
    assert.equal(s.engine.ready, false);
    assert.match(s.engine.reason, /no engine installed/);
    assert.ok(s.models.every((m) => !m.ready && m.activation === null));
  });
});

void describe('kiapi check and status on the fake engine', () => {
  let dir: string;
  let fakeEnv: Record<string, string>;
  before(() => {
    dir = temp('kiapi-check-');
    fakeEnv = { ...fakeMfluxEnv(dir), KIAPI_DATA_DIR: path.join(dir, 'data') };
  });

  void it('check makes one image per activated model, prints timings, exits 0', async () => {
    const out = path.join(dir, 'out');
    const r = await runCli(['check', '--out', out], cleanEnv(fakeEnv));
    assert.equal(r.code, 0, r.stdout + r.stderr);
    for (const label of ['qwen/image', 'qwen/edit-2509', 'ideogram4/fp8']) {
      assert.match(r.stdout, new RegExp(`\\[ok\\] ${label.replace('/', '\\/')} +load \\d+\\.\\d s(, \\d+\\.\\d+ GiB)?, generation \\d+\\.\\d s`), r.stdout);
    }
    for (const name of ['qwen-image.png', 'qwen-edit-2509.png', 'ideogram4-fp8.png']) {
      const meta = await sharp(path.join(out, name)).metadata();
      assert.deepEqual([meta.format, meta.width, meta.height], ['png', 256, 256], name);
    }
    const gens = readFakeCalls(dir).filter((c) => c.event === 'generate_image');
    const ideogram = gens.find((c) => c.class === 'Ideogram4')!;
    assert.equal(ideogram.kwargs.preset, 'V4_TURBO_12');
    assert.equal(ideogram.kwargs.prompt, 'simple word OK on a plain white card');
    const qwen = gens.find((c) => c.class === 'QwenImage')!;
    assert.equal(qwen.kwargs.num_inference_steps, 1);
    assert.equal(qwen.kwargs.prompt, 'a tiny blue cube on a white table');
  });

  void it('check --model checks only that model; a failing engine makes the exit code non-zero', async () => {
    const one = await runCli(['check', '--model', 'qwen/image', '--out', path.join(dir, 'one')], cleanEnv(fakeEnv));
    assert.equal(one.code, 0, one.stdout + one.stderr);
    assert.deepEqual(fs.readdirSync(path.join(dir, 'one')), ['qwen-image.png']);
    const failing = await runCli(['check', '--model', 'fp8', '--out', path.join(dir, 'bad')], cleanEnv({ ...fakeEnv, FAKE_MFLUX_RAISE: 'RuntimeError: out of ideas' }));
    assert.equal(failing.code, 1, failing.stdout + failing.stderr);
    assert.match(failing.stdout, /\[failed\] ideogram4\/fp8: .*out of ideas/);
    assert.match(failing.stderr, /1 check\(s\) failed\./);
  });

  void it('check of a model that is not activated fails with the command that fixes it', async () => {
    const r = await runCli(['check', '--model', 'image', '--out', path.join(dir, 'missing')], cleanEnv({ ...fakeEnv, KIAPI_QWEN_IMAGE_MODEL: path.join(dir, 'nowhere') }));
    assert.equal(r.code, 1);
    assert.match(r.stdout, /\[failed\] qwen\/image: not activated .*run: kiapi activate --model qwen\/image/);
  });

  void it('status with another mflux: says which was found, which is supported, and that it runs anyway', async () => {
    // A dist-info ahead of the fake on the path makes importlib.metadata report 0.18.0.
    const other = path.join(dir, 'other-mflux');
    fs.mkdirSync(path.join(other, 'mflux-0.18.0.dist-info'), { recursive: true });
    fs.writeFileSync(path.join(other, 'mflux-0.18.0.dist-info', 'METADATA'), 'Metadata-Version: 2.1\nName: mflux\nVersion: 0.18.0\n');
    const e = cleanEnv({ ...fakeEnv, KIAPI_PORT: '9', PYTHONPATH: `${other}${path.delimiter}${FAKE_MFLUX_PATH}` });
    const text = await runCli(['status'], e);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /Engine +ready: mflux 0\.18\.0/);
    assert.match(text.stdout, /warning: mflux 0\.18\.0 is installed, kiapi supports mflux 0\.24\.0: the worker starts and runs it anyway, but that combination is untested/);
    const json = await runCli(['status', '--json'], e);
    const s = JSON.parse(json.stdout) as { engine: { ready: boolean; mflux: { found: string; supported: string; matches: boolean; note: string } } };
    assert.equal(s.engine.ready, true);
    assert.deepEqual([s.engine.mflux.found, s.engine.mflux.supported, s.engine.mflux.matches], ['0.18.0', '0.24.0', false]);
    assert.match(s.engine.mflux.note, /untested/);
  });

  void it('status: engine versions, weights and disk use, and whether a server is running', async () => {
    const r = await runCli(['status'], cleanEnv({ ...fakeEnv, KIAPI_PORT: '9' }));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Engine +ready: mflux 0\.24\.0, mlx 0\.31\.2 \(gpu\)/);
    assert.doesNotMatch(r.stdout, /warning/);
    assert.match(r.stdout, /\(KIAPI_PYTHON\)/);
    assert.match(r.stdout, /Server +not running on http:\/\/127\.0\.0\.1:9/);
    assert.match(r.stdout, /qwen +image \* +ready +\d+ B +/);

    let server: TestServer | null = null;
    try {
      server = await startServer();
      const running = await runCli(['status', '--json'], cleanEnv({ ...fakeEnv, KIAPI_PORT: String(server.port) }));
      const s = JSON.parse(running.stdout) as { server: { running: boolean; engine: string } };
      assert.equal(s.server.running, true);
      assert.equal(s.server.engine, 'preview');
    } finally {
      await server?.close();
    }
  });
});
