/** The settings file: YAML → environment strings, precedence, provenance, problems naming the file. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { ConfigError, type SettingInfo } from '../../src/core/config.js';
import {
  annotateFileProblems,
  mergeSettings,
  readSettingsFile,
  renderTemplate,
  sourceOf,
  type SettingsFile,
} from '../../src/core/setup/settings-file.js';
import { tempDir } from '../support/server.js';

const dir = tempDir('kiapi-settings-unit-');
after(() => fs.rmSync(dir, { recursive: true, force: true }));

const info = (name: string, nullable = false): SettingInfo => ({ name, default: '1', accepts: 'a number', doc: `doc of ${name}`, nullable });
const CATALOG = [info('KIAPI_PORT'), info('KIAPI_HOST'), info('KIAPI_WARMUP'), info('KIAPI_AUTH_TOKEN'), info('KIAPI_QWEN_DEFAULT_QUANTIZE', true), info('KIAPI_CONFIG_FILE')];

function write(text: string): string {
  const file = path.join(dir, `s-${Math.random().toString(36).slice(2)}.yaml`);
  fs.writeFileSync(file, text);
  return file;
}

void describe('readSettingsFile', () => {
  void it('turns YAML values into the strings an environment variable would hold', () => {
    const f = readSettingsFile(
      write('KIAPI_PORT: 8001\nKIAPI_HOST: 0.0.0.0\nKIAPI_WARMUP: [qwen/image, fp8]\nKIAPI_QWEN_DEFAULT_QUANTIZE: null\nKIAPI_AUTH_TOKEN: ~\n'),
      CATALOG,
    );
    // A null is "none" where none is a value of its own, and "unset" elsewhere.
    assert.deepEqual(f.values, { KIAPI_PORT: '8001', KIAPI_HOST: '0.0.0.0', KIAPI_WARMUP: '["qwen/image","fp8"]', KIAPI_QWEN_DEFAULT_QUANTIZE: 'null' });
    assert.equal(f.exists, true);
  });

  void it('a missing or empty file has no values', () => {
    assert.deepEqual(readSettingsFile(path.join(dir, 'absent.yaml'), CATALOG), { path: path.join(dir, 'absent.yaml'), exists: false, values: {} });
    assert.deepEqual(readSettingsFile(write('# only comments\n'), CATALOG).values, {});
  });

  void it('unknown keys, env-only keys, nested values and YAML errors are problems naming the file', () => {
    const file = write('KIAPI_PROT: 1\nKIAPI_CONFIG_FILE: /x\nKIAPI_HOST: {a: 1}\n');
    assert.throws(
      () => readSettingsFile(file, CATALOG),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.equal(err.problems.length, 3);
        assert.match(err.problems[0]!, /KIAPI_PROT in .*: unknown setting/);
        assert.match(err.problems[1]!, /KIAPI_CONFIG_FILE in .*: can only be set in the environment/);
        assert.match(err.problems[2]!, /KIAPI_HOST in .*: expected a single value/);
        return true;
      },
    );
    assert.throws(() => readSettingsFile(write('KIAPI_PORT: [1\n'), CATALOG), (err: unknown) => err instanceof ConfigError && err.problems[0]!.includes('.yaml'));
    assert.throws(() => readSettingsFile(write('- a\n- b\n'), CATALOG), /expected a mapping/);
  });
});

void describe('precedence', () => {
  const file: SettingsFile = { path: '/etc/kiapi.yaml', exists: true, values: { KIAPI_PORT: '8001', KIAPI_HOST: '0.0.0.0' } };

  void it('a non-empty environment variable wins; an empty one counts as unset', () => {
    const env = { KIAPI_PORT: '9000', KIAPI_HOST: '  ' };
    const merged = mergeSettings(env, file);
    assert.equal(merged.KIAPI_PORT, '9000');
    assert.equal(merged.KIAPI_HOST, '0.0.0.0');
    assert.equal(sourceOf('KIAPI_PORT', env, file), 'env');
    assert.equal(sourceOf('KIAPI_HOST', env, file), 'file');
    assert.equal(sourceOf('KIAPI_WARMUP', env, file), 'default');
  });

  void it('problems about values from the file name the file; env values are not blamed on it', () => {
    const err = new ConfigError(['KIAPI_HOST="x": expected y', 'KIAPI_PORT="z": expected an integer']);
    const annotated = annotateFileProblems(err, { KIAPI_PORT: 'z' }, file);
    assert.deepEqual(annotated.problems, ['KIAPI_HOST="x": expected y (set in /etc/kiapi.yaml)', 'KIAPI_PORT="z": expected an integer']);
  });
});

void it('the template lists every catalog entry, commented, with its description', () => {
  const text = renderTemplate(CATALOG);
  for (const s of CATALOG) {
    assert.match(text, new RegExp(`^# doc of ${s.name} — a number`, 'm'));
    assert.match(text, new RegExp(`^# ${s.name}: 1$`, 'm'));
  }
  assert.match(text, /KIAPI_CONFIG_FILE.*\n?.*environment only|environment only/);
});
