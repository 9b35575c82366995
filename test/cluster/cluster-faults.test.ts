/**
 * Faults in a three-node cluster (real PostgreSQL, S3Proxy and three kiapi processes): a node
 * killed with SIGKILL mid-job, PostgreSQL and S3Proxy killed and started again, a killed node
 * restarted under its id. Jobs are never stuck and never lost, an attempt runs on one node at a
 * time, and what cannot be served answers 503 naming the shared service, never 500.
 *
 * KIAPI_CLUSTER_LEASE_S is 2: a silent node's job is handed on within seconds. n0 records its
 * submissions with KIAPI_CLUSTER_MAX_ATTEMPTS=1, the others with the default (2).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { getJob, listJobs, pngBytes, pollUntil, sendJson, submitAsync, uploadFile, type JobJson } from '../support/api.js';
import { TERMINAL, type SseEvent } from '../support/sse.js';
import { clusterView, dumpLogsOnFailure, openStream, startCluster, whoRuns, type Cluster, type ClusterNode } from './cluster.js';

const STEP_MS = 50;
const LONG_MS = 90_000;
const base = { KIAPI_PREVIEW_STEP_MS: String(STEP_MS), KIAPI_QWEN_MAX_STEPS: '1000', KIAPI_CLUSTER_LEASE_S: '2' };

let cluster: Cluster | undefined;
let n0: ClusterNode;
let n1: ClusterNode;
/** Every job the tests submitted, for the check that no attempt ever overlapped another. */
const submitted: string[] = [];
/** The terminal event id of a job finished before the others: the all-jobs replay starts after it. */
let anchor = '';

before(async () => {
  cluster = await startCluster({ nodes: 3, env: [{ ...base, KIAPI_CLUSTER_MAX_ATTEMPTS: '1' }, base, base] });
  [n0, n1] = cluster.nodes as [ClusterNode, ClusterNode, ClusterNode];
  const first = await submitAsync(n1.url);
  await waitEnded(n1, first);
  const stream = await openStream(`${n1.url}/v1/jobs/${first}/events`);
  const events = await stream.ended;
  anchor = events.at(-1)!.id;
});
after(async () => {
  await cluster?.stop();
});
dumpLogsOnFailure(() => cluster);

async function submit(on: ClusterNode, steps: number): Promise<string> {
  const id = await submitAsync(on.url, { steps });
  submitted.push(id);
  return id;
}

function waitEnded(on: ClusterNode, jobId: string): Promise<JobJson> {
  return pollUntil(() => getJob(on.url, jobId), (j) => TERMINAL.has(j.status), `job ${jobId} to end`, LONG_MS);
}

function someNodeBut(id: string): ClusterNode {
  return cluster!.nodes.find((n) => n.id !== id && n.pid !== null)!;
}

void describe('a node killed mid-job', () => {
  void it('its job is run again on another node and succeeds; the node, restarted under its id, rejoins and takes work', async () => {
    const jobId = await submit(n1, 60);
    const victim = cluster!.node(await whoRuns(cluster!, jobId, LONG_MS));
    await victim.kill9();
    const witness = someNodeBut(victim.id);
    const done = await waitEnded(witness, jobId);
    assert.equal(done.status, 'succeeded', JSON.stringify(done));

    await victim.restart();
    await pollUntil(
      () => clusterView(witness),
      (v) => v.nodes.some((n) => n.node_id === victim.id && n.live),
      `${victim.id} to be live again`,
      LONG_MS,
    );
    // Three slow jobs at once run on three nodes: the restarted one takes one.
    const jobs = [await submit(n0, 40), await submit(n1, 40), await submit(n1, 40)];
    const runners = await Promise.all(jobs.map((id) => whoRuns(cluster!, id, LONG_MS)));
    assert.deepEqual([...runners].sort(), ['n0', 'n1', 'n2']);
    for (const id of jobs) assert.equal((await waitEnded(n1, id)).status, 'succeeded');
  });

  void it('with KIAPI_CLUSTER_MAX_ATTEMPTS=1 the job fails with a reason naming the node', async () => {
    const jobId = await submit(n0, 60);
    const victim = cluster!.node(await whoRuns(cluster!, jobId, LONG_MS));
    await victim.kill9();
    try {
      const done = await waitEnded(someNodeBut(victim.id), jobId);
      assert.equal(done.status, 'failed', JSON.stringify(done));
      assert.match(done.error ?? '', new RegExp(`node ${victim.id} stopped answering`));
      assert.match(done.error ?? '', /no attempts left/);
    } finally {
      await victim.restart();
    }
  });
});

void describe('attempts never overlap', () => {
  // Before the database is killed: job events live in an UNLOGGED table, which PostgreSQL empties
  // when it recovers from a crash, so the replay below covers the jobs of the tests above.
  void it('no job ever had two `started` events without its hand-back between them', async () => {
    assert.ok(submitted.length > 0);
    for (const id of submitted) await waitEnded(n1, id);
    const listed = new Set((await listJobs(n1.url)).map((j) => j.id));
    // Every event since the anchor, replayed from the shared table on one node.
    const stream = await openStream(`${n1.url}/v1/events`, { 'last-event-id': anchor });
    let events: SseEvent[];
    try {
      events = await stream.until((e) => submitted.every((id) => e.some((x) => TERMINAL.has(x.event) && x.data.id === id)), LONG_MS);
    } finally {
      stream.close();
    }
    for (const id of submitted) {
      assert.ok(listed.has(id), `${id} is still listed`);
      const mine = events.filter((e) => (e.data.job_id ?? e.data.id) === id && ['queued', 'started', ...TERMINAL].includes(e.event)).map((e) => e.event);
      let running = false;
      for (const e of mine) {
        if (e === 'started') {
          assert.ok(!running, `${id}: a second start while an attempt ran: ${mine.join(',')}`);
          running = true;
        } else {
          running = false;
        }
      }
      assert.equal(mine.filter((e) => TERMINAL.has(e)).length, 1, `${id}: one end: ${mine.join(',')}`);
    }
  });
});

void describe('the shared database killed', () => {
  void it('requests answer 503 naming the shared database; after its restart everything works and no accepted job is lost', async () => {
    const { pg } = cluster!.services;
    const jobs: string[] = [];
    for (const on of [...cluster!.nodes, n0, n1]) jobs.push(await submit(on, 30));
    await pollUntil(() => getJob(n0.url, jobs[0]!), (j) => j.status !== 'queued', `job ${jobs[0]} to start`, LONG_MS);
    await pg.kill();
    try {
      for (const node of cluster!.nodes) {
        const list = await fetch(`${node.url}/v1/jobs`);
        const body = (await list.json()) as { detail?: string };
        assert.equal(list.status, 503, `${node.id} GET /v1/jobs: ${JSON.stringify(body)}`);
        assert.match(String(body.detail), /shared database/);
        const one = await fetch(`${node.url}/v1/jobs/${jobs[0]}`);
        assert.equal(one.status, 503, `${node.id} GET /v1/jobs/{id}`);
        const post = await sendJson<{ detail?: string }>('POST', `${node.url}/v1/image/qwen/generate`, { prompt: 'x', width: 64, height: 64, steps: 2, mode: 'async' });
        assert.equal(post.status, 503, `${node.id} POST: ${post.bytes.toString()}`);
        assert.match(String(post.json.detail), /shared database/);
      }
    } finally {
      await pg.restart();
    }
    for (const node of cluster!.nodes) {
      await pollUntil(async () => (await fetch(`${node.url}/v1/jobs`)).status, (s) => s === 200, `${node.id} to answer again`, LONG_MS);
    }
    for (const id of jobs) {
      const done = await waitEnded(n1, id);
      assert.equal(done.status, 'succeeded', JSON.stringify(done));
    }
    const after = await submit(cluster!.nodes[2]!, 2);
    assert.equal((await waitEnded(n0, after)).status, 'succeeded');
  });
});

void describe('the object store killed', () => {
  void it('an upload answers 503 naming the object store; after its restart uploads work again', async () => {
    const { s3 } = cluster!.services;
    const png = await pngBytes();
    await s3.kill();
    try {
      const res = await uploadFile(n0.url, { filename: 'a.png', contentType: 'image/png', data: png });
      assert.equal(res.status, 503, res.bytes.toString());
      assert.match(String((res.json as unknown as { detail: string }).detail), /object store/);
    } finally {
      await s3.restart();
    }
    const ok = await pollUntil(
      () => uploadFile(n0.url, { filename: 'a.png', contentType: 'image/png', data: png }),
      (r) => r.status !== 503,
      'an upload to be accepted again',
      LONG_MS,
    );
    assert.equal(ok.status, 200, ok.bytes.toString());
    const dl = await fetch(`${n1.url}/v1/files/${ok.json.file_id}/download`);
    assert.equal(dl.status, 200);
    assert.deepEqual(Buffer.from(await dl.arrayBuffer()), png);
  });
});

void describe('a node stopped gracefully', () => {
  void it('exits 0 and leaves the cluster view at once; the others keep serving; restarted, it is live again', async () => {
    const node = cluster!.nodes[2]!;
    assert.equal(await node.stop(), 0);
    const view = await clusterView(n0);
    assert.deepEqual(
      view.nodes.map((n) => n.node_id),
      ['n0', 'n1'],
      'a node that shut down removed itself from the cluster view',
    );
    const jobId = await submit(n1, 2);
    assert.equal((await waitEnded(n0, jobId)).status, 'succeeded');
    await node.restart();
    await pollUntil(() => clusterView(n0), (v) => v.nodes.some((n) => n.node_id === node.id && n.live), `${node.id} to be live again`, LONG_MS);
  });
});
