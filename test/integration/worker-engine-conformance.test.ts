/** The mflux worker engine (real Python worker, fake mflux) passes the shared engine conformance suite. */
import pino from 'pino';
import { WorkerEngine } from '../../src/engines/worker/worker-engine.js';
import { engineConformance } from '../support/engine-conformance.js';
import { FAKE_MFLUX_PATH, WORKER_DIR } from '../support/fake-mflux.js';

engineConformance({
  name: 'mflux',
  make: ({ slow }) =>
    new WorkerEngine({
      python: process.env.KIAPI_TEST_PYTHON ?? 'python3',
      workerDir: WORKER_DIR,
      env: { ...process.env, PYTHONPATH: FAKE_MFLUX_PATH, FAKE_MFLUX_WEIGHT_GB: '0.1', FAKE_MFLUX_STEP_S: slow ? '0.05' : '0' },
      log: pino({ level: 'silent' }),
      engineTimeoutS: 30,
    }),
});
