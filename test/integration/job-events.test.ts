/**
 * Live job events over real HTTP with a real EventSource client: the whole sequence of a job that
 * succeeds, fails or is canceled; reconnecting with Last-Event-ID; queue positions; step
 * previews; many watchers; a watcher that stops reading; the all-jobs stream and its filters.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { CanceledError, EngineError } from '../../src/core/errors.js';
import type { EngineOutput, ImageTask, RunOptions } from '../../src/engines/engine.js';
import { PreviewEngine } from '../../src/engines/preview/preview-engine.js';
import { getJson, sendJson, type JobJson } from '../support/api.js';
import { startServer, type TestServer } from '../support/server.js';
import { readStream, TERMINAL, watch, type SseEvent } from '../support/sse.js';

const STEP_MS = 20;

/**
 * The preview engine, counting the previews it makes, with three prompts of its own: "fail:…"
 * fails after two steps, "hold" runs until it is canceled (a job that holds the queue), "spin"
 * runs 100-step schedules over and over until canceled (a job that never runs out of events).
 */
class TestEngine extends PreviewEngine {
  previewsMade = 0;

  constructor() {
    super({ stepMs: STEP_MS });
  }

  override async run(task: ImageTask, opts: RunOptions): Promise<EngineOutput> {
    const prompt = typeof task.prompt === 'string' ? task.prompt : '';
    const onPreview = opts.onPreview;
    const counted: RunOptions = { ...opts, onPreview: onPreview && ((p) => (this.previewsMade++, onPreview(p))) };
    if (prompt.startsWith('fail:')) {
      await super.run({ ...task, steps: 2 }, counted);
      throw new EngineError(prompt.slice(5));
    }
    if (prompt === 'hold') {
      await new Promise<void>((resolve) => opts.signal.addEventListener('abort', () => resolve(), { once: true }));
      throw new CanceledError('canceled while holding');
    }
    if (prompt === 'spin') {
      for (;;) await super.run({ ...task, steps: 100 }, counted);
    }
    return super.run(task, counted);
  }
}

let server: TestServer;
let engine: TestEngine;
let url: string;

before(async () => {
  engine = new TestEngine();
  server = await startServer({ KIAPI_EVENTS_HEARTBEAT_S: '0.2', KIAPI_EVENTS_MAX_BUFFER_BYTES: '4096' }, { engine });
  url = server.url;
});

after(async () => {
  await server.close();
});

const QG = '/v1/image/qwen/generate';

async function submit(body: Record<string, unknown>, path = QG): Promise<string> {
  const res = await sendJson<{ job_id: string }>('POST', `${url}${path}`, { width: 64, height: 64, seed: 1, ...body, mode: 'async' });
  assert.equal(res.status, 202, res.bytes.toString());
  return res.json.job_id;
}

async function job(id: string): Promise<JobJson & { queue_position: number | null; eta_s: number | null }> {
  return (await getJson<JobJson & { queue_position: number | null; eta_s: number | null }>(`${url}/v1/jobs/${id}`)).json;
}

async function waitStatus(id: string, status: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  while ((await job(id)).status !== status) {
    if (Date.now() > deadline) throw new Error(`job ${id} never became ${status}`);
    await new Promise((r) => setImmediate(r));
  }
}

/** A long job that holds the queue until it is canceled. */
async function blocker(): Promise<{ id: string; release(): Promise<void> }> {
  const id = await submit({ prompt: 'hold', steps: 100 });
  await waitStatus(id, 'running');
  return {
    id,
    release: async () => {
      await sendJson('POST', `${url}/v1/jobs/${id}/cancel`, {});
      await waitStatus(id, 'canceled');
    },
  };
}

const names = (events: SseEvent[]) => events.map((e) => e.event);

void describe('GET /v1/jobs/{job_id}/events', () => {
  void it('a job that succeeds: queued, started, every step, then succeeded with the job JSON; the stream ends and is not reopened', async () => {
    const hold = await blocker();
    const id = await submit({ prompt: 'a lighthouse', steps: 4 });
    const w = watch(`${url}/v1/jobs/${id}/events`);
    await w.until((e) => e.length > 0);
    await hold.release();
    const events = await w.ended;
    const seq = names(events).filter((n) => n !== 'position');
    assert.deepEqual(seq, ['queued', 'started', 'progress', 'progress', 'progress', 'progress', 'progress', 'succeeded'], names(events).join());
    assert.equal(events[0]!.data.queue_position, 1);
    // Each engine step, then the saving phase (no step of its own).
    const steps = events.filter((e) => e.event === 'progress').map((e) => [e.data.step, e.data.total, e.data.label]);
    assert.deepEqual(steps, [[1, 4, 'denoising'], [2, 4, 'denoising'], [3, 4, 'denoising'], [4, 4, 'denoising'], [null, null, 'saving']]);
    const final = events.at(-1)!;
    assert.equal(final.id, `${id}.end`);
    assert.equal(final.data.id, id);
    assert.equal(final.data.status, 'succeeded');
    assert.equal(final.data.eta_s, null);
    assert.deepEqual(final.data, await job(id));
    // Every id is distinct; EventSource's reconnect after the end is answered 204, so it closes.
    assert.equal(new Set(events.map((e) => e.id)).size, events.length);
    await waitFor(() => w.es.readyState === w.es.CLOSED);
    w.close();
  });

  void it('a job that fails: progress, then failed with its error', async () => {
    const id = await submit({ prompt: 'fail:the engine gave up', steps: 4 });
    const events = await watch(`${url}/v1/jobs/${id}/events`).ended;
    const final = events.at(-1)!;
    assert.equal(final.event, 'failed');
    assert.equal(final.data.status, 'failed');
    assert.match(String(final.data.error), /the engine gave up/);
    assert.ok(!events.slice(0, -1).some((e) => TERMINAL.has(e.event)));
  });

  void it('a running job canceled: its progress, then canceled', async () => {
    const id = await submit({ prompt: 'spin', steps: 100 });
    const w = watch(`${url}/v1/jobs/${id}/events`);
    await w.until((e) => e.some((x) => x.event === 'progress'));
    await sendJson('POST', `${url}/v1/jobs/${id}/cancel`, {});
    const events = await w.ended;
    assert.equal(events.at(-1)!.event, 'canceled');
    assert.equal(events.at(-1)!.data.status, 'canceled');
    w.close();
  });

  void it('a finished job answers its terminal event at once; reconnecting with that id answers 204', async () => {
    const id = await submit({ prompt: 'done already', steps: 1 });
    await waitStatus(id, 'succeeded');
    const first = await readStream(`${url}/v1/jobs/${id}/events`);
    assert.equal(first.status, 200);
    assert.match(first.headers.get('content-type') ?? '', /^text\/event-stream/);
    assert.deepEqual(names(first.events), ['succeeded']);
    // The reconnect delay comes with the first event, not as a block of its own.
    assert.match(first.text, /^retry: \d+\nid: /);
    const again = await readStream(`${url}/v1/jobs/${id}/events`, { 'last-event-id': first.events[0]!.id });
    assert.equal(again.status, 204);
  });

  void it('reconnecting with Last-Event-ID replays exactly what was missed, the terminal event included', async () => {
    const id = await submit({ prompt: 'reconnect', steps: 30 });
    const part = await readStream(`${url}/v1/jobs/${id}/events`, {}, (e) => e.filter((x) => x.event === 'progress').length >= 3);
    const lastSeen = part.events.at(-1)!;
    // Reconnect while it still runs: the stream continues right after the last event seen.
    const rest = await readStream(`${url}/v1/jobs/${id}/events`, { 'last-event-id': lastSeen.id });
    const steps = [...part.events, ...rest.events].filter((e) => e.event === 'progress' && e.data.step !== null).map((e) => e.data.step as number);
    const firstStep = steps[0]!;
    assert.deepEqual(steps, Array.from({ length: 30 - firstStep + 1 }, (_, i) => firstStep + i), 'no step missed or repeated');
    assert.equal(rest.events.at(-1)!.event, 'succeeded');
    // After the end, an id seen before the end still gets the terminal event (the query form works too).
    const late = await readStream(`${url}/v1/jobs/${id}/events?last_event_id=${encodeURIComponent(lastSeen.id)}`);
    assert.deepEqual(names(late.events), ['succeeded']);
  });

  void it('queue positions of three queued jobs, on the job JSON and as events when they move up', async () => {
    const hold = await blocker();
    const [a, b, c] = [await submit({ prompt: 'a', steps: 1 }), await submit({ prompt: 'b', steps: 1 }), await submit({ prompt: 'c', steps: 1 })];
    assert.deepEqual([(await job(a)).queue_position, (await job(b)).queue_position, (await job(c)).queue_position], [1, 2, 3]);
    const w = watch(`${url}/v1/jobs/${c}/events`);
    await w.until((e) => e.length > 0);
    assert.equal(w.events[0]!.data.queue_position, 3);
    await sendJson('POST', `${url}/v1/jobs/${a}/cancel`, {});
    await w.until((e) => e.some((x) => x.event === 'position' && x.data.queue_position === 2));
    assert.equal((await job(c)).queue_position, 2);
    await hold.release();
    const events = await w.ended;
    const positions = events.filter((e) => e.event === 'queued' || e.event === 'position').map((e) => e.data.queue_position);
    assert.deepEqual(positions, [3, 2, 1]);
    assert.equal((await job(c)).queue_position, null);
  });

  void it('previews on request: every N-th step, as JPEG data URLs within the size asked; none made for a job nobody asks', async () => {
    const before = engine.previewsMade;
    const filesBefore = (await getJson<{ data: unknown[] }>(`${url}/v1/files`)).json.data.length;
    const quiet = await submit({ prompt: 'nobody watches', steps: 6, width: 128, height: 96 });
    const plain = await watch(`${url}/v1/jobs/${quiet}/events`).ended;
    assert.ok(!plain.some((e) => e.event === 'preview'));
    assert.equal(engine.previewsMade, before, 'no preview is made without a watcher asking');

    const hold = await blocker();
    const id = await submit({ prompt: 'a fox', steps: 12, width: 128, height: 96 });
    const w = watch(`${url}/v1/jobs/${id}/events?previews=3&preview_size=64`);
    await w.until((e) => e.length > 0);
    await hold.release();
    const events = await w.ended;
    const previews = events.filter((e) => e.event === 'preview');
    assert.ok(previews.length >= 2, `previews: ${previews.length}`);
    for (const p of previews) {
      assert.equal((p.data.step as number) % 3, 0);
      const m = /^data:image\/jpeg;base64,(.+)$/.exec(String(p.data.image));
      assert.ok(m, 'a JPEG data URL');
      const meta = await sharp(Buffer.from(m[1]!, 'base64')).metadata();
      assert.equal(meta.format, 'jpeg');
      assert.deepEqual([meta.width, meta.height], [64, 48]);
      assert.deepEqual([p.data.width, p.data.height], [64, 48]);
    }
    // Nothing of it was stored: the two jobs stored their two images, no more.
    const filesAfter = (await getJson<{ data: unknown[] }>(`${url}/v1/files`)).json.data.length;
    assert.equal(filesAfter - filesBefore, 2);
  });

  void it('100 watchers of one job all see it end; nothing is left behind when they go', async () => {
    const hold = await blocker();
    const id = await submit({ prompt: 'crowd', steps: 5 });
    const watchers = Array.from({ length: 100 }, () => watch(`${url}/v1/jobs/${id}/events`));
    await Promise.all(watchers.map((w) => w.until((e) => e.length > 0)));
    await hold.release();
    const all = await Promise.all(watchers.map((w) => w.ended));
    for (const events of all) {
      assert.equal(events.at(-1)!.event, 'succeeded');
      assert.equal(events.filter((e) => e.event === 'progress' && e.data.label === 'denoising').length, 5);
    }
    for (const w of watchers) w.close();
    await waitFor(() => server.ctx.queue.events.watcherCount === 0);
  });

  void it('a watcher that stops reading is dropped, and the job is not slowed into failure', async () => {
    const id = await submit({ prompt: 'spin', steps: 100, width: 512, height: 512 });
    const socket = net.connect(server.port, '127.0.0.1');
    await new Promise<void>((r) => socket.once('connect', () => r()));
    socket.write(`GET /v1/jobs/${id}/events?previews=1&preview_size=512 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`);
    // Read the answer's first bytes, then never read again.
    await new Promise<void>((r) => socket.once('data', () => r()));
    socket.pause();
    await waitFor(() => server.ctx.queue.events.watcherCount === 0, 120_000);
    socket.destroy();
    await sendJson('POST', `${url}/v1/jobs/${id}/cancel`, {});
    await waitStatus(id, 'canceled');
  });

  void it('unknown job 404, malformed parameters 422 naming the parameter', async () => {
    const missing = await readStream(`${url}/v1/jobs/job_0123456789abcdef0123456789abcdef/events`);
    assert.equal(missing.status, 404);
    const bad = await readStream(`${url}/v1/jobs/job_0123456789abcdef0123456789abcdef/events?previews=0`);
    assert.equal(bad.status, 422);
    assert.match(bad.text, /previews/);
    const size = await readStream(`${url}/v1/jobs/job_0123456789abcdef0123456789abcdef/events?previews=1&preview_size=4096`);
    assert.equal(size.status, 422);
    assert.match(size.text, /preview_size/);
  });
});

void describe('queue position and ETA on the job JSON', () => {
  void it('no history: eta_s is null; once jobs of that model and size ran, queued and running jobs get one, also after a restart', async () => {
    // A server of its own: the other tests' jobs would be history for this one.
    const own = await startServer({}, { engine: new TestEngine() });
    const at = (id: string) => getJson<{ status: string; queue_position: number | null; eta_s: number | null }>(`${own.url}/v1/jobs/${id}`).then((r) => r.json);
    const post = async (body: Record<string, unknown>) =>
      (await sendJson<{ job_id: string }>('POST', `${own.url}${QG}`, { seed: 1, ...body, mode: 'async' })).json.job_id;
    const until = async (id: string, status: string) => waitFor(() => lastStatus.get(id) === status, 60_000, () => at(id).then((j) => lastStatus.set(id, j.status)));
    const lastStatus = new Map<string, string>();
    const body = { prompt: 'eta', steps: 10, width: 80, height: 80 };
    const hold = await post({ prompt: 'hold', steps: 1, width: 64, height: 64 });
    try {
      await until(hold, 'running');
      const first = await post(body);
      const unknown = await at(first);
      assert.equal(unknown.queue_position, 1);
      assert.equal(unknown.eta_s, null, 'nothing measured yet');
      await sendJson('POST', `${own.url}/v1/jobs/${hold}/cancel`, {});
      await until(first, 'succeeded');
      const second = await post({ ...body, steps: 100 });
      await until(second, 'running');
      const third = await post(body);
      const running = await at(second);
      const queued = await at(third);
      assert.equal(typeof running.eta_s, 'number');
      assert.equal(typeof queued.eta_s, 'number');
      assert.ok(queued.eta_s! > running.eta_s!, `${queued.eta_s} > ${running.eta_s}`);
      // A size never measured borrows the same model's measurement, scaled by pixels.
      const bigger = await post({ ...body, width: 160, height: 160 });
      assert.equal(typeof (await at(bigger)).eta_s, 'number');
      for (const id of [second, third, bigger]) await sendJson('POST', `${own.url}/v1/jobs/${id}/cancel`, {});
      await until(bigger, 'canceled');
    } finally {
      await own.close({ keepData: true });
    }
    // The measurements outlive the process: a restarted server estimates at once.
    const again = await startServer({}, { engine: new TestEngine(), dataDir: own.dataDir });
    try {
      const hold2 = (await sendJson<{ job_id: string }>('POST', `${again.url}${QG}`, { prompt: 'hold', steps: 1, width: 80, height: 80, mode: 'async' })).json.job_id;
      const next = (await sendJson<{ job_id: string }>('POST', `${again.url}${QG}`, { ...body, mode: 'async' })).json.job_id;
      const view = (await getJson<{ queue_position: number; eta_s: number | null }>(`${again.url}/v1/jobs/${next}`)).json;
      assert.equal(view.queue_position, 1);
      // The held job ahead has history (80×80), so the queued one has an estimate.
      assert.equal(typeof view.eta_s, 'number');
      await sendJson('POST', `${again.url}/v1/jobs/${hold2}/cancel`, {});
    } finally {
      await again.close();
    }
  });
});

void describe('GET /v1/events', () => {
  void it('streams every job, filtered by type and status; heartbeats keep it open while idle', async () => {
    const all = watch(`${url}/v1/events`);
    const ideogram = watch(`${url}/v1/events?type=ideogram4`);
    const finished = watch(`${url}/v1/events?status=succeeded,failed`);
    await new Promise((r) => setTimeout(r, 0));
    const q = await submit({ prompt: 'q', steps: 2 });
    const i = await submit({ prompt: 'a sign', steps: 2, width: 256, height: 256, preset: 'V4_TURBO_12' }, '/v1/image/ideogram4/generate');
    await all.until((e) => [q, i].every((id) => e.some((x) => x.data.job_id === id && x.event === 'succeeded') || e.some((x) => x.data.id === id && x.event === 'succeeded')));
    const ended = (events: SseEvent[], id: string) => events.some((x) => TERMINAL.has(x.event) && x.data.id === id);
    await ideogram.until((e) => ended(e, i));
    await finished.until((e) => ended(e, q) && ended(e, i));
    assert.ok(ideogram.events.every((e) => (e.data.type as string) === 'ideogram4'));
    assert.ok(finished.events.every((e) => e.event === 'succeeded' || e.event === 'failed'));
    assert.ok(all.events.some((e) => e.event === 'started' && e.data.job_id === q));
    for (const w of [all, ideogram, finished]) w.close();
  });

  void it('a quiet stream answers its headers at once', async () => {
    // The heartbeat here is 0.2 s; the headers must not wait for it (nor for an event).
    const quiet = await startServer({ KIAPI_EVENTS_HEARTBEAT_S: '3600' });
    try {
      const controller = new AbortController();
      const res = await fetch(`${quiet.url}/v1/events`, { signal: controller.signal });
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /^text\/event-stream/);
      controller.abort();
    } finally {
      await quiet.close();
    }
  });

  void it('a heartbeat comment arrives on an idle stream', async () => {
    const controller = new AbortController();
    const res = await fetch(`${url}/v1/events`, { signal: controller.signal });
    let text = '';
    for await (const chunk of res.body!) {
      text += Buffer.from(chunk as Uint8Array).toString();
      if (text.includes(': keep-alive')) break;
    }
    controller.abort();
    assert.match(text, /^: keep-alive\n\n/);
  });

  void it('an unknown status is refused with the list of statuses', async () => {
    const res = await readStream(`${url}/v1/events?status=done`);
    assert.equal(res.status, 400);
    assert.match(res.text, /status: 'done' is not a job status/);
  });
});

/** Waits until `condition` holds, running `refresh` (if any) between checks. */
async function waitFor(condition: () => boolean, timeoutMs = 30_000, refresh?: () => Promise<unknown>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (refresh) await refresh();
    if (condition()) return;
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}
