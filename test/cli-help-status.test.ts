/**
 * `spngd --version`, `train --help` showing the config schema's defaults, and `status` given an
 * address without a port: one clear line instead of gRPC quietly trying port 443.
 */
import test from 'ava';
import { oneClearLine, spngd } from './helpers/cli.js';

test('spngd status without a port', async (t) => {
  oneClearLine(t, await spngd(['status', 'localhost']), /^spngd: localhost: give the actor's address as HOST:PORT/);
});

test("spngd --version and train --help with the schema's defaults", async (t) => {
  const v = await spngd(['--version']);
  t.is(v.code, 0, v.stderr);
  t.regex(v.stdout, /^\d+\.\d+\.\d+\n$/);
  const h = await spngd(['train', '--help']);
  t.is(h.code, 0, h.stderr);
  for (const re of [
    /--steps <n> +optimisation steps \(default: 120\)/,
    /--batch-size <n> +global mini-batch size \(default: 1024\)/,
    /--owners <n>[\s\S]*\(default: 2\)/,
    /--lr <x>[^\n]*\(default: 0\.05\)/,
  ])
    t.regex(h.stdout, re);
});
