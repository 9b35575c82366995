// `npm run build` (after tsc): bundles the playground page (web/src, web/style.css) into
// dist/web/app.js and app.css with esbuild. One small bundler with no plugins: the page is plain
// TypeScript and CSS, so nothing else is needed. The server serves these two files at /playground/.
import * as esbuild from 'esbuild';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
await esbuild.build({
  entryPoints: { app: path.join(here, 'src', 'main.ts') },
  bundle: true,
  format: 'esm',
  target: ['chrome110', 'firefox110', 'safari16'],
  minify: true,
  sourcemap: false,
  outdir: path.join(here, '..', 'dist', 'web'),
  logLevel: 'warning',
});
await esbuild.build({
  entryPoints: { app: path.join(here, 'style.css') },
  bundle: true,
  minify: true,
  outdir: path.join(here, '..', 'dist', 'web'),
  logLevel: 'warning',
});
