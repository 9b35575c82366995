/**
 * The cluster's event transport: job events written to `job_events` and announced with
 * NOTIFY `kiapi_events` (both done by the table's triggers, see schema.ts), and heard by every
 * node on one dedicated LISTEN connection, which then hands them to this node's watchers.
 *
 * What a subscriber can rely on:
 * - every event of the cluster, each once, in id order, with its global id (the text of a
 *   bigint that only grows): events commit in id order (the insert trigger serializes them), and
 *   NOTIFY is delivered in commit order;
 * - nothing lost across a dropped LISTEN connection while the rows are kept: after reconnecting
 *   the bus reads the rows with ids above the last one it delivered, before any newer
 *   notification;
 * - a payload too large for NOTIFY (8000 bytes) arrives as its id alone and is read from the
 *   table, still in order.
 *
 * Generic `notify` / `listen` on other channels (cancel requests, wake-ups) share the LISTEN
 * connection. Those carry no rows, so one sent while the connection was down is lost: listeners
 * re-check what they wait for in `onReconnect`.
 */
import pg from 'pg';
import type { Logger } from 'pino';
import { JOB_EVENT_COLUMNS } from './schema.js';
import { unavailable } from './pg.js';

export const EVENTS_CHANNEL = 'kiapi_events';
/** Events that end a job: `prune` removes a job's events some time after one of these. */
const TERMINAL = ['succeeded', 'failed', 'canceled'];

export interface ClusterEventInput {
  jobId: string;
  jobType: string;
  status: string;
  event: string;
  data: Record<string, unknown>;
}

export interface ClusterEvent extends ClusterEventInput {
  /** The global event id: decimal digits, growing; comparable as a BigInt. */
  id: string;
}

export interface PgEventBusOptions {
  /** The database URL, for the LISTEN connection (a pool connection cannot stay LISTENing). */
  url: string;
  log: Logger;
  /** First and longest wait between reconnection attempts (default 100 ms, 5 s). */
  reconnectMinMs?: number;
  reconnectMaxMs?: number;
  /** How often the LISTEN connection is checked with a query (default 5 s). */
  pingMs?: number;
}

/** A job_events row as JOB_EVENT_COLUMNS selects it. */
export interface EventRow {
  id: string;
  job_id: string;
  job_type: string;
  status: string;
  event: string;
  data: string;
}

type Queryable = Pick<pg.ClientBase, 'query'>;

/**
 * Writes one event; its NOTIFY goes out when the surrounding transaction commits. Within a
 * larger transaction, this must be the last statement before COMMIT (the insert holds the
 * cluster-wide event-order lock until then). Answers the event's id.
 */
export async function insertEvent(db: Queryable, e: ClusterEventInput): Promise<string> {
  const res = await db.query<{ id: string }>(
    'INSERT INTO job_events (job_id, job_type, status, event, data) VALUES ($1, $2, $3, $4, $5) RETURNING id::text AS id',
    [e.jobId, e.jobType, e.status, e.event, JSON.stringify(e.data)],
  );
  return res.rows[0]!.id;
}

/** NOTIFY on `channel`; inside a transaction it is delivered at commit, never on rollback. */
export async function notify(db: Queryable, channel: string, payload: string): Promise<void> {
  await db.query('SELECT pg_notify($1, $2)', [channel, payload]);
}

export class PgEventBus {
  private client: pg.Client | null = null;
  private closing = false;
  private started = false;
  /** Id of the last event delivered to subscribers (null until the first connection). */
  private lastSeen: bigint | null = null;
  /** Incoming events are handled one after another, so reads of large ones keep the order. */
  private chain: Promise<void> = Promise.resolve();
  /** Publishes of this process are written one after another, so their ids keep their order. */
  private tail: Promise<unknown> = Promise.resolve();
  /** A large event could not be read: the next handled event first reads what was missed. */
  private gap = false;
  private readonly subscribers = new Set<(e: ClusterEvent) => void>();
  private readonly channels = new Map<string, Set<(payload: string) => void>>();
  private readonly reconnectListeners = new Set<() => void>();
  private reconnectTimer: NodeJS.Timeout | null = null;
  /** Counts for diagnostics (/health, tests): connections re-made, events read back after a loss. */
  readonly stats = { reconnects: 0, caughtUp: 0 };
  private pingTimer: NodeJS.Timeout | null = null;
  private backoffMs: number;

  constructor(
    private readonly pool: pg.Pool,
    private readonly opts: PgEventBusOptions,
  ) {
    this.backoffMs = opts.reconnectMinMs ?? 100;
  }

  /** Opens the LISTEN connection; events published from now on reach the subscribers. */
  async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    try {
      await this.connect();
    } catch (err) {
      this.started = false;
      throw unavailable(err, 'listening for job events');
    }
    this.pingTimer = setInterval(() => void this.ping(), this.opts.pingMs ?? 5000);
    this.pingTimer.unref();
  }

  /** Whether the LISTEN connection is up now. */
  get connected(): boolean {
    return this.client !== null;
  }

  /**
   * Writes the event and announces it to every node (this one included: subscribers hear their
   * own node's events through the database like any other, so all nodes see one order).
   * Publishes of this process take effect in call order. Answers the event's global id.
   */
  publish(e: ClusterEventInput): Promise<string> {
    const written = this.tail.then(() => insertEvent(this.pool, e));
    // A failed write does not stop the ones after it.
    this.tail = written.catch(() => undefined);
    return written.catch((err: unknown) => {
      throw unavailable(err, 'publishing a job event');
    });
  }

  /** `cb` hears every event of the cluster from now on, in id order. Answers the unsubscribe. */
  subscribe(cb: (e: ClusterEvent) => void): () => void {
    this.subscribers.add(cb);
    return () => this.subscribers.delete(cb);
  }

  /**
   * The events after `after` (of one job when `jobId` is given), oldest first, for a watcher
   * reconnecting with Last-Event-ID; at most `limit`. Null when `after` is not an event id this
   * table still holds (pruned, of another job, or no id of ours at all): the caller answers from
   * the job's record instead, as a single node does for an id it no longer remembers.
   */
  async replay(after: string, jobId?: string, limit = 5000): Promise<ClusterEvent[] | null> {
    if (!/^[0-9]{1,19}$/.test(after)) return null;
    try {
      const known = await this.pool.query('SELECT 1 FROM job_events WHERE id = $1 AND ($2::text IS NULL OR job_id = $2)', [after, jobId ?? null]);
      if (known.rowCount === 0) return null;
      const rows = await this.pool.query<EventRow>(
        `SELECT ${JOB_EVENT_COLUMNS} FROM job_events WHERE id > $1 AND ($2::text IS NULL OR job_id = $2) ORDER BY id LIMIT $3`,
        [after, jobId ?? null, limit],
      );
      return rows.rows.map(toEvent);
    } catch (err) {
      throw unavailable(err, 'reading job events');
    }
  }

  /** Every event of one job the table still holds but its previews, oldest first (at most `limit`). */
  async replayFrom(jobId: string, limit = 5000): Promise<ClusterEvent[]> {
    try {
      // Previews are large and never replayed: a watcher arriving late gets the next one live.
      const rows = await this.pool.query<EventRow>(
        `SELECT ${JOB_EVENT_COLUMNS} FROM job_events WHERE job_id = $1 AND event <> 'preview' ORDER BY id LIMIT $2`,
        [jobId, limit],
      );
      return rows.rows.map(toEvent);
    } catch (err) {
      throw unavailable(err, 'reading job events');
    }
  }

  /**
   * The id of the job's terminal event (succeeded, failed, canceled), or null while it has none
   * (or it was pruned): what a `<job id>.end` Last-Event-ID stands for.
   */
  async terminalIdOf(jobId: string): Promise<string | null> {
    try {
      const rows = await this.pool.query<{ id: string }>('SELECT id::text AS id FROM job_events WHERE job_id = $1 AND event = ANY($2) ORDER BY id DESC LIMIT 1', [
        jobId,
        TERMINAL,
      ]);
      return rows.rows[0]?.id ?? null;
    } catch (err) {
      throw unavailable(err, 'reading job events');
    }
  }

  /**
   * Removes the events of jobs that ended more than `finishedBeforeS` seconds ago, and events that
   * old whose job record is gone (a deleted job). Safe on every node at once. Answers the count.
   */
  async prune(finishedBeforeS: number): Promise<number> {
    try {
      const res = await this.pool.query(
        `DELETE FROM job_events e
          WHERE e.job_id IN (SELECT job_id FROM job_events
                              WHERE event = ANY($2) AND created_at < extract(epoch FROM now()) - $1)
             OR (e.created_at < extract(epoch FROM now()) - $1 AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = e.job_id))`,
        [finishedBeforeS, TERMINAL],
      );
      return res.rowCount ?? 0;
    } catch (err) {
      throw unavailable(err, 'pruning job events');
    }
  }

  /** NOTIFY on `channel` (through the pool: the LISTEN connection only listens). */
  async notify(channel: string, payload: string): Promise<void> {
    try {
      await notify(this.pool, channel, payload);
    } catch (err) {
      throw unavailable(err, `notifying ${channel}`);
    }
  }

  /**
   * `cb` hears the payloads NOTIFYed on `channel` while the LISTEN connection is up. Answers a
   * function that stops it (the channel is UNLISTENed when its last listener goes).
   */
  async listen(channel: string, cb: (payload: string) => void): Promise<() => Promise<void>> {
    if (channel === EVENTS_CHANNEL) throw new Error(`${EVENTS_CHANNEL} is the event bus's own channel: use subscribe()`);
    let set = this.channels.get(channel);
    if (!set) {
      set = new Set();
      this.channels.set(channel, set);
      // Not yet connected: connect() LISTENs every channel in the map.
      await this.client?.query(`LISTEN ${pg.escapeIdentifier(channel)}`).catch((err: unknown) => {
        throw unavailable(err, `listening on ${channel}`);
      });
    }
    set.add(cb);
    return async () => {
      const s = this.channels.get(channel);
      if (!s?.delete(cb) || s.size > 0) return;
      this.channels.delete(channel);
      await this.client?.query(`UNLISTEN ${pg.escapeIdentifier(channel)}`).catch(() => undefined);
    };
  }

  /** `cb` runs each time the LISTEN connection is back after a loss (after missed events were read). */
  onReconnect(cb: () => void): () => void {
    this.reconnectListeners.add(cb);
    return () => this.reconnectListeners.delete(cb);
  }

  async close(): Promise<void> {
    this.closing = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    if (this.pingTimer) clearInterval(this.pingTimer);
    this.reconnectTimer = this.pingTimer = null;
    const client = this.client;
    this.client = null;
    await client?.end().catch(() => undefined);
    await this.tail;
    await this.chain;
  }

  /**
   * Connects and LISTENs, then reads what was missed since the last event delivered.
   * Duplicates — a row read here and also notified — are dropped by id.
   */
  private async connect(): Promise<void> {
    const client = new pg.Client({
      connectionString: this.opts.url,
      application_name: 'kiapi-listen',
      connectionTimeoutMillis: 5000,
      keepAlive: true,
    });
    let dead = false;
    const lost = (err?: Error) => {
      if (dead) return;
      dead = true;
      // A connection lost while connect() runs is that call's failure (its caller retries).
      const wasCurrent = this.client === client;
      if (wasCurrent) this.client = null;
      if (this.closing || !wasCurrent) return;
      this.opts.log.warn({ err: err?.message }, 'the LISTEN connection to the shared database is lost; reconnecting');
      void client.end().catch(() => undefined);
      this.scheduleReconnect();
    };
    client.on('error', lost);
    client.on('end', () => lost());
    // Notifications that arrive before LISTEN is confirmed and the missed rows are read wait
    // behind a gate in the handling chain, so they are delivered after the rows they follow.
    await client.connect().catch(async (err: unknown) => {
      dead = true;
      await client.end().catch(() => undefined);
      throw err;
    });
    let open!: (proceed: boolean) => void;
    const gate = new Promise<boolean>((resolve) => (open = resolve));
    const reconnecting = this.lastSeen !== null;
    this.enqueue(async () => {
      if (await gate) await this.catchUp();
    });
    client.on('notification', (n) => this.onNotification(n));
    const listened = new Set<string>();
    try {
      await client.query(`LISTEN ${EVENTS_CHANNEL}`);
      for (const channel of this.channels.keys()) {
        await client.query(`LISTEN ${pg.escapeIdentifier(channel)}`);
        listened.add(channel);
      }
      // The first time, "from now on" starts at the newest row, read before start() resolves so
      // that an event published after it is never taken for an old one.
      if (this.lastSeen === null) {
        const max = await this.pool.query<{ id: string | null }>('SELECT max(id)::text AS id FROM job_events');
        this.lastSeen = BigInt(max.rows[0]?.id ?? '0');
      }
    } catch (err) {
      dead = true;
      open(false);
      await client.end().catch(() => undefined);
      throw err;
    }
    if (this.closing) {
      open(false);
      await client.end().catch(() => undefined);
      return;
    }
    this.client = client;
    // A channel added by listen() while this connection was being made is LISTENed now.
    for (const channel of this.channels.keys()) {
      if (!listened.has(channel)) await client.query(`LISTEN ${pg.escapeIdentifier(channel)}`).catch((err: Error) => lost(err));
    }
    this.backoffMs = this.opts.reconnectMinMs ?? 100;
    open(true);
    if (reconnecting) {
      this.stats.reconnects++;
      this.opts.log.info('the LISTEN connection to the shared database is back');
      this.enqueue(async () => {
        for (const cb of [...this.reconnectListeners]) cb();
      });
    }
  }

  private scheduleReconnect(): void {
    if (this.closing || this.reconnectTimer) return;
    // Jitter, so nodes do not all knock at once when the database comes back.
    const delay = this.backoffMs * (0.5 + Math.random() / 2);
    this.backoffMs = Math.min(this.backoffMs * 2, this.opts.reconnectMaxMs ?? 5000);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.connect().catch((err: unknown) => {
        this.opts.log.debug({ err: (err as Error).message }, 'reconnecting the LISTEN connection failed; trying again');
        this.scheduleReconnect();
      });
    }, delay);
    this.reconnectTimer.unref();
  }

  /**
   * A connection that died without closing (a peer gone without a FIN) sends no error; a query
   * that does not come back in time shows it, and the connection is replaced.
   */
  private async ping(): Promise<void> {
    const client = this.client;
    if (!client) return;
    const timeoutMs = this.opts.pingMs ?? 5000;
    let timer: NodeJS.Timeout | undefined;
    const ok = await Promise.race([
      client.query('SELECT 1').then(
        () => true,
        () => false,
      ),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
    ]);
    clearTimeout(timer);
    if (!ok && this.client === client) client.emit('error', new Error('the LISTEN connection stopped answering'));
  }

  private onNotification(n: pg.Notification): void {
    if (n.channel !== EVENTS_CHANNEL) {
      for (const cb of [...(this.channels.get(n.channel) ?? [])]) {
        try {
          cb(n.payload ?? '');
        } catch (err) {
          this.opts.log.error({ err, channel: n.channel }, 'a notification listener failed');
        }
      }
      return;
    }
    let parsed: Partial<ClusterEvent> & { id?: string };
    try {
      parsed = JSON.parse(n.payload ?? '') as Partial<ClusterEvent>;
    } catch {
      this.opts.log.error({ payload: n.payload?.slice(0, 200) }, `unreadable ${EVENTS_CHANNEL} notification`);
      return;
    }
    this.enqueue(async () => {
      if (this.gap) {
        this.gap = false;
        await this.catchUp();
      }
      if (typeof parsed.id !== 'string') return;
      if (parsed.event !== undefined) {
        this.deliver(parsed as ClusterEvent);
        return;
      }
      // Only the id came (the row was too large for NOTIFY): read it.
      if (this.lastSeen !== null && BigInt(parsed.id) <= this.lastSeen) return;
      const row = await this.pool.query<EventRow>(`SELECT ${JOB_EVENT_COLUMNS} FROM job_events WHERE id = $1`, [parsed.id]);
      if (row.rows[0]) this.deliver(toEvent(row.rows[0]));
    });
  }

  /** Delivers the rows after the last one delivered (those a dropped connection missed). */
  private async catchUp(): Promise<void> {
    while (this.lastSeen !== null) {
      const rows = await this.pool.query<EventRow>(`SELECT ${JOB_EVENT_COLUMNS} FROM job_events WHERE id > $1 ORDER BY id LIMIT 1000`, [
        String(this.lastSeen),
      ]);
      for (const r of rows.rows) {
        if (this.deliver(toEvent(r))) this.stats.caughtUp++;
      }
      if (rows.rows.length < 1000) return;
    }
  }

  private enqueue(task: () => Promise<void>): void {
    this.chain = this.chain.then(task).catch((err: unknown) => {
      // A read failed (the database went away): what it would have delivered is read on the
      // next event or after reconnecting, from the last id delivered.
      this.gap = true;
      this.opts.log.warn({ err: (err as Error).message }, 'could not read job events from the shared database');
    });
  }

  /** Hands `e` to the subscribers unless it was delivered already; answers whether it was new. */
  private deliver(e: ClusterEvent): boolean {
    const id = BigInt(e.id);
    // Null: the first connection has not found where "now" is (it failed): nothing to deliver.
    if (this.lastSeen === null || id <= this.lastSeen) return false;
    this.lastSeen = id;
    for (const cb of [...this.subscribers]) {
      try {
        cb(e);
      } catch (err) {
        this.opts.log.error({ err }, 'a job event subscriber failed');
      }
    }
    return true;
  }
}

export function toEvent(r: EventRow): ClusterEvent {
  return { id: r.id, jobId: r.job_id, jobType: r.job_type, status: r.status, event: r.event, data: JSON.parse(r.data) as Record<string, unknown> };
}
