/** The preview engine passes the shared engine conformance suite. */
import { PreviewEngine } from '../../src/engines/preview/preview-engine.js';
import { engineConformance } from '../support/engine-conformance.js';

engineConformance({ name: 'preview', make: ({ slow }) => new PreviewEngine({ stepMs: slow ? 20 : 0 }) });
