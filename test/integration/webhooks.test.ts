/**
 * Completion webhooks over real HTTP: receivers are node:http servers on 127.0.0.1 (allowed by
 * KIAPI_NET_ALLOW_PRIVATE_URLS in the tests that deliver), signatures are checked with the
 * Standard Webhooks reference library (not kiapi's own code), and the outbox is the real SQLite
 * one: retries after failures, a receiver that never answers (bounded, the queue unaffected), a
 * shutdown with a delivery in flight, a crash (SIGKILL) between a job's end and its delivery.
 * The README's receiver (Node) and verifier (Python) snippets run as written against real deliveries.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { pathToFileURL } from 'node:url';
import { Webhook } from 'standardwebhooks';
import { PACKAGE_ROOT } from '../../src/core/package-info.js';
import { getJob, getJson, pollUntil, sendJson, stopWithin, submitAsync, waitFinished, type JobJson } from '../support/api.js';
import { freePort, spawnServer, startServer, tempDir, type TestServer } from '../support/server.js';
import { startReceiver, type Receiver } from '../support/webhook-receiver.js';

const SECRET = `whsec_${Buffer.alloc(32, 7).toString('base64')}`;

interface Delivery {
  id: string;
  event: string;
  type: string;
  state: string;
  attempts: number;
  last_status: number | null;
  last_error: string | null;
  next_attempt_at: number | null;
  delivered_at: number | null;
}
type HookedJob = JobJson & { webhook?: { url: string; events: string[]; deliveries: Delivery[] } };

const cleanups: (() => Promise<void> | void)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function server(env: Record<string, string>, dataDir?: string): Promise<TestServer> {
  const s = await startServer(env, dataDir ? { dataDir } : {});
  cleanups.push(() => s.close().catch(() => undefined));
  return s;
}

async function receiver(answer?: Parameters<typeof startReceiver>[0], port?: number): Promise<Receiver> {
  const r = await startReceiver(answer, port);
  cleanups.push(() => r.close());
  return r;
}

function dataDir(): string {
  const d = tempDir('kiapi-webhooks-');
  cleanups.push(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

function verify(secret: string, r: { headers: Record<string, string | string[] | undefined>; body: string }): { type: string; timestamp: string; data: HookedJob } {
  const headers: Record<string, string> = {};
  for (const name of ['webhook-id', 'webhook-timestamp', 'webhook-signature']) headers[name] = String(r.headers[name]);
  return new Webhook(secret).verify(r.body, headers) as { type: string; timestamp: string; data: HookedJob };
}

function delivery(job: HookedJob, event: string): Delivery | undefined {
  return job.webhook?.deliveries.find((d) => d.event === event);
}

function waitDelivery(s: { url: string }, jobId: string, event: string, states: string[]): Promise<HookedJob> {
  return pollUntil(
    () => getJob(s.url, jobId) as Promise<HookedJob>,
    (j) => states.includes(delivery(j, event)?.state ?? ''),
    `job ${jobId}'s ${event} webhook to be ${states.join('|')}`,
  );
}

void describe('webhooks: delivery and signatures', () => {
  void it('POSTs start and completed events signed per Standard Webhooks (with the secret kiapi generated) and records them on the job', async () => {
    const hooks = await receiver();
    const s = await server({ KIAPI_NET_ALLOW_PRIVATE_URLS: 'true' });
    // KIAPI_WEBHOOK_SECRET unset: kiapi generated one into the data dir, readable by the owner only.
    const secretFile = path.join(s.dataDir, 'webhook-secret');
    const secret = fs.readFileSync(secretFile, 'utf8').trim();
    assert.match(secret, /^whsec_[A-Za-z0-9+/]+={0,2}$/);
    assert.equal(fs.statSync(secretFile).mode & 0o077, 0);

    const res = await sendJson('POST', `${s.url}/v1/image/qwen/generate`, {
      prompt: 'a lighthouse',
      width: 64,
      height: 64,
      steps: 2,
      mode: 'async',
      webhook: hooks.url,
      webhook_events_filter: ['start', 'completed'],
    });
    assert.equal(res.status, 202, res.bytes.toString());
    assert.equal(res.headers.get('warning'), null, 'webhook fields are known fields');
    const jobId = (res.json as { job_id: string }).job_id;
    const job = await waitDelivery(s, jobId, 'completed', ['delivered']);
    await waitDelivery(s, jobId, 'start', ['delivered']);

    assert.equal(hooks.received.length, 2);
    // Two deliveries in flight at once may arrive in either order.
    const bodies = hooks.received.map((r) => verify(secret, r));
    const started = bodies.find((b) => b.type === 'job.started');
    const completed = bodies.find((b) => b.type === 'job.succeeded');
    const completedRequest = hooks.received[bodies.indexOf(completed!)]!;
    assert.equal(started!.data.status, 'running');
    assert.ok(!Number.isNaN(Date.parse(completed!.timestamp)));
    // The body's data is the job as GET shows it (without its own delivery record).
    const final = await getJob(s.url, jobId);
    const { webhook: _, ...withoutWebhook } = final as HookedJob;
    assert.deepEqual(completed!.data, withoutWebhook);
    assert.equal(completedRequest.headers['content-type'], 'application/json');
    // A wrong secret does not verify: the check above means something.
    assert.throws(() => verify(SECRET, completedRequest));

    assert.equal(job.webhook?.url, hooks.url);
    assert.deepEqual(job.webhook?.events, ['start', 'completed']);
    const done = (await getJob(s.url, jobId)) as HookedJob;
    for (const event of ['start', 'completed']) {
      const d = delivery(done, event)!;
      assert.equal(d.state, 'delivered');
      assert.equal(d.attempts, 1);
      assert.equal(d.last_status, 200);
      assert.equal(d.last_error, null);
      assert.equal(d.next_attempt_at, null);
      assert.equal(typeof d.delivered_at, 'number');
    }
    assert.equal(delivery(done, 'completed')!.id, completedRequest.headers['webhook-id']);
    // Jobs without a webhook show no webhook field at all.
    const plain = await getJob(s.url, await submitAsync(s.url));
    assert.equal('webhook' in plain, false);
  });

  void it('retries a receiver that fails twice (500) with the same webhook-id, then records 3 attempts delivered', async () => {
    const hooks = await receiver((i) => (i < 2 ? 500 : 200));
    const s = await server({ KIAPI_NET_ALLOW_PRIVATE_URLS: 'true', KIAPI_WEBHOOK_SECRET: SECRET, KIAPI_WEBHOOK_BACKOFF_S: '0.05' });
    const jobId = await submitAsync(s.url, { webhook: hooks.url });
    const job = await waitDelivery(s, jobId, 'completed', ['delivered', 'failed']);
    const d = delivery(job, 'completed')!;
    assert.equal(d.state, 'delivered');
    assert.equal(d.attempts, 3);
    assert.equal(d.last_status, 200);
    assert.equal(hooks.received.length, 3);
    const ids = new Set(hooks.received.map((r) => r.headers['webhook-id']));
    assert.deepEqual([...ids], [d.id]);
    for (const r of hooks.received) assert.equal(verify(SECRET, r).type, 'job.succeeded');
    // Each attempt is signed anew (its own timestamp); the body is the same every time.
    assert.equal(new Set(hooks.received.map((r) => r.body)).size, 1);
  });

  void it('waits as long as a 503’s Retry-After asks before the next attempt; a 410 Gone is not retried', async () => {
    const hooks = await receiver((i) => (i === 0 ? { status: 503, headers: { 'retry-after': '2' } } : 200));
    const gone = await receiver(() => 410);
    const s = await server({ KIAPI_NET_ALLOW_PRIVATE_URLS: 'true', KIAPI_WEBHOOK_SECRET: SECRET, KIAPI_WEBHOOK_BACKOFF_S: '0.05' });
    const jobId = await submitAsync(s.url, { webhook: hooks.url });
    const goneId = await submitAsync(s.url, { webhook: gone.url });
    const job = await waitDelivery(s, jobId, 'completed', ['delivered', 'failed']);
    const d = delivery(job, 'completed')!;
    assert.equal(d.state, 'delivered');
    assert.equal(d.attempts, 2);
    // Not sooner than asked (a lower bound only: a loaded machine may well be later).
    const [first, second] = hooks.received;
    assert.ok(second!.at - first!.at >= 2000 - 50, `retried ${second!.at - first!.at} ms after a Retry-After of 2 s`);

    const goneJob = await waitDelivery(s, goneId, 'completed', ['delivered', 'failed']);
    const g = delivery(goneJob, 'completed')!;
    assert.equal(g.state, 'failed');
    assert.equal(g.attempts, 1);
    assert.equal(g.last_status, 410);
    assert.match(g.last_error ?? '', /410.*gone/i);
    assert.equal(gone.received.length, 1);
  });

  void it('gives up on a receiver that never answers after KIAPI_WEBHOOK_RETRY_FOR_S; the job is not affected', async () => {
    const hooks = await receiver(() => 'hang');
    const s = await server({
      KIAPI_NET_ALLOW_PRIVATE_URLS: 'true',
      KIAPI_WEBHOOK_SECRET: SECRET,
      KIAPI_WEBHOOK_TIMEOUT_S: '0.2',
      KIAPI_WEBHOOK_BACKOFF_S: '0.05',
      KIAPI_WEBHOOK_RETRY_FOR_S: '3',
    });
    const jobId = await submitAsync(s.url, { webhook: hooks.url });
    const job = await waitDelivery(s, jobId, 'completed', ['failed']);
    assert.equal(job.status, 'succeeded');
    const d = delivery(job, 'completed')!;
    assert.ok(d.attempts >= 2, `attempts: ${d.attempts}`);
    assert.equal(d.attempts, hooks.received.length);
    assert.equal(d.last_status, null);
    assert.match(d.last_error ?? '', /no answer within 0\.2 s \(KIAPI_WEBHOOK_TIMEOUT_S\)/);
    assert.equal(d.next_attempt_at, null);
    // kiapi hung up on every attempt (the receiver may see the last one close a moment later).
    await pollUntil(async () => hooks.received.every((r) => r.abandoned), Boolean, 'every attempt to be abandoned by kiapi');
  });

  void it('uses KIAPI_WEBHOOK_URL for jobs that name none, the OpenAI routes’ included (an operator URL needs no allow setting); webhook: null opts out', async () => {
    const hooks = await receiver();
    const s = await server({ KIAPI_WEBHOOK_URL: hooks.url, KIAPI_WEBHOOK_SECRET: SECRET });
    const withDefault = await submitAsync(s.url);
    await waitDelivery(s, withDefault, 'completed', ['delivered']);
    const optedOut = await submitAsync(s.url, { webhook: null });
    const job = await waitFinished(s.url, optedOut);
    assert.equal('webhook' in job, false);
    assert.deepEqual(
      hooks.received.map((r) => verify(SECRET, r).data.id),
      [withDefault],
    );
    // Jobs of the OpenAI routes get the server's webhook too.
    const openai = await sendJson('POST', `${s.url}/v1/images/generations`, { model: 'qwen-image', prompt: 'a kite', size: '64x64', quality: 'low' });
    assert.equal(openai.status, 200, openai.bytes.toString());
    await pollUntil(async () => hooks.received.length, (n) => n === 2, 'the OpenAI job’s webhook');
    const data = verify(SECRET, hooks.received[1]!).data;
    assert.notEqual(data.id, withDefault);
    assert.equal(data.status, 'succeeded');
  });
});

void describe('webhooks: refused requests', () => {
  void it('refuses loopback receivers unless KIAPI_NET_ALLOW_PRIVATE_URLS, bad URLs and events; nothing is recorded', async () => {
    const hooks = await receiver();
    const s = await server({ KIAPI_WEBHOOK_SECRET: SECRET });
    const post = (extra: Record<string, unknown>) =>
      sendJson<{ detail: unknown }>('POST', `${s.url}/v1/image/qwen/generate`, { prompt: 'x', width: 64, height: 64, steps: 1, mode: 'async', ...extra });

    const privateUrl = await post({ webhook: hooks.url });
    assert.equal(privateUrl.status, 400);
    assert.match(String(privateUrl.json.detail), /webhook url host '127\.0\.0\.1' resolves to non-public address 127\.0\.0\.1; KIAPI_NET_ALLOW_PRIVATE_URLS=true/);

    const scheme = await post({ webhook: 'ftp://example.com/hook' });
    assert.equal(scheme.status, 422);
    assert.match(JSON.stringify(scheme.json.detail), /webhook url must be an absolute http:\/\/ or https:\/\/ URL/);

    const event = await post({ webhook: 'https://example.com/hook', webhook_events_filter: ['finished'] });
    assert.equal(event.status, 422);
    assert.match(JSON.stringify(event.json.detail), /webhook_events_filter/);

    const empty = await post({ webhook: 'https://example.com/hook', webhook_events_filter: [] });
    assert.equal(empty.status, 422);
    assert.match(JSON.stringify(empty.json.detail), /webhook_events_filter/);

    const noUrl = await post({ webhook_events_filter: ['completed'] });
    assert.equal(noUrl.status, 422);
    assert.match(JSON.stringify(noUrl.json.detail), /webhook_events_filter needs a webhook URL/);

    const jobs = await getJson<{ data: unknown[] }>(`${s.url}/v1/jobs`);
    assert.deepEqual(jobs.json.data, []);
    assert.equal(hooks.received.length, 0);
  });

  void it('stops start-up on a malformed KIAPI_WEBHOOK_SECRET or KIAPI_WEBHOOK_URL, naming the setting', async () => {
    await assert.rejects(startServer({ KIAPI_WEBHOOK_SECRET: 'hunter2' }), /KIAPI_WEBHOOK_SECRET: expected whsec_/);
    await assert.rejects(startServer({ KIAPI_WEBHOOK_URL: 'not a url' }), /KIAPI_WEBHOOK_URL="not a url": expected an absolute http/);
  });
});

void describe('webhooks: the queue, shutdown and crashes', () => {
  void it('a hanging receiver holds no job: the next job runs meanwhile; shutdown aborts the attempt and the next start delivers it', async () => {
    const dir = dataDir();
    const hooks = await receiver(() => 'hang');
    const env = { KIAPI_NET_ALLOW_PRIVATE_URLS: 'true', KIAPI_WEBHOOK_SECRET: SECRET, KIAPI_WEBHOOK_TIMEOUT_S: '300' };
    const s = await startServer(env, { dataDir: dir });
    let closed = false;
    cleanups.push(() => (closed ? undefined : s.close()));
    const first = await submitAsync(s.url, { webhook: hooks.url });
    await pollUntil(async () => hooks.holding, (n) => n === 1, 'the receiver to hold the first delivery');

    const second = await sendJson<JobJson>('POST', `${s.url}/v1/image/qwen/generate`, { prompt: 'next', width: 64, height: 64, steps: 2 }, { accept: 'application/json' });
    assert.equal(second.status, 200);
    assert.equal(second.json.status, 'succeeded');
    assert.equal(hooks.holding, 1, 'the first delivery is still in flight');
    assert.equal(delivery((await getJob(s.url, first)) as HookedJob, 'completed')?.state, 'pending');

    await s.close({ keepData: true });
    closed = true;
    await pollUntil(async () => hooks.received[0]!.abandoned, Boolean, 'the in-flight attempt to be aborted');

    // Not counted as the receiver's failure: still pending, no attempt recorded; delivered at the next start.
    hooks.answer = () => 204;
    const again = await server(env, dir);
    const job = await waitDelivery(again, first, 'completed', ['delivered']);
    const d = delivery(job, 'completed')!;
    assert.equal(d.attempts, 1);
    assert.equal(d.last_status, 204);
    assert.equal(hooks.received.length, 2);
    assert.equal(hooks.received[1]!.headers['webhook-id'], hooks.received[0]!.headers['webhook-id']);
    assert.equal(hooks.received[1]!.body, hooks.received[0]!.body);
  });

  void it('after a crash (SIGKILL) a finished job is delivered again with the same id, and a job the crash interrupted reports job.failed', async () => {
    const dir = dataDir();
    const hooks = await receiver(() => 'hang');
    const env = {
      KIAPI_DATA_DIR: dir,
      KIAPI_NET_ALLOW_PRIVATE_URLS: 'true',
      KIAPI_WEBHOOK_SECRET: SECRET,
      KIAPI_WEBHOOK_TIMEOUT_S: '300',
      KIAPI_PREVIEW_STEP_MS: '500',
    };
    const first = await spawnServer(env);
    cleanups.push(() => void first.child.kill('SIGKILL'));
    const finished = await submitAsync(first.url, { webhook: hooks.url, steps: 1 });
    await pollUntil(async () => hooks.holding, (n) => n === 1, 'the receiver to hold the finished job’s delivery');
    const interrupted = await submitAsync(first.url, { webhook: hooks.url, steps: 100 });
    await pollUntil(() => getJob(first.url, interrupted), (j) => j.status === 'running', 'the long job to run');
    await stopWithin(first, 'SIGKILL');

    hooks.answer = () => 200;
    const second = await spawnServer(env);
    cleanups.push(async () => void (await stopWithin(second, 'SIGTERM')));
    const done = await waitDelivery(second, finished, 'completed', ['delivered']);
    const failed = await waitDelivery(second, interrupted, 'completed', ['delivered']);
    assert.equal(failed.status, 'failed');

    const byJob = (id: string) => hooks.received.filter((r) => (JSON.parse(r.body) as { data: { id: string } }).data.id === id);
    const resent = byJob(finished);
    assert.equal(resent.length, 2, 'at least once: the attempt the crash cut off is made again');
    assert.equal(resent[0]!.headers['webhook-id'], resent[1]!.headers['webhook-id']);
    assert.equal(resent[1]!.headers['webhook-id'], delivery(done, 'completed')!.id);
    const interruptedBodies = byJob(interrupted).map((r) => verify(SECRET, r));
    assert.equal(interruptedBodies.length, 1);
    assert.equal(interruptedBodies[0]!.type, 'job.failed');
    assert.match(String(interruptedBodies[0]!.data.error), /stopped while this job was running/);
  });
});

/** The fenced block between the README's `readme-test: <name>` markers. */
function readmeBlock(name: string): string {
  const readme = fs.readFileSync(path.join(PACKAGE_ROOT, 'README.md'), 'utf8');
  const start = readme.indexOf(`<!-- readme-test: ${name} start -->`);
  const end = readme.indexOf(`<!-- readme-test: ${name} end -->`);
  assert.ok(start >= 0 && end > start, `README.md has the ${name} markers`);
  const block = /```[a-z]*\n([\s\S]*?)^```$/m.exec(readme.slice(start, end));
  assert.ok(block, `a code block between the ${name} markers`);
  return block[1]!;
}

void describe('webhooks: the README snippets', () => {
  void it('the Node receiver verifies and logs kiapi’s deliveries, and refuses a forged one', async () => {
    const port = await freePort();
    // Only the port and where `standardwebhooks` is found change (the script runs from a temp dir).
    const lib = pathToFileURL(createRequire(import.meta.url).resolve('standardwebhooks')).href;
    const script = readmeBlock('webhook-receiver-js').replace("from 'standardwebhooks'", `from '${lib}'`).replace('listen(9000,', `listen(${port},`);
    const file = path.join(dataDir(), 'receiver.mjs');
    fs.writeFileSync(file, script);
    const child = spawn(process.execPath, [file], { env: { ...process.env, KIAPI_WEBHOOK_SECRET: SECRET }, stdio: ['ignore', 'pipe', 'pipe'] });
    cleanups.push(() => void child.kill());
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    await pollUntil(async () => fetch(`http://127.0.0.1:${port}/`, { method: 'POST', body: '{}' }).then((r) => r.status, () => 0), (st) => st === 401, 'the README receiver to listen and refuse an unsigned POST');

    const s = await server({ KIAPI_WEBHOOK_URL: `http://127.0.0.1:${port}/`, KIAPI_WEBHOOK_SECRET: SECRET });
    const jobId = await submitAsync(s.url);
    const job = await waitDelivery(s, jobId, 'completed', ['delivered', 'failed']);
    const d = delivery(job, 'completed')!;
    assert.equal(d.state, 'delivered', JSON.stringify(d));
    assert.equal(d.last_status, 204);
    await pollUntil(async () => out, (o) => o.includes(`job.succeeded ${jobId} ${String(job.result?.file_id)}`), 'the receiver to log the delivery');
  });

  void it('the Python verifier accepts kiapi’s signature and refuses a changed body', async () => {
    const hooks = await receiver();
    const s = await server({ KIAPI_NET_ALLOW_PRIVATE_URLS: 'true', KIAPI_WEBHOOK_SECRET: SECRET });
    await waitDelivery(s, await submitAsync(s.url, { webhook: hooks.url }), 'completed', ['delivered']);
    const r = hooks.received[0]!;
    const driver = `${readmeBlock('webhook-verify-py')}
import json, sys
case = json.load(sys.stdin)
body = case["body"].encode()
print(verify(case["secret"], case["headers"], body), verify(case["secret"], case["headers"], body.replace(b"succeeded", b"failed")))
`;
    const run = spawnSync('python3', ['-c', driver], { input: JSON.stringify({ secret: SECRET, headers: r.headers, body: r.body }), encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
    assert.equal(run.stdout.trim(), 'True False');
  });
});
