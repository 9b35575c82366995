/**
 * Small pieces of activation: removing one revision from an HF cache, platform detection, the
 * pip argument splitter, the checkbox prompt's parser, and the progress view's two modes.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { planRevisionRemoval, removeRevision, snapshotBytes } from '../../src/core/setup/hf-cache.js';
import { detectPlatform, type PlatformFacts } from '../../src/core/setup/platform.js';
import { splitArgs } from '../../src/core/setup/setup-settings.js';
import { createProgressView, RateMeter } from '../../src/cli/progress-view.js';
import { parseToggles } from '../../src/cli/prompt.js';
import { tempDir } from '../support/server.js';

const dirs: string[] = [];
const ESC = '\u001b';
after(() => dirs.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

void describe('removing one revision from the HF cache', () => {
  void it('keeps blobs another snapshot links to, refs of other commits and other snapshots', () => {
    const cache = tempDir('kiapi-hfcache-');
    dirs.push(cache);
    const repoDir = path.join(cache, 'models--org--m');
    const blob = (name: string, bytes: string) => {
      fs.mkdirSync(path.join(repoDir, 'blobs'), { recursive: true });
      fs.writeFileSync(path.join(repoDir, 'blobs', name), bytes);
      return path.join(repoDir, 'blobs', name);
    };
    const link = (commit: string, file: string, target: string) => {
      const p = path.join(repoDir, 'snapshots', commit, file);
      fs.mkdirSync(path.dirname(p), { recursive: true });
      fs.symlinkSync(path.relative(path.dirname(p), target), p);
    };
    const shared = blob('shared', 'ss');
    const ours = blob('ours', 'oooo');
    const theirs = blob('theirs', 't');
    link('aaa', 'config.json', shared);
    link('aaa', 'sub/w.safetensors', ours);
    link('bbb', 'config.json', shared);
    link('bbb', 'w.safetensors', theirs);
    fs.mkdirSync(path.join(repoDir, 'refs'), { recursive: true });
    fs.writeFileSync(path.join(repoDir, 'refs', 'main'), 'aaa');
    fs.writeFileSync(path.join(repoDir, 'refs', 'v1'), 'bbb');
    fs.mkdirSync(path.join(repoDir, 'trees'), { recursive: true });
    fs.writeFileSync(path.join(repoDir, 'trees', 'aaa.json'), '{}');

    assert.equal(snapshotBytes(path.join(repoDir, 'snapshots', 'aaa')), 6);
    const plan = planRevisionRemoval(cache, 'org/m', 'aaa');
    assert.deepEqual(plan.blobs, [ours]);
    assert.equal(plan.bytes, 4);
    assert.equal(plan.sharedBlobs, 1);
    removeRevision(plan);
    assert.equal(fs.existsSync(path.join(repoDir, 'snapshots', 'aaa')), false);
    assert.equal(fs.existsSync(ours), false);
    assert.ok(fs.existsSync(shared) && fs.existsSync(theirs));
    assert.equal(fs.existsSync(path.join(repoDir, 'refs', 'main')), false);
    assert.ok(fs.existsSync(path.join(repoDir, 'refs', 'v1')));
    assert.equal(fs.existsSync(path.join(repoDir, 'trees', 'aaa.json')), false);

    // The last revision goes with the repo folder and its lock folder.
    fs.mkdirSync(path.join(cache, '.locks', 'models--org--m'), { recursive: true });
    fs.rmSync(path.join(repoDir, 'refs', 'v1'));
    fs.writeFileSync(path.join(repoDir, 'refs', 'main'), 'bbb');
    removeRevision(planRevisionRemoval(cache, 'org/m', 'bbb'));
    assert.equal(fs.existsSync(repoDir), false);
    assert.equal(fs.existsSync(path.join(cache, '.locks', 'models--org--m')), false);
  });
});

void describe('platform detection', () => {
  const facts = (over: Partial<PlatformFacts>): PlatformFacts => ({
    os: 'linux',
    arch: 'x64',
    appleSilicon: () => false,
    nvidiaSmi: () => ({ ok: false, text: 'nvidia-smi not found' }),
    procDriverNvidia: () => false,
    ...over,
  });

  void it('tells Apple Silicon, Linux + NVIDIA and the rest apart, and says what it found', () => {
    assert.equal(detectPlatform({ platform: 'auto' }, facts({ os: 'darwin', arch: 'arm64', appleSilicon: () => true })).kind, 'darwin-arm64');
    // Rosetta: an x64 Node on Apple Silicon hardware.
    assert.equal(detectPlatform({ platform: 'auto' }, facts({ os: 'darwin', arch: 'x64', appleSilicon: () => true })).kind, 'darwin-arm64');
    assert.match(detectPlatform({ platform: 'auto' }, facts({ os: 'darwin' })).detail, /Intel Mac/);
    const gpu = detectPlatform({ platform: 'auto' }, facts({ nvidiaSmi: () => ({ ok: true, text: 'GPU 0: NVIDIA H100' }) }));
    assert.deepEqual([gpu.kind, gpu.detail], ['linux-cuda', 'Linux x64 with GPU 0: NVIDIA H100']);
    assert.equal(detectPlatform({ platform: 'auto' }, facts({ procDriverNvidia: () => true })).kind, 'linux-cuda');
    const none = detectPlatform({ platform: 'auto' }, facts({}));
    assert.equal(none.kind, 'other');
    assert.match(none.detail, /without an NVIDIA GPU \(nvidia-smi not found; \/proc\/driver\/nvidia absent\)/);
    assert.equal(detectPlatform({ platform: 'auto' }, facts({ os: 'win32' })).kind, 'other');
    assert.deepEqual(detectPlatform({ platform: 'linux-cuda' }, facts({})), { kind: 'linux-cuda', detail: 'KIAPI_ACTIVATE_PLATFORM=linux-cuda' });
  });
});

void it('KIAPI_PIP_ARGS splits like a shell (quotes, no expansion)', () => {
  assert.deepEqual(splitArgs(' --no-index  --find-links "/a b/c" --extra \'x y\' '), ['--no-index', '--find-links', '/a b/c', '--extra', 'x y']);
  assert.deepEqual(splitArgs(''), []);
  assert.deepEqual(splitArgs('""'), ['']);
});

void it('the checkbox prompt reads numbers, lists and ranges', () => {
  assert.deepEqual(parseToggles('1 3', 3), { picks: [0, 2], bad: [] });
  assert.deepEqual(parseToggles('1,2-3', 3), { picks: [0, 1, 2], bad: [] });
  assert.deepEqual(parseToggles('0 4 x', 3), { picks: [], bad: ['0', '4', 'x'] });
});

void describe('progress view', () => {
  function capture(tty: boolean) {
    let text = '';
    let t = 0;
    const view = createProgressView({ write: (s: string) => (text += s), columns: 120 }, tty, () => t);
    return { view, text: () => text, tick: (ms: number) => (t += ms) };
  }

  void it('without a terminal: one line per file and a total line every 10 %', () => {
    const c = capture(false);
    c.view.handle({ event: 'start', repo: 'r', commit: 'c', files: 2, total: 1000, cached: 0 });
    for (let done = 50; done <= 1000; done += 50) {
      c.tick(1000);
      c.view.handle({ event: 'progress', file: 'w', file_bytes: done, file_total: 1000, bytes: done, total: 1000 });
    }
    c.view.handle({ event: 'file', file: 'w', size: 1000, cached: false });
    c.view.handle({ event: 'file', file: 'config.json', size: 10, cached: true });
    c.view.finish();
    const lines = c.text().split('\n');
    assert.equal(lines[0], '  2 files, 1.0 kB');
    assert.equal(lines.filter((l) => /^ +\d+% /.test(l)).length, 9, c.text());
    assert.match(c.text(), /ETA /);
    assert.match(c.text(), /done {3}w \(1\.0 kB\)/);
    assert.match(c.text(), /cached config\.json/);
    assert.ok(!c.text().includes(ESC), 'no ANSI codes without a terminal');
  });

  void it('on a terminal: bars redrawn in place with speed and ETA', () => {
    const c = capture(true);
    c.view.handle({ event: 'start', repo: 'r', commit: 'c', files: 1, total: 2_000_000, cached: 0 });
    c.tick(1000);
    c.view.handle({ event: 'progress', file: 'model.safetensors', file_bytes: 1_000_000, file_total: 2_000_000, bytes: 1_000_000, total: 2_000_000 });
    const text = c.text();
    assert.ok(text.includes(`${ESC}[1F${ESC}[J`), 'moves up and clears before redrawing');
    assert.match(text, /\[#{10}-{10}\] +1\.0 MB \/ 2\.0 MB +model\.safetensors/);
    assert.match(text, /50% 1\.0 MB \/ 2\.0 MB {2}1\.0 MB\/s {2}ETA 1s/);
  });

  void it('speed is measured over a sliding window', () => {
    const m = new RateMeter(10_000);
    m.add(0, 0);
    m.add(5000, 5_000_000);
    assert.equal(m.rate(), 1_000_000);
    m.add(20_000, 5_000_000); // stalled for 15 s: the old sample leaves the window
    assert.equal(m.rate(), 0);
    assert.equal(m.eta(100), Number.POSITIVE_INFINITY);
  });
});
