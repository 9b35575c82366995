/**
 * `kiapi deactivate`: removes what `kiapi activate` put on disk, and nothing else.
 *
 * `--model/--family/--all`: for each model with an activation record, the recorded revision only
 * (its snapshot, the blobs no other revision links to, refs pointing at it) — other revisions in
 * the cache, from other tools or other settings, stay (the original removed them all: docs/compatibility.md §11.24).
 * Weights in a local directory are the user's and are never deleted. `--engine`: the venv.
 * Asks before deleting unless `--yes`; without a terminal `--yes` is required.
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import type { ModelSpec } from '../core/models/model-spec.js';
import { localWeightsDir } from '../core/models/weights.js';
import { readRecord, removeRecord } from '../core/setup/activation-records.js';
import { pathBytes } from '../core/setup/disk.js';
import { planRevisionRemoval, removeRevision, type RevisionRemoval } from '../core/setup/hf-cache.js';
import { enginePaths } from '../core/setup/venv.js';
import { loadSettings } from './environment.js';
import { formatBytes } from './format.js';
import { confirm, isInteractive } from './prompt.js';
import { modelLabel, resolveSelection, SELECTION_OPTIONS } from './selection.js';
import { UsageError } from './usage-error.js';

interface Removal {
  spec: ModelSpec;
  plan: RevisionRemoval;
  commit: string;
}

export async function deactivateCommand(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { ...SELECTION_OPTIONS, engine: { type: 'boolean' }, yes: { type: 'boolean', short: 'y' } },
    strict: true,
  });
  const { config, models } = loadSettings();
  const modelsAsked = Boolean(values.all || values.family || values.model) || !values.engine;
  const selected = modelsAsked
    ? await resolveSelection(models, values, {
        verb: 'deactivate',
        describe: (s) => {
          const r = readRecord(config.dataDir, s.repo);
          return r ? `activated ${r.commit.slice(0, 12)}, ${formatBytes(r.bytes)}` : 'not activated by kiapi';
        },
        preselect: () => false,
      })
    : [];

  const removals: Removal[] = [];
  const seen = new Set<string>();
  for (const spec of selected) {
    if (seen.has(spec.repo)) continue;
    seen.add(spec.repo);
    const local = localWeightsDir(spec.repo);
    if (local !== null) {
      console.log(`${modelLabel(spec)}: uses the local directory ${local}; kiapi never deletes it`);
      continue;
    }
    const record = readRecord(config.dataDir, spec.repo);
    if (!record) {
      console.log(
        `${modelLabel(spec)}: not activated by kiapi (no record for ${spec.repo}); kiapi removes only what \`kiapi activate\` downloaded. ` +
          'Other cached revisions: `hf cache ls` / `hf cache rm`.',
      );
      continue;
    }
    removals.push({ spec, commit: record.commit, plan: planRevisionRemoval(record.cacheDir, record.repo, record.commit) });
  }
  const venv = enginePaths(config.dataDir);
  const engine = values.engine && fs.existsSync(venv.dir) ? { dir: venv.dir, bytes: pathBytes(venv.dir) } : null;
  if (values.engine && !engine) console.log(`engine: no venv at ${venv.dir}`);
  if (removals.length === 0 && !engine) {
    console.log('Nothing to remove.');
    return 0;
  }

  console.log('This removes:');
  for (const r of removals) {
    const shared = r.plan.sharedBlobs > 0 ? `; ${r.plan.sharedBlobs} file(s) shared with other revisions stay` : '';
    console.log(`  ${modelLabel(r.spec)}  ${r.spec.repo}@${r.commit.slice(0, 12)}  ${formatBytes(r.plan.bytes)}${shared}`);
  }
  if (engine) console.log(`  the engine venv ${engine.dir}  ${formatBytes(engine.bytes)}`);
  if (!values.yes) {
    if (!isInteractive()) throw new UsageError('deactivate deletes files: pass --yes to confirm (there is no terminal to ask on)');
    if (!(await confirm('Remove?', false))) {
      console.log('Canceled.');
      return 1;
    }
  }
  for (const r of removals) {
    removeRevision(r.plan);
    removeRecord(config.dataDir, r.spec.repo);
    console.log(`removed ${modelLabel(r.spec)} (${r.spec.repo}@${r.commit.slice(0, 12)}, ${formatBytes(r.plan.bytes)})`);
  }
  if (engine) {
    fs.rmSync(engine.dir, { recursive: true, force: true });
    console.log(`removed the engine venv ${engine.dir}${config.python ? ' (the server uses KIAPI_PYTHON anyway)' : ''}`);
  }
  return 0;
}
