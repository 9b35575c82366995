/**
 * Idempotency-Key and webhooks through two real kiapi nodes (preview engine) sharing one real
 * PostgreSQL and S3 (S3Proxy): the same key sent to both nodes at once makes one job, and its webhook events reach
 * a real receiver once each, whichever node ran the job and whichever dispatcher claimed them.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import pg from 'pg';
import { generateBody, getJob, pollUntil, sendJson } from '../support/api.js';
import { startServer, type TestServer } from '../support/server.js';
import { startReceiver, type Receiver } from '../support/webhook-receiver.js';
import { startPostgres, startS3, type Postgres, type S3Server } from './services.js';

let db: Postgres;
let s3: S3Server;
let pool: pg.Pool;
let receiver: Receiver;
const nodes: TestServer[] = [];

before(async () => {
  db = await startPostgres();
  s3 = await startS3();
  // The AWS SDK reads its credentials from the process environment (its default chain).
  process.env.AWS_ACCESS_KEY_ID = s3.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = s3.secretAccessKey;
  pool = new pg.Pool({ connectionString: db.url, max: 2 });
  pool.on('error', () => undefined);
  receiver = await startReceiver();
  for (const id of ['node-a', 'node-b']) {
    nodes.push(
      await startServer({
        KIAPI_CLUSTER_DATABASE_URL: db.url,
        KIAPI_CLUSTER_S3_BUCKET: 'kiapi-test',
        KIAPI_CLUSTER_S3_ENDPOINT: s3.endpoint,
        KIAPI_CLUSTER_NODE_ID: id,
        KIAPI_NET_ALLOW_PRIVATE_URLS: 'true',
      }),
    );
  }
});

after(async () => {
  for (const n of nodes) await n.close();
  await receiver?.close();
  await pool?.end();
  await db?.stop();
  await s3?.stop();
});

void describe('two cluster nodes', () => {
  void it('one Idempotency-Key sent to both nodes at once makes one job; its webhook is delivered once', async () => {
    const [a, b] = nodes as [TestServer, TestServer];
    const body = generateBody({ mode: 'async', seed: 5, webhook: receiver.url, webhook_events_filter: ['start', 'completed'] });
    const headers = { 'idempotency-key': 'cluster-key-1' };
    const answers = await Promise.all([
      sendJson<{ job_id: string }>('POST', `${a.url}/v1/image/qwen/generate`, body, headers),
      sendJson<{ job_id: string }>('POST', `${b.url}/v1/image/qwen/generate`, body, headers),
    ]);
    assert.deepEqual(answers.map((r) => r.status), [202, 202]);
    const jobId = answers[0].json.job_id;
    assert.equal(answers[1].json.job_id, jobId);
    assert.equal(answers.filter((r) => r.headers.get('idempotent-replayed') === 'true').length, 1);
    assert.equal(Number((await pool.query<{ n: string }>('SELECT COUNT(*) AS n FROM jobs')).rows[0]!.n), 1);
    // Another body with the key: refused on either node.
    const other = await sendJson('POST', `${b.url}/v1/image/qwen/generate`, { ...body, seed: 6 }, headers);
    assert.equal(other.status, 422);

    const job = await pollUntil(
      () => getJob(b.url, jobId),
      (j) => (j as { webhook?: { deliveries: { state: string }[] } }).webhook?.deliveries.filter((d) => d.state === 'delivered').length === 2,
      'both webhook events delivered',
    );
    assert.equal(job.status, 'succeeded');
    for (const n of nodes) await n.ctx.webhooks.close();
    const types = receiver.received.map((r) => (JSON.parse(r.body) as { type: string }).type);
    assert.deepEqual(types.sort(), ['job.started', 'job.succeeded']);
  });
});
