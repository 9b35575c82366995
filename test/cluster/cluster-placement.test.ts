/**
 * Model-aware placement in a three-node cluster (real PostgreSQL, S3Proxy and three kiapi
 * processes, the preview engine): a job goes to a node that offers its model
 * (KIAPI_CLUSTER_MODELS), a model no node offers is refused at submission with 503, and a node
 * that holds the model warm (the preview engine reports the model of its last run as warm) gets
 * the job when it is idle.
 *
 * Which node runs a job is read from the cluster view of /health (`running_job`) while the job
 * runs, so the jobs here last a second or so (steps × KIAPI_PREVIEW_STEP_MS).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { dataUrl, getJob, listFiles, pngBytes, pollUntil, sendJson, submitAsync, waitFinished } from '../support/api.js';
import { clusterView, dumpLogsOnFailure, startCluster, whoRuns, type Cluster, type ClusterNode } from './cluster.js';

const STEP_MS = 50;
const LONG_MS = 60_000;
/** Steps of a job that runs long enough to be seen running in the cluster view. */
const SEEN_STEPS = 20;

let cluster: Cluster | undefined;
let n0: ClusterNode;
let n2: ClusterNode;

before(async () => {
  cluster = await startCluster({
    nodes: 3,
    env: [
      { KIAPI_PREVIEW_STEP_MS: String(STEP_MS), KIAPI_CLUSTER_MODELS: 'qwen/image' },
      { KIAPI_PREVIEW_STEP_MS: String(STEP_MS), KIAPI_CLUSTER_MODELS: 'qwen/image' },
      { KIAPI_PREVIEW_STEP_MS: String(STEP_MS), KIAPI_CLUSTER_MODELS: 'qwen/image,ideogram4/fp8' },
    ],
  });
  [n0, , n2] = cluster.nodes as [ClusterNode, ClusterNode, ClusterNode];
});
after(async () => {
  await cluster?.stop();
});
dumpLogsOnFailure(() => cluster);

void describe('placement by the models a node offers', () => {
  void it('the cluster view shows what each node offers', async () => {
    const view = await clusterView(n0);
    const capable = Object.fromEntries(view.nodes.map((n) => [n.node_id, [...n.capable].sort()]));
    assert.deepEqual(capable, { n0: ['qwen/image'], n1: ['qwen/image'], n2: ['ideogram4/fp8', 'qwen/image'] });
  });

  void it('a model only n2 offers, submitted on n0, runs on n2', async () => {
    const res = await sendJson<{ job_id: string }>('POST', `${n0.url}/v1/image/ideogram4/generate`, {
      prompt: 'a shop sign that reads OPEN',
      width: 256,
      height: 256,
      mode: 'async',
    });
    assert.equal(res.status, 202, res.bytes.toString());
    const jobId = res.json.job_id;
    assert.equal(await whoRuns(cluster!, jobId, LONG_MS), 'n2');
    const done = await waitFinished(n0.url, jobId);
    assert.equal(done.status, 'succeeded', JSON.stringify(done));
  });

  void it('a model no node offers is refused at submission with 503 naming it; nothing is stored', async () => {
    const filesBefore = await listFiles(n0.url);
    const res = await sendJson<{ detail: string }>('POST', `${n0.url}/v1/image/qwen/edit`, {
      prompt: 'make it blue',
      images: [{ type: 'data_url', data_url: dataUrl(await pngBytes()) }],
      width: 64,
      height: 64,
      steps: 2,
      mode: 'async',
    });
    assert.equal(res.status, 503, res.bytes.toString());
    assert.match(res.json.detail, /qwen\/edit-2509/);
    assert.match(res.json.detail, /no node/);
    assert.deepEqual(await listFiles(n0.url), filesBefore, 'the input of a refused request is not kept');
    for (const node of cluster!.nodes) {
      const jobs = (await (await fetch(`${node.url}/v1/jobs?type=qwen-edit`)).json()) as { data: unknown[] };
      assert.deepEqual(jobs.data, [], `${node.id} has no qwen-edit job`);
    }
  });
});

void describe('warm placement', () => {
  void it('after a node ran a model, new jobs of that model go to it while it is idle, whichever node they are submitted on', async () => {
    const first = await submitAsync(n0.url, { steps: SEEN_STEPS, prompt: 'warm-up' });
    const warmNode = await whoRuns(cluster!, first, LONG_MS);
    assert.equal((await waitFinished(n0.url, first)).status, 'succeeded');
    // The node advertises the model warm once its job ended (and it is idle again).
    await pollUntil(
      () => clusterView(n0),
      (v) => v.nodes.some((n) => n.node_id === warmNode && !n.busy && n.warm.includes('qwen/image')),
      `${warmNode} to show qwen/image warm and idle`,
      LONG_MS,
    );
    const others = (await clusterView(n0)).nodes.filter((n) => n.node_id !== warmNode);
    assert.ok(others.every((n) => !n.warm.includes('qwen/image')), `only ${warmNode} holds qwen/image warm: ${JSON.stringify(others)}`);

    for (const on of cluster!.nodes) {
      const jobId = await submitAsync(on.url, { steps: SEEN_STEPS, prompt: `warm job submitted on ${on.id}` });
      assert.equal(await whoRuns(cluster!, jobId, LONG_MS), warmNode, `submitted on ${on.id}`);
      assert.equal((await waitFinished(on.url, jobId)).status, 'succeeded');
      await pollUntil(() => clusterView(on), (v) => v.nodes.some((n) => n.node_id === warmNode && !n.busy), `${warmNode} to be idle again`, LONG_MS);
    }
    assert.equal((await getJob(n2.url, first)).status, 'succeeded');
  });
});
