/**
 * The sync raw-bytes answer is sent from the bytes the store read while hashing the image: it
 * must be the stored blob byte for byte, with the headers a download of the same file carries.
 */
import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import { startServer, type TestServer } from '../support/server.js';
import { generateBody, request } from '../support/api.js';

let s: TestServer;

before(async () => {
  s = await startServer();
});

after(async () => {
  await s.close();
});

void it('a sync image answer is the stored file, with its download headers', async () => {
  for (const format of ['png', 'jpeg', 'webp']) {
    const res = await request(`${s.url}/v1/image/qwen/generate`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: `image/${format}` },
      body: JSON.stringify(generateBody({ format })),
    });
    assert.equal(res.status, 200);
    const fileId = res.headers.get('x-kiapi-file-id')!;
    assert.match(fileId, /^file_[0-9a-f]+$/);
    const dl = await request(`${s.url}/v1/files/${fileId}/download`);
    assert.ok(res.bytes.equals(dl.bytes), `${format}: same bytes as the stored blob`);
    for (const h of ['content-type', 'content-length', 'content-disposition', 'etag', 'last-modified', 'cache-control']) {
      assert.equal(res.headers.get(h), dl.headers.get(h), `${format}: ${h}`);
    }
    assert.equal(res.headers.get('content-type'), `image/${format}`);
  }
});
