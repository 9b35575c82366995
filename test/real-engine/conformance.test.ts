/**
 * The mflux worker engine on the real engine (mflux + MLX, tiny checkpoints) passes the shared
 * engine conformance suite, the same one the preview engine and the fake-mflux worker pass: the
 * fake is held to what the real engine does.
 */
import path from 'node:path';
import pino from 'pino';
import { WORKER_DIR } from '../support/fake-mflux.js';
import { WorkerEngine } from '../../src/engines/worker/worker-engine.js';
import { engineConformance } from '../support/engine-conformance.js';
import { realEngine, realEngineEnv } from './support.js';

engineConformance({
  name: 'mflux',
  // The real engine has no slow mode: its steps are slow enough (the cancel case asks for 50).
  make: () =>
    new WorkerEngine({
      python: realEngine().python,
      workerDir: path.resolve(WORKER_DIR),
      env: { ...process.env, ...realEngineEnv() },
      log: pino({ level: 'silent' }),
      engineTimeoutS: 300,
    }),
});
