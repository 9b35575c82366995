/**
 * The seed comparator finds what matters to a seed client and lets harmless additions through.
 * Each case mutates a copy of a small seed-shaped document.
 */
/* eslint-disable @typescript-eslint/no-explicit-any, @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-call --
   the cases mutate free-form JSON documents in place; typing every path would hide what they change. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkAgainstAllowList, compareOpenApi, type Difference } from '../support/openapi-compare.js';

type Doc = Record<string, any>;

function seedDoc(): Doc {
  return {
    openapi: '3.1.0',
    info: { title: 'T', version: '0.1.0' },
    paths: {
      '/v1/image/x/generate': {
        post: {
          operationId: 'gen',
          parameters: [{ name: 'Accept', in: 'header', required: false, schema: { anyOf: [{ type: 'string' }, { type: 'null' }] } }],
          requestBody: { required: true, content: { 'application/json': { schema: { $ref: '#/components/schemas/Req' } } } },
          responses: {
            '200': {
              description: 'ok',
              content: { 'application/json': { schema: { $ref: '#/components/schemas/Res' } } },
              headers: { 'X-Id': { description: 'id', schema: { type: 'string' } } },
            },
            '422': { description: 'bad' },
          },
        },
      },
    },
    components: {
      schemas: {
        Req: {
          type: 'object',
          additionalProperties: true,
          required: ['prompt'],
          properties: {
            prompt: { type: 'string', minLength: 1, description: 'the prompt' },
            width: { anyOf: [{ type: 'integer' }, { type: 'null' }] },
            format: { type: 'string', enum: ['png', 'jpeg', 'webp'], default: 'png' },
            ref: { $ref: '#/components/schemas/Ref' },
          },
        },
        Ref: {
          oneOf: [{ $ref: '#/components/schemas/A' }, { $ref: '#/components/schemas/B' }],
          discriminator: { propertyName: 'type', mapping: { a: '#/components/schemas/A', b: '#/components/schemas/B' } },
        },
        A: { type: 'object', required: ['a'], properties: { type: { type: 'string', const: 'a' }, a: { type: 'string' } } },
        B: { type: 'object', required: ['b'], properties: { type: { type: 'string', const: 'b' }, b: { type: 'string' } } },
        Res: { type: 'object', required: ['file_id'], properties: { file_id: { type: 'string' }, params: { type: 'object', additionalProperties: true } } },
      },
    },
    'x-kiapi-capability': 'x',
  };
}

function diff(mutate: (d: Doc) => void): Difference[] {
  const served = seedDoc();
  mutate(served);
  return compareOpenApi(seedDoc(), served);
}

function paths(diffs: Difference[]): string[] {
  return diffs.map((d) => d.path);
}

void describe('compareOpenApi', () => {
  void it('finds nothing in an identical document, whatever the annotations say', () => {
    assert.deepEqual(
      diff((d) => {
        d.info.version = '9.9.9';
        d.components.schemas.Req.properties.prompt.description = 'reworded';
        d.components.schemas.Req.properties.prompt.title = 'Prompt';
        d.components.schemas.Req.properties.prompt.examples = ['a cat'];
        d.paths['/v1/image/x/generate'].post.responses['200'].description = 'reworded';
      }),
      [],
    );
  });

  void it('reports a changed type with both values', () => {
    const d = diff((doc) => {
      doc.components.schemas.Req.properties.width.anyOf[0].type = 'number';
    });
    assert.deepEqual(d, [{ path: 'components.schemas.Req.properties.width.anyOf[0].type', message: 'seed integer, served number' }]);
  });

  void it('reports a removed required field and an added required field', () => {
    assert.deepEqual(
      paths(diff((doc) => void (doc.components.schemas.Req.required = []))),
      ['components.schemas.Req.required'],
    );
    const added = diff((doc) => {
      doc.components.schemas.Req.properties.seed = { type: 'integer' };
      doc.components.schemas.Req.required = ['prompt', 'seed'];
    });
    assert.equal(added.length, 1);
    assert.match(added[0]!.message, /served adds seed/);
  });

  void it('reports a removed enum value and an added enum (a new constraint)', () => {
    const removed = diff((doc) => void (doc.components.schemas.Req.properties.format.enum = ['png', 'jpeg']));
    assert.deepEqual(paths(removed), ['components.schemas.Req.properties.format.enum']);
    assert.match(removed[0]!.message, /served lacks webp/);
    const added = diff((doc) => void (doc.components.schemas.Req.properties.prompt.enum = ['a']));
    assert.deepEqual(paths(added), ['components.schemas.Req.properties.prompt.enum']);
  });

  void it('reports changed bounds, defaults, const, additionalProperties and a missing property', () => {
    const d = diff((doc) => {
      const s = doc.components.schemas;
      s.Req.properties.prompt.minLength = 2;
      s.Req.properties.format.default = 'jpeg';
      s.A.properties.type.const = 'x';
      s.Req.additionalProperties = false;
      delete s.Res.properties.file_id;
    });
    assert.deepEqual(paths(d).sort(), [
      'components.schemas.A.properties.type.const',
      'components.schemas.Req.additionalProperties',
      'components.schemas.Req.properties.format.default',
      'components.schemas.Req.properties.prompt.minLength',
      'components.schemas.Res.properties.file_id',
    ]);
  });

  void it('reports oneOf/anyOf structure, discriminator mapping and $ref targets', () => {
    const d = diff((doc) => {
      const s = doc.components.schemas;
      s.Ref.oneOf.pop();
      s.Ref.discriminator.mapping.b = '#/components/schemas/A';
      s.Req.properties.width.anyOf = [{ type: 'integer' }];
    });
    assert.deepEqual(paths(d).sort(), [
      'components.schemas.Ref.discriminator.mapping.b',
      'components.schemas.Ref.oneOf',
      'components.schemas.Req.properties.width.anyOf',
    ]);
  });

  void it('resolves $refs: a renamed but identical component is one difference; an inlined one too', () => {
    const renamed = diff((doc) => {
      doc.components.schemas.Ref2 = doc.components.schemas.Ref;
      doc.components.schemas.Req.properties.ref = { $ref: '#/components/schemas/Ref2' };
    });
    assert.deepEqual(paths(renamed), ['components.schemas.Req.properties.ref.$ref']);
    const inlined = diff((doc) => {
      doc.components.schemas.Req.properties.ref = structuredClone(doc.components.schemas.Ref);
      doc.components.schemas.Req.properties.ref.oneOf[0] = structuredClone(doc.components.schemas.A);
    });
    assert.deepEqual(paths(inlined), ['components.schemas.Req.properties.ref.$ref', 'components.schemas.Req.properties.ref.oneOf[0].$ref']);
    const dangling = diff((doc) => void delete doc.components.schemas.Res);
    assert.ok(paths(dangling).includes('components.schemas.Res'));
    assert.ok(dangling.some((x) => /does not resolve/.test(x.message)));
  });

  void it('stops at the $ref depth guard on recursive schemas', () => {
    const seed = seedDoc();
    seed.components.schemas.Tree = { type: 'object', properties: { child: { $ref: '#/components/schemas/Tree' } } };
    const served = seedDoc();
    served.components.schemas.Tree2 = { type: 'object', properties: { child: { $ref: '#/components/schemas/Tree2' } } };
    served.components.schemas.Tree = { $ref: '#/components/schemas/Tree2' };
    const d = compareOpenApi(seed, served, { maxRefDepth: 4 });
    assert.ok(d.length >= 1 && d.length < 10, JSON.stringify(d));
  });

  void it('lets harmless additions through: codes, headers, content, optional properties and parameters, components', () => {
    assert.deepEqual(
      diff((doc) => {
        const op = doc.paths['/v1/image/x/generate'].post;
        op.responses['500'] = { description: 'engine failed' };
        op.responses['422'].content = { 'application/json': { schema: { type: 'object' } } };
        op.responses['200'].headers['X-Other'] = { schema: { type: 'string' } };
        op.responses['200'].content['image/png'] = { schema: { type: 'string', format: 'binary' } };
        op.parameters.push({ name: 'X-Trace', in: 'header', required: false, schema: { type: 'string' } });
        doc.paths['/v1/image/x/other'] = { get: { responses: {} } };
        doc.components.schemas.Req.properties.extra = { type: 'integer' };
        doc.components.schemas.Res.properties.params.properties = {};
        doc.components.schemas.Error = { type: 'object' };
        doc.security = [];
      }),
      [],
    );
  });

  void it('reports additions that change what a seed client sees', () => {
    const d = diff((doc) => {
      const op = doc.paths['/v1/image/x/generate'].post;
      op.parameters.push({ name: 'X-Key', in: 'header', required: true, schema: { type: 'string' } });
      doc.components.schemas.Req.properties.width.anyOf[0].maximum = 2048;
      doc.components.schemas.Req.properties.prompt.default = 'x';
      delete op.responses['422'];
    });
    assert.deepEqual(paths(d).sort(), [
      'components.schemas.Req.properties.prompt.default',
      'components.schemas.Req.properties.width.anyOf[0].maximum',
      'paths./v1/image/x/generate.post.parameters[header:X-Key]',
      'paths./v1/image/x/generate.post.responses.422',
    ]);
  });

  void it('applies an allow-list and reports stale entries', () => {
    const d = diff((doc) => void (doc.components.schemas.Req.properties.prompt.maxLength = 10));
    const hit = checkAgainstAllowList(d, { 'components.schemas.Req.properties.prompt.maxLength': 'intended' });
    assert.deepEqual(hit, { unexpected: [], stale: [] });
    const stale = checkAgainstAllowList([], { 'components.schemas.Req.properties.prompt.maxLength': 'intended' });
    assert.deepEqual(stale.stale, ['components.schemas.Req.properties.prompt.maxLength']);
  });
});
