import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { InputError, TooLargeError } from '../../src/core/errors.js';
import type { UrlFetchOptions } from '../../src/core/files/remote-input.js';
import { fetchUrlToFile, isNonPublicAddress, writeDataUrlToFile } from '../../src/core/files/remote-input.js';

const PNG_BYTES = Buffer.concat([
  Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
  Buffer.from('0000000d49484452000000010000000108060000001f15c489', 'hex'),
]);
const PNG_BASE64 = PNG_BYTES.toString('base64');

// Self-signed, CN/SAN public.test, valid for a century: only used to see that verification is on.
const TLS_KEY = `-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgxcTqjV4X3iHdP7zn
gkIj0Kx+4TDC1FtF9DJiS84kufahRANCAATX3Db3cQAbTKERpBrXhq1rBB3bYIS7
lHJmNwAH7E53U0qV5zIzE6U5c0uW+GyVH5ECYbmE3jSlauHGER/F+6NF
-----END PRIVATE KEY-----
`;
const TLS_CERT = `-----BEGIN CERTIFICATE-----
MIIBnDCCAUGgAwIBAgIUE2Z2MTVai1QBSl3Qnw8xkuxD+PMwCgYIKoZIzj0EAwIw
FjEUMBIGA1UEAwwLcHVibGljLnRlc3QwIBcNMjYxMTIxMTgwODQ3WhgPMjEyNjEw
MjgxODA4NDdaMBYxFDASBgNVBAMMC3B1YmxpYy50ZXN0MFkwEwYHKoZIzj0CAQYI
KoZIzj0DAQcDQgAE19w293EAG0yhEaQa14atawQd22CEu5RyZjcAB+xOd1NKlecy
MxOlOXNLlvhslR+RAmG5hN40pWrhxhEfxfujRaNrMGkwHQYDVR0OBBYEFCJWlPjU
VClLr7G9u97i7y4TwSb/MB8GA1UdIwQYMBaAFCJWlPjUVClLr7G9u97i7y4TwSb/
MA8GA1UdEwEB/wQFMAMBAf8wFgYDVR0RBA8wDYILcHVibGljLnRlc3QwCgYIKoZI
zj0EAwIDSQAwRgIhAMwFaupSJBiSLrZxLiySVniTz/nyOuXlyssQ3pjYnr7yAiEA
5mVfUSV66VjN64q+3XNl7eYKJP63wrTm5KYTZzV3kb4=
-----END CERTIFICATE-----
`;

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

let server: Server;
let port = 0;
let dir = '';
let fileCounter = 0;
const hits: string[] = [];
const hostHeaders: string[] = [];

const routes: Record<string, Handler> = {
  '/image.png': (_req, res) => {
    res.writeHead(200, { 'content-type': 'Image/PNG; charset=binary' });
    res.end(PNG_BYTES);
  },
  '/untyped': (_req, res) => {
    res.writeHead(200);
    res.end(PNG_BYTES);
  },
  '/untyped-text': (_req, res) => {
    res.writeHead(200);
    res.end('just some text');
  },
  '/missing': (_req, res) => {
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('nope');
  },
  '/big-declared': (_req, res) => {
    res.writeHead(200, { 'content-length': '5000', 'content-type': 'image/png' });
    res.end(Buffer.alloc(5000));
  },
  '/big-chunked': (_req, res) => {
    // No Content-Length: only counting while streaming can catch this one.
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    let sent = 0;
    const tick = setInterval(() => {
      if (res.destroyed || sent >= 40) {
        clearInterval(tick);
        if (!res.destroyed) res.end();
        return;
      }
      res.write(Buffer.alloc(256, 1));
      sent++;
    }, 5);
    res.on('close', () => clearInterval(tick));
  },
  '/exact': (_req, res) => {
    res.writeHead(200);
    res.end(Buffer.alloc(1000, 7));
  },
  '/hang': () => {
    // Never answers: the connect succeeds but headers never come.
  },
  '/stall-body': (_req, res) => {
    res.writeHead(200, { 'content-type': 'image/png' });
    res.write(PNG_BYTES.subarray(0, 10));
  },
  '/to-private': (_req, res) => {
    res.writeHead(302, { location: 'http://10.0.0.1/x.png' });
    res.end();
  },
  '/to-internal-name': (_req, res) => {
    res.writeHead(307, { location: `http://internal.test:${port}/image.png` });
    res.end();
  },
  '/to-ftp': (_req, res) => {
    res.writeHead(301, { location: 'ftp://example.com/x.png' });
    res.end();
  },
};

function handle(req: IncomingMessage, res: ServerResponse): void {
  res.on('error', () => undefined);
  const path = (req.url ?? '/').split('?')[0] ?? '/';
  hits.push(path);
  hostHeaders.push(req.headers.host ?? '');
  const chain = /^\/chain\/(\d+)$/.exec(path);
  if (chain !== null) {
    const left = Number(chain[1]);
    if (left === 0) {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('end of chain');
    } else {
      const status = [301, 302, 303, 307, 308][left % 5] ?? 302;
      // Relative Locations exercise resolution against the current hop.
      res.writeHead(status, { location: `/chain/${left - 1}` });
      res.end();
    }
    return;
  }
  const route = routes[path];
  if (route === undefined) {
    res.writeHead(404);
    res.end();
    return;
  }
  route(req, res);
}

function dest(): string {
  fileCounter++;
  return join(dir, `input-${fileCounter}`);
}

function opts(over: Partial<UrlFetchOptions> = {}): UrlFetchOptions {
  return { kind: 'init_image', maxBytes: 64 * 1024 * 1024, timeoutMs: 5000, allowPrivate: true, ...over };
}

function local(path: string): string {
  return `http://127.0.0.1:${port}${path}`;
}

function isInputError(pattern: RegExp) {
  return (err: unknown): boolean => {
    assert.ok(err instanceof InputError, `expected InputError, got ${String(err)}`);
    assert.match(err.message, pattern);
    return true;
  };
}

function isTooLarge(err: unknown): boolean {
  assert.ok(err instanceof TooLargeError, `expected TooLargeError, got ${String(err)}`);
  assert.match(err.message, /is larger than the \d+ byte limit \(KIAPI_MAX_INPUT_BYTES\)/);
  return true;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kiapi-remote-input-'));
  server = createServer(handle);
  server.on('clientError', (_err, socket) => socket.destroy());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});

after(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await rm(dir, { recursive: true, force: true });
});

void describe('isNonPublicAddress', () => {
  const refused = [
    '127.0.0.1',
    '127.255.255.254',
    '0.0.0.0',
    '0.1.2.3',
    '10.0.0.1',
    '172.16.5.4',
    '172.31.255.255',
    '192.168.1.1',
    '169.254.169.254',
    '100.64.0.1',
    '100.127.255.255',
    '224.0.0.1',
    '239.255.255.250',
    '255.255.255.255',
    '240.0.0.1',
    '192.0.0.8',
    '192.0.2.10',
    '198.18.0.1',
    '198.19.255.255',
    '198.51.100.7',
    '203.0.113.9',
    '::',
    '::1',
    '[::1]',
    'fe80::1',
    'fe80::1%eth0',
    'fc00::1',
    'fd12:3456::1',
    'fec0::1',
    'ff02::1',
    '2001:db8::1',
    '::ffff:10.0.0.1',
    '::ffff:127.0.0.1',
    '::ffff:169.254.169.254',
    '::10.0.0.1',
    '::ffff:0:a00:1',
    '64:ff9b::7f00:1',
    '64:ff9b:1::808:808',
    '2002:a00:1::1',
    '2002:7f00:1::',
    '2001:0:4136:e378:8000:63bf:3fff:fdd2',
    '4000::1',
    'not-an-ip',
    '0x7f.1',
    '',
  ];
  for (const ip of refused) {
    void test(`refuses ${ip === '' ? '(empty)' : ip}`, () => assert.equal(isNonPublicAddress(ip), true));
  }
  const accepted = ['8.8.8.8', '1.1.1.1', '100.63.255.255', '100.128.0.1', '172.32.0.1', '2606:4700::1111', '2a00:1450:4001::200e', '::ffff:8.8.8.8', '64:ff9b::808:808', '2002:808:808::1'];
  for (const ip of accepted) {
    void test(`accepts ${ip}`, () => assert.equal(isNonPublicAddress(ip), false));
  }
});

void describe('fetchUrlToFile: scheme and host checks', () => {
  for (const url of ['ftp://example.com/a.png', 'file:///etc/passwd', 'javascript:alert(1)', '/relative/path.png', 'not a url']) {
    void test(`refuses ${url}`, async () => {
      await assert.rejects(
        fetchUrlToFile(url, dest(), opts()),
        isInputError(/^init_image url must be an absolute http:\/\/ or https:\/\/ URL/),
      );
    });
  }

  void test('refuses an out-of-range or zero port', async () => {
    await assert.rejects(fetchUrlToFile('http://example.com:99999/', dest(), opts()), isInputError(/init_image url/));
    await assert.rejects(fetchUrlToFile('http://example.com:0/', dest(), opts()), isInputError(/invalid port/));
  });
});

void describe('fetchUrlToFile: non-public hosts when private URLs are not allowed', () => {
  const cases = [
    [`http://127.0.0.1:PORT/image.png`, '127.0.0.1'],
    [`http://localhost:PORT/image.png`, undefined],
    ['http://[::1]/', '::1'],
    ['http://2130706433/', '127.0.0.1'],
    ['http://0x7f.0.0.1/', '127.0.0.1'],
    ['http://[::ffff:127.0.0.1]/', '::ffff:7f00:1'],
    ['http://[::ffff:10.0.0.1]/', '::ffff:a00:1'],
    ['http://169.254.169.254/latest/meta-data/', '169.254.169.254'],
    ['http://100.64.0.1/', '100.64.0.1'],
  ] as const;
  for (const [template, ip] of cases) {
    void test(`refuses ${template}`, async () => {
      const url = template.replace('PORT', String(port));
      const before = hits.length;
      await assert.rejects(
        fetchUrlToFile(url, dest(), opts({ allowPrivate: false })),
        isInputError(new RegExp(`^init_image url host '.+' resolves to non-public address ${ip ?? ''}`)),
      );
      assert.equal(hits.length, before, 'the server must not have been contacted');
    });
  }
});

void describe('fetchUrlToFile: downloads', () => {
  void test('fetches a local server when private URLs are allowed', async () => {
    const path = dest();
    const got = await fetchUrlToFile(local('/image.png'), path, opts());
    assert.deepEqual(await readFile(path), PNG_BYTES);
    assert.deepEqual(got, { path, size: PNG_BYTES.length, contentType: 'image/png', filename: 'image.png' });
  });

  void test('sniffs the type when Content-Type is missing, else falls back to octet-stream', async () => {
    const png = await fetchUrlToFile(local('/untyped'), dest(), opts({ kind: 'images[1]' }));
    assert.equal(png.contentType, 'image/png');
    assert.equal(png.filename, 'untyped');
    const text = await fetchUrlToFile(local('/untyped-text'), dest(), opts());
    assert.equal(text.contentType, 'application/octet-stream');
  });

  void test('names the file after the kind when the path has no segment', async () => {
    const got = await fetchUrlToFile(local('/chain/0'), dest(), opts({ kind: 'loras[0]' }));
    assert.equal(got.filename, '0');
    const rootServer = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'image/webp' });
      res.end('RIFF0000WEBP');
    });
    await new Promise<void>((resolve) => rootServer.listen(0, '127.0.0.1', resolve));
    try {
      const rootPort = (rootServer.address() as AddressInfo).port;
      const root = await fetchUrlToFile(`http://127.0.0.1:${rootPort}/`, dest(), opts({ kind: 'images[1]' }));
      assert.equal(root.filename, 'images[1].webp');
    } finally {
      rootServer.closeAllConnections();
      await new Promise<void>((resolve) => rootServer.close(() => resolve()));
    }
  });

  void test('accepts a body of exactly maxBytes', async () => {
    const got = await fetchUrlToFile(local('/exact'), dest(), opts({ maxBytes: 1000 }));
    assert.equal(got.size, 1000);
  });
});

void describe('fetchUrlToFile: redirects', () => {
  void test('follows up to 5 redirects of every kind', async () => {
    const path = dest();
    const got = await fetchUrlToFile(local('/chain/5'), path, opts());
    assert.equal(await readFile(path, 'utf8'), 'end of chain');
    assert.equal(got.filename, '0');
  });

  void test('refuses a sixth redirect', async () => {
    const path = dest();
    await assert.rejects(fetchUrlToFile(local('/chain/6'), path, opts()), isInputError(/init_image.*too many redirects/));
    assert.equal(existsSync(path), false);
  });

  void test('honours a smaller maxRedirects', async () => {
    await assert.rejects(fetchUrlToFile(local('/chain/2'), dest(), opts({ maxRedirects: 1 })), isInputError(/too many redirects/));
  });

  // 127.0.0.1 plays a public host here; everything else keeps the real classification.
  const treatLoopbackAsPublic = (ip: string) => ip !== '127.0.0.1' && isNonPublicAddress(ip);

  void test('refuses a redirect from a public host to a private address', async () => {
    const resolved: string[] = [];
    const path = dest();
    await assert.rejects(
      fetchUrlToFile(`http://public.test:${port}/to-private`, path, {
        ...opts({ allowPrivate: false }),
        resolve: async (host) => {
          resolved.push(host);
          return ['127.0.0.1'];
        },
        isRefusedAddress: treatLoopbackAsPublic,
      }),
      isInputError(/^init_image url host '10\.0\.0\.1' resolves to non-public address 10\.0\.0\.1$/),
    );
    assert.deepEqual(resolved, ['public.test']);
    assert.equal(existsSync(path), false);
  });

  void test('re-resolves and refuses a redirect to a name with a private address', async () => {
    const resolved: string[] = [];
    await assert.rejects(
      fetchUrlToFile(`http://public.test:${port}/to-internal-name`, dest(), {
        ...opts({ allowPrivate: false }),
        resolve: async (host) => {
          resolved.push(host);
          return host === 'public.test' ? ['127.0.0.1'] : ['127.0.0.2'];
        },
        isRefusedAddress: treatLoopbackAsPublic,
      }),
      isInputError(/'internal\.test' resolves to non-public address 127\.0\.0\.2/),
    );
    assert.deepEqual(resolved, ['public.test', 'internal.test']);
  });

  void test('refuses a redirect to a non-http scheme', async () => {
    await assert.rejects(fetchUrlToFile(local('/to-ftp'), dest(), opts()), isInputError(/must be an absolute http/));
  });

  void test('connects to the vetted address even if DNS would now answer differently', async () => {
    // public.test has no real DNS entry, so success proves the socket used the pinned answer, and
    // the resolver flipping to a private address after the first call must not matter.
    let calls = 0;
    const path = dest();
    const before = hostHeaders.length;
    const got = await fetchUrlToFile(`http://public.test:${port}/image.png`, path, {
      ...opts({ allowPrivate: false }),
      resolve: async () => (++calls === 1 ? ['127.0.0.1'] : ['10.9.9.9']),
      isRefusedAddress: (ip) => ip !== '127.0.0.1' && isNonPublicAddress(ip),
    });
    assert.equal(calls, 1);
    assert.equal(got.size, PNG_BYTES.length);
    assert.deepEqual(hostHeaders.slice(before), [`public.test:${port}`]);
  });

  void test('https: connects to the pinned address, sends the name as SNI and verifies the certificate', async () => {
    const sniSeen: string[] = [];
    const tls = createHttpsServer({
      key: TLS_KEY,
      cert: TLS_CERT,
      SNICallback: (name, cb) => {
        sniSeen.push(name);
        cb(null, undefined);
      },
    });
    tls.on('tlsClientError', () => undefined);
    await new Promise<void>((resolve) => tls.listen(0, '127.0.0.1', resolve));
    try {
      const tlsPort = (tls.address() as AddressInfo).port;
      await assert.rejects(
        fetchUrlToFile(`https://public.test:${tlsPort}/x.png`, dest(), {
          ...opts(),
          resolve: async () => ['127.0.0.1'],
        }),
        isInputError(/^failed to fetch init_image url 'https:\/\/public\.test:\d+\/x\.png': .*certificate/),
      );
      assert.deepEqual(sniSeen, ['public.test']);
    } finally {
      tls.closeAllConnections();
      await new Promise<void>((resolve) => tls.close(() => resolve()));
    }
  });

  void test('pins with allowPrivate too, resolving once', async () => {
    let calls = 0;
    await fetchUrlToFile(`http://anything.test:${port}/image.png`, dest(), {
      ...opts(),
      resolve: async () => {
        calls++;
        return ['127.0.0.1'];
      },
    });
    assert.equal(calls, 1);
  });
});

void describe('fetchUrlToFile: limits and failures', () => {
  void test('refuses an oversize Content-Length before reading', async () => {
    const path = dest();
    await assert.rejects(fetchUrlToFile(local('/big-declared'), path, opts({ maxBytes: 1000 })), isTooLarge);
    assert.equal(existsSync(path), false);
  });

  void test('aborts an oversize chunked body while streaming and deletes the partial file', async () => {
    const path = dest();
    await assert.rejects(fetchUrlToFile(local('/big-chunked'), path, opts({ maxBytes: 1000, kind: 'loras[0]' })), (err) => {
      isTooLarge(err);
      assert.match((err as Error).message, /^loras\[0\] is larger than the 1000 byte limit/);
      return true;
    });
    assert.equal(existsSync(path), false);
  });

  void test('times out when the server never answers', async () => {
    await assert.rejects(
      fetchUrlToFile(local('/hang'), dest(), opts({ timeoutMs: 300 })),
      isInputError(/^failed to fetch init_image url 'http:\/\/127\.0\.0\.1:\d+\/hang': timed out after 0\.3s$/),
    );
  });

  void test('times out when the body stalls and deletes the partial file', async () => {
    const path = dest();
    await assert.rejects(fetchUrlToFile(local('/stall-body'), path, opts({ timeoutMs: 300 })), isInputError(/timed out after 0\.3s/));
    assert.equal(existsSync(path), false);
  });

  void test('reports a non-2xx status', async () => {
    const path = dest();
    await assert.rejects(
      fetchUrlToFile(local('/missing'), path, opts()),
      isInputError(/^failed to fetch init_image url 'http:\/\/127\.0\.0\.1:\d+\/missing': HTTP 404$/),
    );
    assert.equal(existsSync(path), false);
  });

  void test('reports a refused connection as an input error', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const closedPort = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    await assert.rejects(
      fetchUrlToFile(`http://127.0.0.1:${closedPort}/x`, dest(), opts()),
      isInputError(/^failed to fetch init_image url .*ECONNREFUSED/),
    );
  });

  void test('an external abort rejects with the signal reason', async () => {
    const controller = new AbortController();
    const reason = new Error('job canceled');
    setTimeout(() => controller.abort(reason), 50);
    await assert.rejects(fetchUrlToFile(local('/hang'), dest(), opts({ signal: controller.signal })), (err) => err === reason);
  });

  void test('keeps credentials out of error messages', async () => {
    await assert.rejects(fetchUrlToFile(`http://user:secret@127.0.0.1:${port}/missing`, dest(), opts()), (err) => {
      assert.ok(err instanceof InputError);
      assert.doesNotMatch(err.message, /secret/);
      assert.match(err.message, /HTTP 404/);
      return true;
    });
  });
});

void describe('writeDataUrlToFile', () => {
  const small = { kind: 'init_image', maxBytes: 1024 };

  void test('decodes a base64 png', async () => {
    const path = dest();
    const got = await writeDataUrlToFile(`data:image/png;base64,${PNG_BASE64}`, path, small);
    assert.deepEqual(await readFile(path), PNG_BYTES);
    assert.deepEqual(got, { path, size: PNG_BYTES.length, contentType: 'image/png', filename: 'init_image.png' });
  });

  void test('names the file after the kind and the media type', async () => {
    const got = await writeDataUrlToFile(`data:image/jpeg;base64,${PNG_BASE64}`, dest(), { ...small, kind: 'images[1]' });
    assert.equal(got.filename, 'images[1].jpg');
  });

  void test('refuses a string that is not a data URL, without echoing it whole', async () => {
    const long = `image/png;base64,${'A'.repeat(5000)}`;
    await assert.rejects(writeDataUrlToFile(long, dest(), small), (err) => {
      assert.ok(err instanceof InputError);
      assert.match(err.message, /^init_image data_url must be a data URL/);
      assert.ok(err.message.length < 200, `message too long: ${err.message.length}`);
      return true;
    });
    await assert.rejects(writeDataUrlToFile('DATA:image/png;base64,AAAA', dest(), small), isInputError(/must be a data URL/));
    await assert.rejects(writeDataUrlToFile('data:image/png;base64', dest(), small), isInputError(/must be a data URL/));
  });

  const badPayloads: [string, string, RegExp][] = [
    ['bad characters', 'iVBO*w0K', /character "\*" at offset 4 is not in the base64 alphabet/],
    ['url-safe alphabet', 'iVBO-w0_', /character "-" at offset 4/],
    ['a length that is not a multiple of 4', 'QUJD' + 'QQ=', /length 7 is not a multiple of 4/],
    ['padding in the middle', 'QQ==QUJD', /'=' padding is misplaced/],
    ['three padding characters', 'Q===', /'=' padding is misplaced/],
    ['a space inside', 'QUJD QUJD', /whitespace at offset 4 is not allowed/],
    ['a newline inside', 'QUJD\nQUJD', /whitespace at offset 4/],
  ];
  for (const [name, payload, reason] of badPayloads) {
    void test(`refuses base64 with ${name}`, async () => {
      const path = dest();
      await assert.rejects(
        writeDataUrlToFile(`data:image/png;base64,${payload}`, path, small),
        isInputError(new RegExp(`^invalid init_image data_url payload: ${reason.source}`)),
      );
      assert.equal(existsSync(path), false);
    });
  }

  void test('refuses an oversize payload before decoding and writes nothing', async () => {
    const path = dest();
    const payload = Buffer.alloc(1025).toString('base64');
    await assert.rejects(writeDataUrlToFile(`data:image/png;base64,${payload}`, path, small), isTooLarge);
    assert.equal(existsSync(path), false);
    // Exactly at the cap is fine.
    const exact = await writeDataUrlToFile(`data:image/png;base64,${Buffer.alloc(1024).toString('base64')}`, dest(), small);
    assert.equal(exact.size, 1024);
  });

  void test('refuses an oversize text payload', async () => {
    await assert.rejects(writeDataUrlToFile(`data:text/plain,${'x'.repeat(1025)}`, dest(), small), isTooLarge);
  });

  void test('stores a non-base64 payload as percent-decoded UTF-8', async () => {
    const path = dest();
    const got = await writeDataUrlToFile('data:text/plain;charset=utf-8,h%C3%A9llo%20w%6Frld 100% ü', path, small);
    assert.equal(await readFile(path, 'utf8'), 'héllo world 100% ü');
    assert.equal(got.contentType, 'text/plain');
    assert.equal(got.filename, 'init_image.bin');
  });

  void test('defaults an empty media type to application/octet-stream', async () => {
    const got = await writeDataUrlToFile(`data:;base64,${PNG_BASE64}`, dest(), small);
    assert.equal(got.contentType, 'application/octet-stream');
    assert.equal(got.filename, 'init_image.bin');
    const plain = await writeDataUrlToFile('data:,hello', dest(), small);
    assert.equal(plain.contentType, 'application/octet-stream');
    assert.equal(plain.size, 5);
  });

  void test('accepts an empty base64 payload', async () => {
    const got = await writeDataUrlToFile('data:image/png;base64,', dest(), small);
    assert.equal(got.size, 0);
  });
});
