/**
 * The real `spngd` command (src/cli/entry.ts under tsx, as a child process) on mistakes a user can
 * make: each must end with exit code 2 and one clear `spngd: ...` line on stderr, no stack trace.
 * Other stderr lines may only be structured log lines (JSON with a level: stderr is not a TTY).
 */
import test from 'ava';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { oneClearLine, spngd } from './helpers/cli.js';

const dataDir = fileURLToPath(new URL('../data/fashion-mnist', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'spngd-cli-errors-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

function listen(server: Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port));
  });
}

test('spngd worker --ps on an unreachable address', async (t) => {
  // The worker retries Join for --join-timeout (default 15 s) before giving up.
  const r = await spngd(['worker', '--ps', '127.0.0.1:1', '--join-timeout', '2000'], 45_000);
  t.not(r.signal, 'SIGKILL', `still running after 45 s: --join-timeout was not honoured\n${r.stderr}`);
  oneClearLine(t, r, /parameter server 127\.0\.0\.1:1 is unreachable/);
});

test('spngd ps --listen on a port already in use', async (t) => {
  const server = createServer();
  const port = await listen(server);
  try {
    const r = await spngd(['ps', '--listen', `127.0.0.1:${port}`, '--data', dataDir, '--backend', 'auto']);
    oneClearLine(t, r, new RegExp(`cannot listen on 127\\.0\\.0\\.1:${port}.*EADDRINUSE`));
    t.notRegex(r.stdout, /"listening"/);
  } finally {
    server.close();
  }
});

test('spngd train --config with an unknown key', async (t) => {
  const file = join(tmp, 'unknown-key.yaml');
  writeFileSync(file, 'steps: 3\noptimizer:\n  kind: spngd\n  learningRate: 0.1\n');
  oneClearLine(t, await spngd(['train', '--config', file, '--out', join(tmp, 'out-unknown')]), /unknown key optimizer\.learningRate/);
});

test('spngd train --config with a value of the wrong type', async (t) => {
  const file = join(tmp, 'wrong-type.yaml');
  writeFileSync(file, 'steps: ten\n');
  oneClearLine(t, await spngd(['train', '--config', file, '--out', join(tmp, 'out-type')]), /steps: .*expected number/);
});

test('spngd train --config naming a missing file', async (t) => {
  const file = join(tmp, 'no-such-config.yaml');
  oneClearLine(t, await spngd(['train', '--config', file, '--out', join(tmp, 'out-missing')]), /no-such-config\.yaml: cannot read it \(ENOENT\)/);
});

test('spngd train --data on a directory that does not exist', async (t) => {
  oneClearLine(
    t,
    await spngd(['train', '--data', '/nonexistent', '--steps', '1', '--out', join(tmp, 'out-data')]),
    /\/nonexistent: data directory .* does not exist/,
  );
});

test('spngd train --out under a regular file', async (t) => {
  const file = join(tmp, 'a-file');
  writeFileSync(file, 'x');
  oneClearLine(t, await spngd(['train', '--out', join(file, 'run'), '--steps', '1']), /output directory .*a-file\/run is not writable \(ENOTDIR\)/);
});

test('spngd status on an unreachable address', async (t) => {
  const r = await spngd(['status', '127.0.0.1:1']);
  oneClearLine(t, r, /^spngd: 127\.0\.0\.1:1: connection refused \(ECONNREFUSED\): nothing listens there/);
  t.notRegex(r.stderr, /Resolution note/);
});

for (const [args, what] of [
  [['owner', '--ps', '127.0.0.1:1', '--capacity', 'fast'], /--capacity must be a positive number, got "fast"/],
  [['worker', '--ps', '127.0.0.1:1', '--join-timeout', '-5'], /--join-timeout must be a positive number, got "-5"/],
] as const) {
  test(`spngd ${args[0]} ${args[3]} ${args[4]}: a usage error before anything starts`, async (t) => {
    const r = await spngd([...args]);
    t.is(r.code, 2, r.stderr);
    t.regex(r.stderr, what);
    t.false(/^\s+at \S/m.test(r.stderr), 'no stack trace');
    t.notRegex(r.stdout, /"listening"/);
  });
}
