#!/usr/bin/env node
// Entry point of the `spngd` command: runs the compiled CLI (npm install builds it into dist/).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const entry = new URL('../dist/src/cli/main.js', import.meta.url);
if (!existsSync(fileURLToPath(entry))) {
  process.stderr.write('spngd: not built yet; run `npm install` (or `npm run build`) in the repository first\n');
  process.exit(2);
}
const { main } = await import(entry.href);
await main(process.argv);
