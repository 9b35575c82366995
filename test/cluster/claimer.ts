/**
 * A stand-in node for the smoke test, run as its own process so the test can kill -9 it:
 * `node claimer.js <db url> <node id> <queues,…> <hold|complete>`. It renews its node row every
 * 250 ms, waits for a job (woken by the enqueue's NOTIFY, with a slow poll as the fallback),
 * claims one, prints `{"claimed":…}` as a JSON line, then either holds it forever (a long job on
 * a node about to die) or completes it and prints `{"completed":…}` before exiting.
 */
import PgBoss from 'pg-boss';
import pg from 'pg';
import { WAKE_CHANNEL, claim, complete, heartbeat } from './proto.js';

const [url, nodeId, queueList, mode] = process.argv.slice(2);
if (!url || !nodeId || !queueList || (mode !== 'hold' && mode !== 'complete')) {
  process.stderr.write('usage: claimer.js <db url> <node id> <queues,…> <hold|complete>\n');
  process.exit(2);
}
const queues = queueList.split(',');

const pool = new pg.Pool({ connectionString: url, max: 4 });
// No maintenance here: the test's own instance supervises (pg-boss elects one with an advisory lock anyway).
const boss = new PgBoss({ connectionString: url, supervise: false, schedule: false, migrate: false });
boss.on('error', (err: Error) => process.stderr.write(`pg-boss: ${err.message}\n`));
await boss.start();

await heartbeat(pool, nodeId);
const beat = setInterval(() => void heartbeat(pool, nodeId).catch(() => undefined), 250);

const listener = new pg.Client({ connectionString: url });
await listener.connect();
let wake: () => void = () => undefined;
listener.on('notification', () => wake());
await listener.query(`LISTEN ${WAKE_CHANNEL}`);

for (;;) {
  const job = await claim(pool, boss, nodeId, queues);
  if (job) {
    process.stdout.write(`${JSON.stringify({ claimed: job })}\n`);
    if (mode === 'hold') break;
    const ok = await complete(pool, boss, nodeId, job);
    process.stdout.write(`${JSON.stringify({ completed: job, ok })}\n`);
    clearInterval(beat);
    await listener.end();
    await boss.stop({ graceful: false, wait: true, close: true });
    await pool.end();
    process.exit(0);
  }
  await new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, 1000);
    wake = () => {
      clearTimeout(timer);
      resolve();
    };
  });
}
// `hold`: keeps the job and its heartbeat until killed.
