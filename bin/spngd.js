#!/usr/bin/env node
// Entry point of the `spngd` command: runs the compiled CLI (npm install builds it into dist/).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const entry = new URL('../dist/src/cli/entry.js', import.meta.url);
if (!existsSync(fileURLToPath(entry))) {
  process.stderr.write('spngd: not built yet; run `npm install` (or `npm run build`) in the repository first\n');
  process.exit(2);
}
await import(entry.href);
