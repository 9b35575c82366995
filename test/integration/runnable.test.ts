/**
 * A job's Runnable is all another node needs to run it: a qwen edit job (two images, two LoRAs)
 * and an ideogram4 job are prepared on one server, their runnable travels as JSON text, and a
 * fresh server on the same data dir (another process's memory, as another node would have) runs
 * it through its registered runner. The result is the one the first server answers for the same
 * request, field for field and in the same key order, and so are the image bytes.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { after, describe, it } from 'node:test';
import { CAPTION_WARNING_PREFIX, PLAIN_PROMPT_WARNING } from '../../src/capabilities/ideogram4/caption-verifier.js';
import type { OperationDef, PreparedJob, Runnable } from '../../src/core/capability.js';
import type { EngineOutput, ImageTask, RunOptions } from '../../src/engines/engine.js';
import { pngBytes, request, sendJson, uploadFile, waitFinished, type JobJson } from '../support/api.js';
import { RecordingPreviewEngine } from '../support/image-flows.js';
import { startServer, tempDir, type TestServer } from '../support/server.js';

/** A minimal safetensors file whose one tensor name marks it as adapter weights. */
function loraBytes(seed: number): Buffer {
  const header = Buffer.from(JSON.stringify({ 'transformer.blocks.0.attn.to_q.lora_A.weight': { dtype: 'F32', shape: [1], data_offsets: [0, 4] } }));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(header.length));
  const data = Buffer.alloc(4);
  data.writeFloatLE(seed);
  return Buffer.concat([len, header, data]);
}

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** The preview engine reporting caption warnings the way mflux does (prefixed), one of them one kiapi found too. */
class CaptionWarningEngine extends RecordingPreviewEngine {
  override async run(task: ImageTask, opts: RunOptions): Promise<EngineOutput> {
    const out = await super.run(task, opts);
    return { ...out, warnings: [`${CAPTION_WARNING_PREFIX}${PLAIN_PROMPT_WARNING}`, `${CAPTION_WARNING_PREFIX}an engine-only note`] };
  }
}

function operation(s: TestServer, family: string, path: string): OperationDef {
  const op = s.ctx.capabilities.list().find((d) => d.family === family)?.operations.find((o) => o.path === path);
  assert.ok(op, `${family} ${path} is registered`);
  return op;
}

async function download(url: string, fileId: string): Promise<Buffer> {
  const res = await request(`${url}/v1/files/${fileId}/download`);
  assert.equal(res.status, 200);
  return res.bytes;
}

/** A result as JSON text less what belongs to one run (its file id and its timing). */
function comparable(result: Record<string, unknown> | null): string {
  const { file_id: _f, timings, ...rest } = result ?? {};
  assert.deepEqual(Object.keys(timings as object), ['total_s']);
  return JSON.stringify(rest);
}

void describe('runnable jobs: prepared on one server, run on another from JSON', () => {
  const dataDir = tempDir();
  const engine = new RecordingPreviewEngine({ stepMs: 0 });
  let first: TestServer | null = null;
  let second: TestServer | null = null;

  after(async () => {
    await first?.close({ keepData: true });
    await second?.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  void it('a qwen edit with images and LoRAs, and an ideogram4 job, run on a fresh server as on the one that prepared them', async () => {
    first = await startServer({}, { dataDir, engine });
    const url = first.url;
    const upload = async (filename: string, data: Buffer, contentType: string) => {
      const res = await uploadFile(url, { filename, contentType, data });
      assert.equal(res.status, 200, res.bytes.toString());
      return res.json.file_id;
    };
    const imageA = await upload('a.png', await pngBytes(32, 32), 'image/png');
    const imageB = await upload('b.png', await pngBytes(20, 24, { r: 0, g: 160, b: 90 }), 'image/png');
    const loraA = await upload('style.safetensors', loraBytes(1), 'application/octet-stream');
    const loraB = await upload('detail.safetensors', loraBytes(2), 'application/octet-stream');
    const editBody = {
      prompt: 'put the two squares side by side',
      images: [
        { type: 'file_id', file_id: imageA },
        { type: 'file_id', file_id: imageB },
      ],
      loras: [{ file: { type: 'file_id', file_id: loraA }, scale: 0.6 }, { file: { type: 'file_id', file_id: loraB } }],
      width: 48,
      height: 32,
      steps: 2,
      seed: 31,
      format: 'webp',
      quality: 80,
    };
    const ideogramBody = { prompt: 'a neon sign that says OPEN', width: 256, height: 256, preset: 'V4_TURBO_12', seed: 32, format: 'jpeg' };

    // The direct way: submitted over HTTP and run by the server that prepared it.
    const direct = async (route: string, body: Record<string, unknown>) => {
      const res = await sendJson<{ job_id: string }>('POST', `${url}${route}`, { ...body, mode: 'async' });
      assert.equal(res.status, 202, res.bytes.toString());
      const job = await waitFinished(url, res.json.job_id);
      assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
      return { job, bytes: await download(url, job.artifacts[0]!), task: engine.runWithSeed(body.seed as number).task };
    };
    const editDirect = await direct('/v1/image/qwen/edit', editBody);
    const ideogramDirect = await direct('/v1/image/ideogram4/generate', ideogramBody);

    // The same requests prepared again; only their runnables leave this server, as text.
    const signal = new AbortController().signal;
    const sent: { type: string; params: Record<string, unknown>; text: string }[] = [];
    for (const [op, body] of [
      [operation(first, 'qwen', '/edit'), editBody],
      [operation(first, 'ideogram4', '/generate'), ideogramBody],
    ] as const) {
      const prepared: PreparedJob = await op.prepare({ ...body, mode: 'async' }, first.ctx.services, signal);
      const text = JSON.stringify(prepared.runnable);
      // Nothing is lost on the way (an undefined, a function or a Buffer would not survive).
      assert.deepEqual(JSON.parse(text), prepared.runnable);
      assert.equal(prepared.runnable.runner, 'image');
      // No path of this node travels: inputs are named by file id and content digest.
      assert.ok(!text.includes(dataDir), `no local path in ${text}`);
      sent.push({ type: op.jobType, params: prepared.params, text });
      // Not queued here: what preparation holds is let go again.
      await prepared.discard();
    }
    const editSpec = (JSON.parse(sent[0]!.text) as { spec: { task: Record<string, unknown> } }).spec.task;
    assert.deepEqual(editSpec.images, [
      { fileId: imageA, sha256: sha256(await download(url, imageA)) },
      { fileId: imageB, sha256: sha256(await download(url, imageB)) },
    ]);
    assert.deepEqual(editSpec.loras, [
      { fileId: loraA, sha256: sha256(loraBytes(1)), scale: 0.6 },
      { fileId: loraB, sha256: sha256(loraBytes(2)), scale: 1 },
    ]);

    await first.close({ keepData: true });
    first = null;

    // A fresh server: its own registry, services and engine, nothing of the first one's memory.
    const otherEngine = new CaptionWarningEngine({ stepMs: 0 });
    second = await startServer({}, { dataDir, engine: otherEngine });
    const ran: JobJson[] = [];
    for (const { type, params, text } of sent) {
      const handler = second.ctx.capabilities.handler(JSON.parse(text) as Runnable, second.ctx.services);
      const queued = await second.ctx.queue.submit(type, params, handler);
      const job = await waitFinished(second.url, queued.id);
      assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
      ran.push(job);
    }
    const [editRan, ideogramRan] = ran as [JobJson, JobJson];

    // The engine got the very task the first server gave its own engine (model repo, paths, digests).
    assert.deepEqual(otherEngine.runWithSeed(31).task, editDirect.task);
    assert.deepEqual(otherEngine.runWithSeed(32).task, ideogramDirect.task);

    // The same result, key order included, and the same image.
    assert.equal(comparable(editRan.result), comparable(editDirect.job.result));
    assert.equal(sha256(await download(second.url, editRan.artifacts[0]!)), sha256(editDirect.bytes));
    const editParams = editRan.result!.params as Record<string, unknown>;
    assert.deepEqual(editParams.image_file_ids, [imageA, imageB]);
    assert.deepEqual(editParams.loras, [
      { file_id: loraA, scale: 0.6 },
      { file_id: loraB, scale: 1 },
    ]);

    // The ideogram4 result differs only by what the running engine reported: its caption warnings
    // join kiapi's own, each once and without the engine's prefix.
    const directParams = ideogramDirect.job.result!.params as Record<string, unknown>;
    assert.deepEqual(directParams.caption_warnings, [PLAIN_PROMPT_WARNING]);
    const ranParams = ideogramRan.result!.params as Record<string, unknown>;
    assert.deepEqual(ranParams.caption_warnings, [PLAIN_PROMPT_WARNING, 'an engine-only note']);
    assert.equal(
      comparable({ ...ideogramRan.result, params: { ...ranParams, caption_warnings: directParams.caption_warnings } }),
      comparable(ideogramDirect.job.result),
    );
    assert.equal(sha256(await download(second.url, ideogramRan.artifacts[0]!)), sha256(ideogramDirect.bytes));
  });

  void it('a runnable naming a runner this server has not registered is refused by name', async () => {
    const s = await startServer();
    try {
      assert.throws(() => s.ctx.capabilities.handler({ runner: 'video', spec: {} }, s.ctx.services), /no job runner 'video' is registered on this node \(registered: image, with-warnings\)/);
      assert.throws(() => s.ctx.capabilities.registerRunner('image', () => () => Promise.reject(new Error('unused'))), /runner 'image' registered twice/);
    } finally {
      await s.close();
    }
  });

  void it('a description this server cannot read (as from another kiapi version) fails its job saying where', async () => {
    const s = await startServer();
    try {
      const body = { prompt: 'a lighthouse', width: 64, height: 64, steps: 1, seed: 5, mode: 'async' };
      const prepared = await operation(s, 'qwen', '/generate').prepare(body, s.ctx.services, new AbortController().signal);
      const runnable = JSON.parse(JSON.stringify(prepared.runnable)) as { runner: string; spec: { task: Record<string, unknown> } };
      runnable.spec.task.width = '64';
      const queued = await s.ctx.queue.submit('qwen', prepared.params, s.ctx.capabilities.handler(runnable, s.ctx.services));
      const job = await waitFinished(s.url, queued.id);
      assert.equal(job.status, 'failed');
      assert.match(job.error ?? '', /cannot run the image job as it was described \(\/task\/width: .*\); the node that accepted it likely runs another kiapi version/);
      assert.deepEqual(job.artifacts, []);
    } finally {
      await s.close();
    }
  });
});
