/**
 * Every client contract across the nodes of one three-node cluster (real PostgreSQL, S3Proxy and
 * three kiapi processes): a job submitted on one node is seen, polled, streamed, canceled and
 * deleted on the others; sync answers are the same whichever node ran the job; files uploaded on
 * one node are inputs and downloads on the others; an Idempotency-Key holds across nodes; a
 * webhook event is delivered once however many nodes run a dispatcher.
 *
 * The preview engine sleeps KIAPI_PREVIEW_STEP_MS per step, so a job's length is set by its
 * `steps`: a few steps finish at once, many keep a node busy for seconds.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { Webhook } from 'standardwebhooks';
import { getJob, listJobs, pngBytes, pollUntil, sendJson, submitAsync, uploadFile, waitForStatus, type JobJson } from '../support/api.js';
import { startServer } from '../support/server.js';
import { readStream, TERMINAL, type SseEvent } from '../support/sse.js';
import { startReceiver, type Receiver } from '../support/webhook-receiver.js';
import { clusterView, dumpLogsOnFailure, openStream, startCluster, whoRuns, type Cluster, type ClusterNode } from './cluster.js';

const STEP_MS = 50;
/** A job that keeps a node busy for a while (steps × STEP_MS); canceled or awaited, never timed. */
const SLOW_STEPS = 400;
/** Bounds for conditions: hang guards on a loaded 2-core machine, not timing checks. */
const LONG_MS = 60_000;
const SECRET = `whsec_${randomBytes(32).toString('base64')}`;

let cluster: Cluster | undefined;
let n0: ClusterNode;
let n1: ClusterNode;
let n2: ClusterNode;

before(async () => {
  cluster = await startCluster({
    nodes: 3,
    env: {
      KIAPI_PREVIEW_STEP_MS: String(STEP_MS),
      KIAPI_QWEN_MAX_STEPS: '1000',
      KIAPI_NET_ALLOW_PRIVATE_URLS: 'true',
      KIAPI_WEBHOOK_SECRET: SECRET,
      KIAPI_WEBHOOK_BACKOFF_S: '0.2',
    },
  });
  [n0, n1, n2] = cluster.nodes as [ClusterNode, ClusterNode, ClusterNode];
});
after(async () => {
  await cluster?.stop();
});
dumpLogsOnFailure(() => cluster);

function generate(node: { url: string }, body: Record<string, unknown>, headers: Record<string, string> = {}) {
  return sendJson<Record<string, unknown>>('POST', `${node.url}/v1/image/qwen/generate`, { prompt: 'a lighthouse at dusk', width: 64, height: 64, steps: 2, ...body }, headers);
}

/** Submits a job that keeps a node busy, and waits until some node runs it; answers its id and the node. */
async function startSlow(on: ClusterNode): Promise<{ jobId: string; runner: string }> {
  const jobId = await submitAsync(on.url, { steps: SLOW_STEPS });
  const runner = await whoRuns(cluster!, jobId, LONG_MS);
  return { jobId, runner };
}

/** Cancels what is left of these jobs (a failed test must not leave the nodes busy for the next). */
async function finishAll(jobIds: string[]): Promise<void> {
  for (const id of jobIds) {
    const res = await fetch(`${n0.url}/v1/jobs/${id}/cancel`, { method: 'POST' });
    await res.arrayBuffer();
  }
  for (const id of jobIds) {
    await pollUntil(
      async () => {
        const res = await fetch(`${n0.url}/v1/jobs/${id}`);
        return res.status === 404 ? 'gone' : ((await res.json()) as JobJson).status;
      },
      (s) => !['queued', 'running'].includes(s),
      `job ${id} to end`,
      LONG_MS,
    );
  }
}

void describe('a job across nodes', () => {
  void it('submitted async on n0 is polled to succeeded on n1 and n2, and listed on every node', async () => {
    const jobId = await submitAsync(n0.url);
    const onN1 = await pollUntil(() => getJob(n1.url, jobId), (j) => j.status === 'succeeded', `job ${jobId} to succeed (seen on n1)`, LONG_MS);
    const onN2 = await getJob(n2.url, jobId);
    assert.equal(onN2.status, 'succeeded');
    assert.deepEqual(onN2.artifacts, onN1.artifacts);
    assert.equal(onN1.artifacts.length, 1);
    for (const node of cluster!.nodes) {
      const listed = await listJobs(node.url);
      assert.ok(
        listed.some((j) => j.id === jobId && j.status === 'succeeded'),
        `${node.id} lists ${jobId}`,
      );
    }
  });

  void it('a sync request on each node answers the image bytes with the headers of a single node, also when another node ran it', async () => {
    // What one kiapi answers (in-process, SQLite, same engine settings): the reference headers.
    const single = await startServer({ KIAPI_PREVIEW_STEP_MS: String(STEP_MS) });
    let reference: string[];
    try {
      const res = await generate(single, { seed: 7 });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('content-type'), 'image/png');
      reference = headerNames(res.headers);
    } finally {
      await single.close();
    }
    const check = async (node: ClusterNode, why: string): Promise<void> => {
      const res = await generate(node, { seed: 7 });
      assert.equal(res.status, 200, `${node.id} (${why}): ${res.bytes.toString().slice(0, 300)}`);
      assert.equal(res.headers.get('content-type'), 'image/png', `${node.id} (${why}) answers the image, not ${res.headers.get('content-type')}: ${res.bytes.toString().slice(0, 300)}`);
      assert.deepEqual([...res.bytes.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
      assert.deepEqual(headerNames(res.headers), reference, `${node.id} (${why}) answers the headers of a single node`);
      const fileId = res.headers.get('x-kiapi-file-id');
      assert.match(fileId ?? '', /^file_/);
      assert.match(res.headers.get('x-kiapi-job-id') ?? '', /^job_/);
      assert.equal(Number(res.headers.get('content-length')), res.bytes.length);
      // The same image, downloaded from another node.
      const other = cluster!.nodes[(cluster!.nodes.indexOf(node) + 1) % 3]!;
      const dl = await fetch(`${other.url}/v1/files/${fileId}/download`);
      assert.equal(dl.status, 200, `${other.id} serves ${fileId}`);
      assert.deepEqual(Buffer.from(await dl.arrayBuffer()), res.bytes);
    };
    for (const node of cluster!.nodes) await check(node, 'the job ran on any node');
    // Two nodes busy with slow jobs: a sync request on a busy node is run by the idle one.
    const busy: { jobId: string; runner: string }[] = [];
    try {
      busy.push(await startSlow(n0), await startSlow(n1));
      const idle = cluster!.nodes.find((n) => !busy.some((b) => b.runner === n.id))!;
      await check(cluster!.node(busy[0]!.runner), `the job ran on ${idle.id}`);
    } finally {
      await finishAll(busy.map((b) => b.jobId));
    }
  });

  void it('cancels a queued job from another node (it never runs), a running job from another node, and deletes one from another node', async () => {
    // Three slow jobs keep the three nodes busy; the fourth waits in the queue.
    const busy: { jobId: string; runner: string }[] = [];
    try {
      for (const on of [n0, n1, n2]) busy.push(await startSlow(on));
      assert.equal(new Set(busy.map((b) => b.runner)).size, 3, `each node runs one: ${JSON.stringify(busy)}`);
      const queuedId = await submitAsync(n0.url, { steps: 2 });
      assert.equal((await getJob(n2.url, queuedId)).status, 'queued');

      const canceled = await sendJson<JobJson>('POST', `${n2.url}/v1/jobs/${queuedId}/cancel`, {});
      assert.equal(canceled.status, 200, canceled.bytes.toString());
      assert.equal(canceled.json.status, 'canceled');
      // Freeing a node now must not start it: it stays canceled, with no start and no artifact.
      await sendJson('POST', `${n1.url}/v1/jobs/${busy[0]!.jobId}/cancel`, {});
      await waitForStatus(n1.url, busy[0]!.jobId, ['canceled']);
      const after = await getJob(n1.url, queuedId);
      assert.equal(after.status, 'canceled');
      assert.equal(after.started_at, null);
      assert.deepEqual(after.artifacts, []);
      const history = await readStream(`${n0.url}/v1/jobs/${queuedId}/events`);
      assert.deepEqual(
        history.events.map((e) => e.event),
        ['canceled'],
      );

      // A running job, canceled on a node that does not run it.
      const running = busy[1]!;
      const other = cluster!.nodes.find((n) => n.id !== running.runner)!;
      const cancel = await sendJson<JobJson>('POST', `${other.url}/v1/jobs/${running.jobId}/cancel`, {});
      assert.equal(cancel.status, 200, cancel.bytes.toString());
      const ended = await waitForStatus(other.url, running.jobId, ['canceled', 'succeeded', 'failed']);
      assert.equal(ended.status, 'canceled', JSON.stringify(ended));

      // Deleted on a node that does not run it: the record is gone everywhere, the runner stops.
      const deleting = busy[2]!;
      const deleter = cluster!.nodes.find((n) => n.id !== deleting.runner)!;
      // A watcher on the third node hears the end: the job's own end is never recorded now.
      const third = cluster!.nodes.find((n) => n.id !== deleting.runner && n.id !== deleter.id)!;
      const watcher = await openStream(`${third.url}/v1/jobs/${deleting.jobId}/events`);
      assert.equal(watcher.status, 200);
      const del = await sendJson<{ deleted: boolean; was_running: boolean }>('DELETE', `${deleter.url}/v1/jobs/${deleting.jobId}`, undefined);
      assert.equal(del.status, 200, del.bytes.toString());
      assert.equal(del.json.deleted, true);
      assert.equal(del.json.was_running, true);
      for (const node of cluster!.nodes) assert.equal((await fetch(`${node.url}/v1/jobs/${deleting.jobId}`)).status, 404, `${node.id} forgot it`);
      const heard = await watcher.ended;
      assert.equal(heard.at(-1)?.event, 'canceled', `the watcher on ${third.id} ends with the deletion: ${heard.map((e) => e.event).join(',')}`);
      assert.equal(heard.at(-1)?.data.error, 'deleted by request');
      await pollUntil(() => clusterView(cluster!.node(deleting.runner)), (v) => !v.nodes.some((n) => n.running_job === deleting.jobId), `${deleting.runner} to stop the deleted job`, LONG_MS);
    } finally {
      await finishAll(busy.map((b) => b.jobId));
    }
  });
});

void describe('events across nodes', () => {
  void it("a job's stream on n2 (job submitted on n0) ends with the terminal event; a reconnect on n1 with Last-Event-ID misses nothing", async () => {
    const jobId = await submitAsync(n0.url, { steps: 40 });
    // The reference: one stream from the start to the end, on the submitting node.
    const reference = readStream(`${n0.url}/v1/jobs/${jobId}/events`);
    const full = readStream(`${n2.url}/v1/jobs/${jobId}/events`);
    // A second watcher on n2 drops its connection after two progress events.
    const first = await readStream(`${n2.url}/v1/jobs/${jobId}/events`, {}, (e) => e.filter((x) => x.event === 'progress').length >= 2 || e.some((x) => TERMINAL.has(x.event)));
    const last = first.events.at(-1)!;
    assert.ok(last.id, 'events carry ids');
    const resumed = await readStream(`${n1.url}/v1/jobs/${jobId}/events`, { 'last-event-id': last.id });
    const ref = await reference;
    const whole = await full;
    assert.equal(whole.status, 200);
    assert.equal(whole.events.at(-1)?.event, 'succeeded', whole.events.map((e) => e.event).join(','));
    assert.equal(resumed.events.at(-1)?.event, 'succeeded');
    assert.equal(whole.events.filter((e) => TERMINAL.has(e.event)).length, 1);
    // Everything the reference saw after the last event received before the drop, the resumed stream has.
    const at = ref.events.findIndex((e) => e.id === last.id);
    assert.ok(at >= 0 || TERMINAL.has(last.event), `the reference saw ${last.id}: ${ids(ref.events)}`);
    const missed = ref.events.slice(at + 1).filter((e) => !resumed.events.some((r) => r.id === e.id));
    assert.deepEqual(missed, [], `resumed after ${last.id}: ${ids(resumed.events)}; reference: ${ids(ref.events)}`);
    assert.ok(!resumed.events.some((e) => e.id === last.id), 'nothing before Last-Event-ID is sent again');
  });

  void it('GET /v1/events on one node sees the jobs submitted on every node', async () => {
    const stream = await openStream(`${n1.url}/v1/events?status=succeeded`);
    try {
      assert.equal(stream.status, 200);
      const ids: string[] = [];
      for (const node of cluster!.nodes) ids.push(await submitAsync(node.url, { steps: 3 }));
      await stream.until((events) => ids.every((id) => events.some((e) => e.event === 'succeeded' && e.data.id === id)), LONG_MS);
    } finally {
      stream.close();
    }
  });
});

void describe('files across nodes', () => {
  void it('a file uploaded on n0 is the init_image of a job submitted on n1; its artifact downloads the same from every node', async () => {
    const png = await pngBytes(64, 64, { r: 20, g: 120, b: 220 });
    const up = await uploadFile(n0.url, { filename: 'input.png', contentType: 'image/png', data: png });
    assert.equal(up.status, 200, up.bytes.toString());
    const inputId = up.json.file_id;
    for (const node of [n1, n2]) {
      const dl = await fetch(`${node.url}/v1/files/${inputId}/download`);
      assert.equal(dl.status, 200, `${node.id} serves the upload ${inputId}`);
      assert.deepEqual(Buffer.from(await dl.arrayBuffer()), png);
    }
    const artifactOf = async (submitOn: ClusterNode): Promise<string> => {
      const jobId = await submitAsync(submitOn.url, { init_image: { type: 'file_id', file_id: inputId }, image_strength: 0.5, seed: 3 });
      const done = await pollUntil(() => getJob(submitOn.url, jobId), (j) => j.status !== 'queued' && j.status !== 'running', `job ${jobId} to end`, LONG_MS);
      assert.equal(done.status, 'succeeded', JSON.stringify(done));
      return done.artifacts[0]!;
    };
    const download = async (node: ClusterNode, fileId: string): Promise<Buffer> => {
      const dl = await fetch(`${node.url}/v1/files/${fileId}/download`);
      assert.equal(dl.status, 200, `${node.id} serves ${fileId}`);
      return Buffer.from(await dl.arrayBuffer());
    };
    // Run anywhere.
    const artifact = await artifactOf(n1);
    const bytes = await Promise.all(cluster!.nodes.map((n) => download(n, artifact)));
    assert.ok(bytes[0]!.length > 0);
    assert.deepEqual(bytes[1], bytes[0]);
    assert.deepEqual(bytes[2], bytes[0]);
    // Run for certain on another node than the one that took the upload: that node is kept busy.
    const busy = await submitAsync(n0.url, { steps: SLOW_STEPS });
    try {
      const runner = await whoRuns(cluster!, busy, LONG_MS);
      const uploader = cluster!.node(runner);
      const again = await uploadFile(uploader.url, { filename: 'input2.png', contentType: 'image/png', data: png });
      assert.equal(again.status, 200, again.bytes.toString());
      const submitOn = cluster!.nodes.find((n) => n.id !== runner)!;
      const jobId = await submitAsync(submitOn.url, { init_image: { type: 'file_id', file_id: again.json.file_id }, image_strength: 0.5, seed: 3 });
      const done = await pollUntil(() => getJob(submitOn.url, jobId), (j) => j.status !== 'queued' && j.status !== 'running', `job ${jobId} to end`, LONG_MS);
      assert.equal(done.status, 'succeeded', JSON.stringify(done));
      // The same input, seed and settings make the same image on any node.
      assert.deepEqual(await download(uploader, done.artifacts[0]!), bytes[0]);
    } finally {
      await finishAll([busy]);
    }
  });
});

void describe('Idempotency-Key across nodes', () => {
  void it('the same request and key sent to n0 then n1 makes one job; the second answer is the replay', async () => {
    const key = `idem-${randomBytes(8).toString('hex')}`;
    const prompt = `a harbour ${key}`;
    const first = await generate(n0, { prompt, mode: 'async' }, { 'idempotency-key': key });
    assert.equal(first.status, 202, first.bytes.toString());
    const second = await generate(n1, { prompt, mode: 'async' }, { 'idempotency-key': key });
    assert.equal(second.status, 202, second.bytes.toString());
    assert.equal(second.json.job_id, first.json.job_id);
    assert.equal(second.headers.get('idempotent-replayed'), 'true');
    assert.notEqual(first.headers.get('idempotent-replayed'), 'true');
    const jobs = (await listJobs(n2.url)).filter((j) => (j.params as { prompt?: string }).prompt === prompt);
    assert.equal(jobs.length, 1);
  });

  void it('the same request and key sent to n1 and n2 at once makes one job; one answer is the replay', async () => {
    const key = `idem-${randomBytes(8).toString('hex')}`;
    const prompt = `a windmill ${key}`;
    const [a, b] = await Promise.all([n1, n2].map((n) => generate(n, { prompt, mode: 'async' }, { 'idempotency-key': key })));
    assert.equal(a!.status, 202, a!.bytes.toString());
    assert.equal(b!.status, 202, b!.bytes.toString());
    assert.equal(a!.json.job_id, b!.json.job_id);
    assert.deepEqual([a!, b!].map((r) => r.headers.get('idempotent-replayed') === 'true').sort(), [false, true]);
    const jobs = (await listJobs(n0.url)).filter((j) => (j.params as { prompt?: string }).prompt === prompt);
    assert.equal(jobs.length, 1);
  });
});

void describe('webhooks across nodes', () => {
  let hooks: Receiver | undefined;
  after(async () => {
    await hooks?.close();
  });

  void it('jobs with a webhook submitted on every node: each event is delivered exactly once', async () => {
    hooks = await startReceiver();
    const jobIds: string[] = [];
    for (const node of [n0, n1, n2, n0, n1, n2]) {
      const res = await generate(node, { mode: 'async', webhook: hooks.url, webhook_events_filter: ['start', 'completed'] });
      assert.equal(res.status, 202, res.bytes.toString());
      jobIds.push(res.json.job_id as string);
    }
    type Hooked = JobJson & { webhook?: { deliveries: { event: string; state: string; id: string }[] } };
    // Each job's record says both deliveries are done (asked of any node: the outbox is shared).
    for (const [i, jobId] of jobIds.entries()) {
      const node = cluster!.nodes[i % 3]!;
      await pollUntil(
        () => getJob(node.url, jobId) as Promise<Hooked>,
        (j) => ['start', 'completed'].every((e) => j.webhook?.deliveries.some((d) => d.event === e && d.state === 'delivered')),
        `job ${jobId}'s webhooks to be delivered`,
        LONG_MS,
      );
    }
    const webhook = new Webhook(SECRET);
    const got = hooks.received.map((r) => {
      const headers: Record<string, string> = {};
      for (const name of ['webhook-id', 'webhook-timestamp', 'webhook-signature']) headers[name] = String(r.headers[name]);
      const body = webhook.verify(r.body, headers) as { type: string; data: { id: string } };
      return { id: headers['webhook-id']!, type: body.type, job: body.data.id };
    });
    const ids = got.map((g) => g.id);
    assert.equal(new Set(ids).size, ids.length, `no webhook-id twice: ${ids.join(', ')}`);
    for (const jobId of jobIds) {
      assert.deepEqual(
        got.filter((g) => g.job === jobId).map((g) => g.type).sort(),
        ['job.started', 'job.succeeded'],
        `${jobId}: ${JSON.stringify(got.filter((g) => g.job === jobId))}`,
      );
    }
    assert.equal(got.length, jobIds.length * 2);
  });
});

void describe('/health across nodes', () => {
  void it('answers 200 on every node, with a cluster view listing the three live nodes', async () => {
    for (const node of cluster!.nodes) {
      const res = await fetch(`${node.url}/health`);
      assert.equal(res.status, 200);
      const view = await clusterView(node);
      assert.equal(view.node_id, node.id);
      assert.deepEqual(
        view.nodes.filter((n) => n.live).map((n) => n.node_id),
        ['n0', 'n1', 'n2'],
      );
      for (const n of view.nodes) assert.equal(n.url, cluster!.node(n.node_id).url);
    }
  });
});

/** The names of an answer's headers, without those that differ per answer or per connection. */
function headerNames(headers: Headers): string[] {
  const varying = new Set(['date', 'connection', 'keep-alive', 'server-timing']);
  return [...headers.keys()].filter((k) => !varying.has(k)).sort();
}

function ids(events: SseEvent[]): string {
  return events.map((e) => `${e.event}#${e.id}`).join(',');
}
