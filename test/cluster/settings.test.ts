/**
 * KIAPI_CLUSTER_* settings: off when none is set; database and bucket required together, with a
 * message naming the missing one; defaults; bad values named. No services needed.
 */
import assert from 'node:assert/strict';
import os from 'node:os';
import { describe, it } from 'node:test';
import { ConfigError, knownSettings } from '../../src/core/config.js';
import { readClusterSettings } from '../../src/cluster/settings.js';

const listen = { host: '127.0.0.1', port: 8123 };
const both = { KIAPI_CLUSTER_DATABASE_URL: 'postgres://kiapi:pw@db.lan:5432/kiapi', KIAPI_CLUSTER_S3_BUCKET: 'kiapi-blobs' };

function problems(env: Record<string, string>): string[] {
  try {
    readClusterSettings(env, listen);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.problems;
  }
  assert.fail('expected a ConfigError');
}

void describe('readClusterSettings', () => {
  void it('answers null when no cluster setting is set (empty values count as unset)', () => {
    assert.equal(readClusterSettings({}, listen), null);
    assert.equal(readClusterSettings({ KIAPI_CLUSTER_DATABASE_URL: '  ', KIAPI_PORT: '9000' }, listen), null);
  });

  void it('fills the defaults from the listen address', () => {
    assert.deepEqual(readClusterSettings(both, listen), {
      databaseUrl: both.KIAPI_CLUSTER_DATABASE_URL,
      s3: { bucket: 'kiapi-blobs', region: 'us-east-1' },
      nodeId: `${os.hostname()}:8123`,
      nodeUrl: 'http://127.0.0.1:8123',
      leaseS: 15,
      maxAttempts: 2,
      models: null,
    });
    // A wildcard bind address is nothing to connect to: the host name stands in.
    assert.equal(readClusterSettings(both, { host: '0.0.0.0', port: 80 })?.nodeUrl, `http://${os.hostname()}:80`);
    assert.equal(readClusterSettings(both, { host: '::1', port: 80 })?.nodeUrl, 'http://[::1]:80');
    // Port 0 is chosen at listen time: nodes of one machine must still get distinct ids.
    assert.equal(readClusterSettings(both, { host: '127.0.0.1', port: 0 })?.nodeId, `${os.hostname()}:pid${process.pid}`);
  });

  void it('takes every setting as given', () => {
    const s = readClusterSettings(
      {
        ...both,
        KIAPI_CLUSTER_S3_ENDPOINT: 'http://minio.lan:9000',
        KIAPI_CLUSTER_S3_REGION: 'auto',
        KIAPI_CLUSTER_NODE_ID: 'gpu-1',
        KIAPI_CLUSTER_NODE_URL: 'https://gpu-1.lan:8443/',
        KIAPI_CLUSTER_LEASE_S: '2.5',
        KIAPI_CLUSTER_MAX_ATTEMPTS: '3',
        KIAPI_CLUSTER_MODELS: 'qwen/image, ideogram4/fp8',
      },
      listen,
    );
    assert.deepEqual(s, {
      databaseUrl: both.KIAPI_CLUSTER_DATABASE_URL,
      s3: { bucket: 'kiapi-blobs', endpoint: 'http://minio.lan:9000', region: 'auto' },
      nodeId: 'gpu-1',
      nodeUrl: 'https://gpu-1.lan:8443',
      leaseS: 2.5,
      maxAttempts: 3,
      models: ['qwen/image', 'ideogram4/fp8'],
    });
  });

  void it('refuses the database without the bucket and the other way round, naming the missing one and why', () => {
    const [noBucket] = problems({ KIAPI_CLUSTER_DATABASE_URL: both.KIAPI_CLUSTER_DATABASE_URL });
    assert.match(noBucket!, /^KIAPI_CLUSTER_S3_BUCKET is missing: KIAPI_CLUSTER_DATABASE_URL is set/);
    assert.match(noBucket!, /file ids other nodes cannot read/);
    const [noDb] = problems({ KIAPI_CLUSTER_S3_BUCKET: 'kiapi-blobs' });
    assert.match(noDb!, /^KIAPI_CLUSTER_DATABASE_URL is missing: KIAPI_CLUSTER_S3_BUCKET is set/);
    // Another cluster setting alone is a mistake too, not a silent single node.
    const [neither] = problems({ KIAPI_CLUSTER_LEASE_S: '5' });
    assert.match(neither!, /^KIAPI_CLUSTER_LEASE_S is set, but cluster mode needs KIAPI_CLUSTER_DATABASE_URL and KIAPI_CLUSTER_S3_BUCKET/);
  });

  void it('names each bad value and what it accepts, all at once', () => {
    const p = problems({
      KIAPI_CLUSTER_DATABASE_URL: 'mysql://hunter2@db',
      KIAPI_CLUSTER_S3_BUCKET: 'ab',
      KIAPI_CLUSTER_S3_ENDPOINT: 'minio:9000',
      KIAPI_CLUSTER_NODE_URL: 'ftp://x',
      KIAPI_CLUSTER_LEASE_S: '0.5',
      KIAPI_CLUSTER_MAX_ATTEMPTS: '1.5',
    });
    assert.equal(p.length, 6, p.join('\n'));
    const text = p.join('\n');
    assert.match(text, /KIAPI_CLUSTER_LEASE_S="0.5": expected a number in 1\.\.3600/);
    assert.match(text, /KIAPI_CLUSTER_MAX_ATTEMPTS="1.5": expected an integer in 1\.\.100/);
    assert.match(text, /KIAPI_CLUSTER_DATABASE_URL: expected a postgres:\/\/ or postgresql:\/\/ URL/);
    assert.doesNotMatch(text, /hunter2/, 'the database URL may hold a password: never echoed');
    assert.match(text, /KIAPI_CLUSTER_S3_BUCKET="ab": expected a bucket name of 3 to 63/);
    assert.match(text, /KIAPI_CLUSTER_S3_ENDPOINT="minio:9000": expected an http:\/\/ or https:\/\/ URL/);
    assert.match(text, /KIAPI_CLUSTER_NODE_URL="ftp:\/\/x": expected an http:\/\/ or https:\/\/ URL/);
    assert.deepEqual(problems({ ...both, KIAPI_CLUSTER_LEASE_S: 'soon' }), ['KIAPI_CLUSTER_LEASE_S="soon": expected a number in 1..3600']);
  });

  void it('accepts a unix-socket database URL (no host)', () => {
    assert.equal(readClusterSettings({ ...both, KIAPI_CLUSTER_DATABASE_URL: 'postgresql:///kiapi?host=/run/postgresql' }, listen)?.databaseUrl, 'postgresql:///kiapi?host=/run/postgresql');
  });

  void it('lists every cluster setting in the settings catalog, read or not', () => {
    readClusterSettings({}, listen);
    const names = knownSettings().map((s) => s.name);
    for (const n of ['DATABASE_URL', 'S3_BUCKET', 'S3_ENDPOINT', 'S3_REGION', 'NODE_ID', 'NODE_URL', 'LEASE_S', 'MAX_ATTEMPTS']) {
      assert.ok(names.includes(`KIAPI_CLUSTER_${n}`), n);
    }
  });
});
