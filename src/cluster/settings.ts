/**
 * KIAPI_CLUSTER_* settings: whether this node shares its state with other nodes, and where.
 *
 * No cluster setting at all means single-node mode (SQLite, local files), and the reader answers
 * null. The database and the bucket go together: a shared database with node-local blobs would
 * hand other nodes file ids they cannot read, and a bucket without the database has nothing to
 * share its records through, so one without the other — or any other cluster setting without
 * both — stops start-up with a message naming what is missing.
 */
import os from 'node:os';
import { ConfigError, EnvReader } from '../core/config.js';

export interface ClusterSettings {
  /** KIAPI_CLUSTER_DATABASE_URL: postgres://… of the shared database. */
  databaseUrl: string;
  s3: {
    /** KIAPI_CLUSTER_S3_BUCKET: where file blobs live. */
    bucket: string;
    /** KIAPI_CLUSTER_S3_ENDPOINT: an S3-compatible server (MinIO, R2, S3Proxy…); undefined: AWS. */
    endpoint?: string;
    /** KIAPI_CLUSTER_S3_REGION (R2: `auto`). */
    region: string;
  };
  /** KIAPI_CLUSTER_NODE_ID: this node's name in job records, the node table and /health. */
  nodeId: string;
  /** KIAPI_CLUSTER_NODE_URL: how other nodes and operators reach this node. */
  nodeUrl: string;
  /** KIAPI_CLUSTER_LEASE_S: a node silent this long has its running job taken away. */
  leaseS: number;
  /** KIAPI_CLUSTER_MAX_ATTEMPTS: attempts of a job whose node died, before it fails with the reason. */
  maxAttempts: number;
  /** KIAPI_CLUSTER_MODELS: the models (`family/name`) this node offers; null: every model it can run. */
  models: string[] | null;
}

/** Where this node listens: the defaults of the node id and URL are made from it. */
export interface ListenAddress {
  host: string;
  port: number;
}

export const DEFAULT_LEASE_S = 15;
export const DEFAULT_MAX_ATTEMPTS = 2;
export const DEFAULT_S3_REGION = 'us-east-1';

export function readClusterSettings(env: Record<string, string | undefined>, listen: ListenAddress): ClusterSettings | null {
  const r = new EnvReader(env);
  // Every setting is read before deciding anything, so each lands in the settings catalog
  // (`kiapi config template`) whether or not cluster mode is on.
  const databaseUrl = r.optionalString('KIAPI_CLUSTER_DATABASE_URL', 'postgres://… of the database shared by the nodes of a cluster (unset: single node)');
  const bucket = r.optionalString('KIAPI_CLUSTER_S3_BUCKET', 'S3 bucket for the file blobs of a cluster (required with KIAPI_CLUSTER_DATABASE_URL)');
  const endpoint = r.optionalString('KIAPI_CLUSTER_S3_ENDPOINT', 'S3-compatible endpoint URL (MinIO, R2, S3Proxy…), path-style addressing (unset: AWS)');
  const region = r.string('KIAPI_CLUSTER_S3_REGION', DEFAULT_S3_REGION, 'S3 region of the bucket (R2: auto)');
  const nodeId = r.optionalString('KIAPI_CLUSTER_NODE_ID', "this node's name in job records and /health (unset: <hostname>:<port>)");
  const nodeUrl = r.optionalString('KIAPI_CLUSTER_NODE_URL', 'how other nodes and operators reach this node (unset: http://<host>:<port>)');
  const leaseS = r.number('KIAPI_CLUSTER_LEASE_S', DEFAULT_LEASE_S, { min: 1, max: 3600 }, 'seconds a node may stay silent before its running job is handed to another node');
  const maxAttempts = r.number(
    'KIAPI_CLUSTER_MAX_ATTEMPTS',
    DEFAULT_MAX_ATTEMPTS,
    { integer: true, min: 1, max: 100 },
    'attempts of a job whose node stopped answering, before it fails with the reason',
  );

  const models = r.optionalString(
    'KIAPI_CLUSTER_MODELS',
    'models this node offers the cluster, comma-separated family/name (unset: every model it can run); e.g. keep a large machine for one model',
  );

  const clusterVars = Object.keys(env).filter((k) => k.startsWith('KIAPI_CLUSTER_') && r.raw(k) !== undefined);
  if (clusterVars.length === 0) {
    r.check();
    return null;
  }

  if (databaseUrl === null || bucket === null) {
    const missing = databaseUrl === null ? 'KIAPI_CLUSTER_DATABASE_URL' : 'KIAPI_CLUSTER_S3_BUCKET';
    const given = clusterVars.filter((k) => k !== missing).join(', ');
    r.problems.push(
      databaseUrl === null && bucket === null
        ? `${given} is set, but cluster mode needs KIAPI_CLUSTER_DATABASE_URL and KIAPI_CLUSTER_S3_BUCKET: set both, or unset the KIAPI_CLUSTER_* settings to run a single node`
        : `${missing} is missing: ${given} is set, and cluster mode needs both a shared database and a shared bucket ` +
            '(nodes sharing records but not blobs would hand out file ids other nodes cannot read); set it, or unset the other to run a single node',
    );
  }
  if (databaseUrl !== null && !isPostgresUrl(databaseUrl)) {
    // The value is not quoted back: it may hold a password.
    r.problems.push('KIAPI_CLUSTER_DATABASE_URL: expected a postgres:// or postgresql:// URL, e.g. postgres://kiapi:secret@db.lan:5432/kiapi');
  }
  if (bucket !== null && !/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) {
    r.problems.push(`KIAPI_CLUSTER_S3_BUCKET=${JSON.stringify(bucket)}: expected a bucket name of 3 to 63 lower-case letters, digits, dots and hyphens`);
  }
  if (endpoint !== null && !isHttpUrl(endpoint)) {
    r.problems.push(`KIAPI_CLUSTER_S3_ENDPOINT=${JSON.stringify(endpoint)}: expected an http:// or https:// URL, e.g. http://minio.lan:9000`);
  }
  if (nodeUrl !== null && !isHttpUrl(nodeUrl)) {
    r.problems.push(`KIAPI_CLUSTER_NODE_URL=${JSON.stringify(nodeUrl)}: expected an http:// or https:// URL, e.g. http://gpu-1.lan:8000`);
  }
  r.check();
  // Both are non-null here: check() threw otherwise.
  if (databaseUrl === null || bucket === null) throw new ConfigError(['cluster settings incomplete']);

  return {
    databaseUrl,
    s3: { bucket, ...(endpoint !== null ? { endpoint } : {}), region },
    nodeId: nodeId ?? defaultNodeId(listen),
    nodeUrl: (nodeUrl ?? defaultNodeUrl(listen)).replace(/\/+$/, ''),
    leaseS,
    maxAttempts,
    models: models === null ? null : models.split(',').map((m) => m.trim()).filter((m) => m !== ''),
  };
}

/**
 * <hostname>:<port>: stable across restarts (a restarted node finds the jobs it held under its
 * own id) and unique among the nodes of a machine, since two cannot listen on one port. Port 0
 * (the OS picks one at listen time) would give every such node the same id, and two nodes
 * sharing an id would defeat the lease and the fencing: the process id stands in for it then.
 */
function defaultNodeId({ port }: ListenAddress): string {
  return `${os.hostname()}:${port === 0 ? `pid${process.pid}` : port}`;
}

/**
 * http://<host>:<port> as other machines could use it: a wildcard bind address (0.0.0.0, ::) is
 * no address to connect to, so the machine's host name stands in for it.
 */
function defaultNodeUrl({ host, port }: ListenAddress): string {
  const h = host === '0.0.0.0' || host === '::' || host === '' ? os.hostname() : host;
  return `http://${h.includes(':') ? `[${h}]` : h}:${port}`;
}

function isPostgresUrl(value: string): boolean {
  try {
    const u = new URL(value);
    // No host is allowed: `postgres:///kiapi?host=/run/postgresql` connects through a unix socket.
    return u.protocol === 'postgres:' || u.protocol === 'postgresql:';
  } catch {
    return false;
  }
}

function isHttpUrl(value: string): boolean {
  try {
    const u = new URL(value);
    return (u.protocol === 'http:' || u.protocol === 'https:') && u.hostname !== '';
  } catch {
    return false;
  }
}
