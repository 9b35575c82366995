import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { retryAfterMs } from '../../src/core/webhooks/dispatcher.js';

void describe('Retry-After of a webhook receiver', () => {
  const now = Date.parse('2026-12-02T06:00:00Z');

  void it('reads a number of seconds', () => {
    assert.equal(retryAfterMs('120', now), 120_000);
    assert.equal(retryAfterMs(' 0 ', now), 0);
  });

  void it('reads an HTTP date as the time until then, never negative', () => {
    assert.equal(retryAfterMs('Wed, 02 Dec 2026 06:01:30 GMT', now), 90_000);
    assert.equal(retryAfterMs('Wed, 02 Dec 2026 05:00:00 GMT', now), 0);
  });

  void it('ignores a missing or malformed value (the backoff applies)', () => {
    assert.equal(retryAfterMs(undefined, now), null);
    assert.equal(retryAfterMs('soon', now), null);
    assert.equal(retryAfterMs('-5', now), null);
    assert.equal(retryAfterMs('1.5', now), null);
  });
});
