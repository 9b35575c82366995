/**
 * `GET /` leads somewhere: a browser gets a page linking the docs of the common API and of every
 * family, the OpenAPI documents and /health (every link answers 200); a JSON client gets the same
 * as an index; both without a token when one is configured.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startServer, type TestServer } from '../support/server.js';

const TOKEN = 'home-page-test-token';
let srv: TestServer;

before(async () => {
  srv = await startServer({ KIAPI_AUTH_TOKEN: TOKEN });
});
after(async () => {
  await srv.close();
});

void describe('GET /', () => {
  void it('a browser gets an HTML page whose links all work, without a token', async () => {
    const res = await fetch(`${srv.url}/`, { headers: { accept: 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8' } });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/html/);
    const html = await res.text();
    // Nothing loaded from elsewhere: kiapi runs on machines without internet.
    assert.doesNotMatch(html, /(src|href)="(https?:)?\/\//);
    const links = [...html.matchAll(/href="([^"]+)"/g)].map((m) => m[1] as string);
    for (const must of ['/docs', '/openapi.json', '/health', '/v1/image/qwen/docs', '/v1/image/ideogram4/docs', '/v1/image/qwen/openapi.json']) {
      assert.ok(links.includes(must), `${must} in ${links.join(', ')}`);
    }
    for (const link of links) {
      const r = await fetch(`${srv.url}${link}`);
      assert.equal(r.status, 200, link);
      await r.arrayBuffer();
    }
  });

  void it('curl (*/*) gets the page too', async () => {
    const res = await fetch(`${srv.url}/`, { headers: { accept: '*/*' } });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/html/);
    await res.arrayBuffer();
  });

  void it('a JSON client gets an index of the same links', async () => {
    const res = await fetch(`${srv.url}/`, { headers: { accept: 'application/json' } });
    assert.equal(res.status, 200);
    const body = (await res.json()) as { name: string; version: string; docs: string; openapi: string; health: string; families: Array<{ docs: string; openapi: string }> };
    assert.equal(body.name, 'kiapi');
    assert.equal(body.version, srv.ctx.version);
    assert.equal(body.docs, '/docs');
    assert.equal(body.openapi, '/openapi.json');
    assert.equal(body.health, '/health');
    assert.deepEqual(body.families.map((f) => f.docs).sort(), ['/v1/image/ideogram4/docs', '/v1/image/qwen/docs']);
  });

  void it('the protected API still needs the token', async () => {
    const res = await fetch(`${srv.url}/v1/jobs`);
    assert.equal(res.status, 401);
    await res.arrayBuffer();
  });
});
