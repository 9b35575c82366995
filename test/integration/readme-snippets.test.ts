/**
 * The README's "Try it" snippets work as written against a slow engine: the shell blocks between
 * the `readme-test: try-it` markers run in order in one bash (as a newcomer pastes them into one
 * terminal) against the built server with 50 ms per preview step, so a snippet that does not wait
 * for its job, or saves an error body as an image, fails here. Only the server address is
 * substituted.
 */
import assert from 'node:assert/strict';
import { runCaptured, type Captured } from '../support/process.js';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PACKAGE_ROOT } from '../../src/core/package-info.js';
import { spawnServer, tempDir, type SpawnedServer } from '../support/server.js';

const README = fs.readFileSync(path.join(PACKAGE_ROOT, 'README.md'), 'utf8');
const README_URL = 'http://127.0.0.1:8000';

/** The ```sh blocks between the try-it markers, in order. */
function tryItBlocks(): string[] {
  const start = README.indexOf('<!-- readme-test: try-it start');
  const end = README.indexOf('<!-- readme-test: try-it end -->');
  assert.ok(start >= 0 && end > start, 'README.md has the try-it start and end markers');
  const section = README.slice(start, end);
  return [...section.matchAll(/^```(?:sh|bash)\n([\s\S]*?)^```$/gm)].map((m) => m[1] as string);
}

let srv: SpawnedServer;
const dataDir = tempDir('kiapi-readme-data-');
const workDir = tempDir('kiapi-readme-cwd-');

before(async () => {
  // An inherited token or settings file would change what the snippets get.
  srv = await spawnServer({ KIAPI_ENGINE: 'preview', KIAPI_PREVIEW_STEP_MS: '50', KIAPI_DATA_DIR: dataDir, KIAPI_AUTH_TOKEN: '' });
});
after(async () => {
  await srv?.stop();
  fs.rmSync(dataDir, { recursive: true, force: true });
  fs.rmSync(workDir, { recursive: true, force: true });
});

async function bash(script: string, cwd: string): Promise<Captured> {
  // A snippet that polls forever is killed; the test then fails with its output.
  return runCaptured('bash', ['-c', script], { cwd });
}

const MAGIC: Record<string, (b: Buffer) => boolean> = {
  png: (b) => b.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])),
  jpg: (b) => b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff,
  webp: (b) => b.subarray(0, 4).toString('latin1') === 'RIFF' && b.subarray(8, 12).toString('latin1') === 'WEBP',
};

void describe('README "Try it"', () => {
  void it('every curl fails loudly on an HTTP error (--fail or --fail-with-body)', () => {
    const curls = tryItBlocks()
      .join('\n')
      .split('\n')
      .filter((l) => /\bcurl\b/.test(l) && !l.trimStart().startsWith('#'));
    assert.ok(curls.length >= 10, `found ${curls.length} curl lines`);
    for (const line of curls) assert.match(line, /\bcurl\b.*\s--fail(-with-body)?\s/, line);
  });

  void it('runs in order against a slow engine and makes the files it promises', async () => {
    const blocks = tryItBlocks();
    assert.ok(blocks.length >= 4, `found ${blocks.length} blocks`);
    // `errexit` + `pipefail`: any failing command, including one inside `x=$(curl … | json …)`, stops
    // the run; each block announces itself on stderr so a failure names its block.
    const script = [
      'set -eu -o pipefail',
      ...blocks.map((b, i) => `echo "--- block ${i + 1}" >&2\n${b.replaceAll(README_URL, srv.url)}`),
      'echo "--- all blocks done" >&2',
    ].join('\n');
    const r = await bash(script, workDir);
    const report = `exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}\nserver:\n${srv.output().slice(-2000)}`;
    assert.equal(r.code, 0, report);
    assert.match(r.stderr, /--- all blocks done/, report);

    // The async job was polled through to the end: it was seen unfinished (steps are slow), then succeeded.
    assert.match(r.stdout, /job_[0-9a-f]+: (queued|running)\n/, report);
    assert.match(r.stdout, /job_[0-9a-f]+: succeeded\n/, report);
    // The watched job streamed its steps and its end.
    assert.match(r.stdout, /event: progress\n/, report);
    assert.match(r.stdout, /event: preview\n/, report);
    assert.match(r.stdout, /event: succeeded\n/, report);
    // The sync PNG answer carried its headers.
    assert.match(r.stdout, /x-kiapi-file-id: file_[0-9a-f]+/i, report);
    // The long job was canceled before it finished (200 with the job, not 409).
    assert.match(r.stdout, /"progress_label":"canceling"|"status":"canceled"/, report);

    for (const [file, kind] of [
      ['fox.png', 'png'],
      ['lighthouse.png', 'png'],
      ['fox-night.jpg', 'jpg'],
      ['edit.webp', 'webp'],
      ['card.png', 'png'],
    ] as const) {
      const bytes = fs.readFileSync(path.join(workDir, file));
      assert.ok(MAGIC[kind]?.(bytes), `${file} is a ${kind} (${bytes.length} bytes: ${bytes.subarray(0, 40).toString('latin1')})`);
    }
  });
});
