/**
 * `npm run bench [-- scenario…]`: speed and memory figures for BENCHMARKS.md. Scenarios run the
 * built server as a separate process on 127.0.0.1 and talk real HTTP to it, so the figures include
 * the whole stack. Numbers are printed, never asserted: these machines are shared and noisy.
 */
import { scenarios } from './scenarios.js';

const wanted = process.argv.slice(2);
const names = wanted.length > 0 ? wanted : Object.keys(scenarios);
for (const name of names) {
  const scenario = scenarios[name];
  if (!scenario) {
    console.error(`unknown scenario '${name}'; available: ${Object.keys(scenarios).join(', ')}`);
    process.exit(2);
  }
  console.log(`\n== ${name} ==`);
  const figures = await scenario();
  for (const [k, v] of Object.entries(figures)) console.log(`${k.padEnd(44)} ${v}`);
}
