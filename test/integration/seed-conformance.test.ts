/**
 * The served capability documents keep the contract (`contract/*.openapi.json`, the original
 * server's published documents; see contract/README.md): every seed path, operation, parameter, response,
 * header and component schema is there with the same shape. The comparator
 * (test/support/openapi-compare.ts) says which additions are harmless; anything else must be listed
 * in the allow-list below with its reason, or the test fails listing every difference.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PACKAGE_ROOT } from '../../src/core/package-info.js';
import { checkAgainstAllowList, compareOpenApi, formatDifferences, type AllowList } from '../support/openapi-compare.js';
import { startServer, type TestServer } from '../support/server.js';

/** The contract documents are part of the repository. */
function seedPath(family: string): string {
  return path.join(PACKAGE_ROOT, 'contract', `${family}.openapi.json`);
}

function loadSeed(family: string): Record<string, unknown> {
  return JSON.parse(fs.readFileSync(seedPath(family), 'utf8')) as Record<string, unknown>;
}

/**
 * Intended deviations from the seeds: difference path (as the comparator prints it) → reason.
 * Empty today: the served schemas match the seeds structurally. Deliberate changes live only in
 * annotations, which the comparator does not compare:
 * - qwen `scheduler` stays a free string as in the seed (no `enum`), but its description says
 *   unknown names are rejected with 422 (the original forwarded them to mflux → 500, docs/compatibility.md §11.18).
 *   Adding the enum would need `components.schemas.GenerateRequest.properties.scheduler.enum`
 *   and `components.schemas.EditRequest.properties.scheduler.enum` here.
 * - `image_strength` is documented the right way round (docs/compatibility.md §11.6) and with its default.
 * - ideogram4 bbox order is documented as [y_min, x_min, y_max, x_max] (docs/compatibility.md §11.3), the example
 *   caption passes strict validation (docs/compatibility.md §11.4), and a strict failure is documented as 400 (docs/compatibility.md §11.5).
 * - `info.version` is the package version (the seeds say 0.1.0).
 * An entry that no longer matches any difference fails the test too, so the list stays true.
 */
const ALLOW: Record<string, AllowList> = {
  qwen: {},
  ideogram4: {},
};

const FAMILIES = [
  { family: 'qwen', title: 'kiapi Qwen Image API', paths: ['/v1/image/qwen/generate', '/v1/image/qwen/edit', '/v1/image/qwen/models'] },
  // The seed's paths, plus kiapi's additive caption check (a job-less request, in the family document).
  { family: 'ideogram4', title: 'kiapi Ideogram 4 API', paths: ['/v1/image/ideogram4/generate', '/v1/image/ideogram4/models', '/v1/image/ideogram4/captions/validate'] },
] as const;

let server: TestServer;
const served: Record<string, Record<string, unknown>> = {};

before(async () => {
  server = await startServer();
  for (const { family } of FAMILIES) {
    const res = await fetch(`${server.url}/v1/image/${family}/openapi.json`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /application\/json/);
    served[family] = (await res.json()) as Record<string, unknown>;
  }
});

after(async () => {
  await server.close();
});

void describe('served capability documents vs the seeds', () => {
  for (const { family, title, paths } of FAMILIES) {
    void it(`${family}: no difference from the seed outside the allow-list`, () => {
      const diffs = compareOpenApi(loadSeed(family), served[family]);
      const { unexpected, stale } = checkAgainstAllowList(diffs, ALLOW[family] ?? {});
      assert.equal(unexpected.length, 0, `${unexpected.length} difference(s) from seeds/${family}.openapi.json:\n${formatDifferences(unexpected)}`);
      assert.deepEqual(stale, [], `allow-list entries that match no difference any more (remove them): ${stale.join(', ')}`);
    });

    void it(`${family}: info.title and the x-kiapi-* extensions`, () => {
      const doc = served[family]!;
      const seed = loadSeed(family);
      const info = doc.info as Record<string, unknown>;
      assert.equal(info.title, title);
      assert.equal(info.title, (seed.info as Record<string, unknown>).title);
      assert.equal(typeof info.version, 'string');
      assert.ok(typeof info.description === 'string' && info.description.length > 0);
      assert.equal(doc.openapi, '3.1.0');
      assert.equal(doc['x-kiapi-capability'], family);
      assert.equal(doc['x-kiapi-domain'], 'image');
      assert.equal(doc['x-kiapi-root-openapi'], '/openapi.json');
    });

    void it(`${family}: exactly the family's operation paths (docs/openapi routes are not documented)`, () => {
      assert.deepEqual(Object.keys(served[family]!.paths as object).sort(), [...paths].sort());
    });
  }
});

void describe('root /openapi.json', () => {
  void it('is the kiapi Common API with one line per capability linking its docs and openapi.json', async () => {
    const res = await fetch(`${server.url}/openapi.json`);
    assert.equal(res.status, 200);
    const doc = (await res.json()) as { info: { title: string; description: string }; paths: Record<string, unknown> };
    assert.equal(doc.info.title, 'kiapi Common API');
    // Only the common routes and the OpenAI-compatible ones; capability routes live in their own documents.
    for (const p of Object.keys(doc.paths)) assert.match(p, /^\/(health|v1\/files|v1\/jobs|v1\/events$|v1\/models$|v1\/models\/\{model\}$|v1\/images\/(generations|edits|variations)$)/, p);

    const lines = doc.info.description.split('\n');
    for (const { family, title } of FAMILIES) {
      const prefix = `/v1/image/${family}`;
      const mine = lines.filter((l) => l.includes(`(${prefix}/openapi.json)`));
      assert.equal(mine.length, 1, `one line for ${family}:\n${doc.info.description}`);
      const line = mine[0]!;
      assert.ok(line.startsWith(`- **${title}** - `), line);
      assert.ok(line.includes(`[Swagger UI](${prefix}/docs)`), line);
      assert.ok(line.includes(`[OpenAPI JSON](${prefix}/openapi.json)`), line);
      // The links work.
      const docs = await fetch(`${server.url}${prefix}/docs`);
      assert.equal(docs.status, 200);
      assert.match(docs.headers.get('content-type') ?? '', /text\/html/);
      assert.match(await docs.text(), new RegExp(`${prefix}/openapi\\.json`));
      const spec = await fetch(`${server.url}${prefix}/openapi.json`);
      assert.equal(spec.status, 200);
      await spec.arrayBuffer();
    }
    // Capabilities in (domain, name) order: ideogram4 before qwen.
    const at = (family: string) => lines.findIndex((l) => l.includes(`/v1/image/${family}/openapi.json`));
    assert.ok(at('ideogram4') < at('qwen'), 'capabilities are listed sorted by name');
  });
});
