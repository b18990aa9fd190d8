/** Every example config in docs/examples and every base config in bench/ loads and validates, so the documented commands run. */
import test from 'ava';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadTrainConfig } from '../src/config/load.js';

const dir = fileURLToPath(new URL('../docs/examples', import.meta.url));
const files = readdirSync(dir).filter((f) => f.endsWith('.yaml'));

test('docs/examples holds example configs', (t) => {
  t.true(files.length >= 6, files.join(', '));
});

for (const f of files) {
  test(`docs/examples/${f} is a valid training config`, (t) => {
    const config = loadTrainConfig(join(dir, f));
    t.true(config.steps > 0 && config.batchSize > 0);
  });
}

// The study's base configs (bench/*.yaml) are laid under every run of `bench convergence --config`.
const benchDir = fileURLToPath(new URL('../bench', import.meta.url));
for (const f of readdirSync(benchDir).filter((f) => f.endsWith('.yaml'))) {
  test(`bench/${f} is a valid base config`, (t) => {
    const config = loadTrainConfig(join(benchDir, f), { model: 'resnet8', batchSize: 4096 });
    t.is(config.optimizer.schedule.warmupEpochs, 1);
  });
}
