/**
 * The security flags on the real `spngd` command (src/cli/entry.ts under tsx, as child processes):
 * `spngd certs` then `spngd train` on a local cluster whose PS, worker and owner all use mutual TLS
 * and the token; `spngd status` with and without the token and certificate; bad files as one
 * `spngd: ...` line; the warning for a non-loopback address without TLS.
 */
import test from 'ava';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ParameterServer } from '../src/actors/ps/parameter-server.js';
import { resolveTrainConfig } from '../src/config/schema.js';
import { silentLogger } from '../src/util/log.js';
import { createReferenceBackend } from './helpers/reference-backend.js';
import { isLogLine, oneClearLine, spngd, type Result } from './helpers/cli.js';
import { clusterCredentials, makeTestPki } from './helpers/security.js';

const dataDir = fileURLToPath(new URL('../data/fashion-mnist', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'spngd-security-cli-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

const logMessages = (r: Result) =>
  r.stderr
    .split('\n')
    .filter(isLogLine)
    .map((l) => JSON.parse(l) as { level: number; msg: string });

test('spngd certs, then spngd train: PS, worker and owner use mutual TLS and the token', async (t) => {
  const certs = join(tmp, 'certs');
  const made = await spngd(['certs', '--out', certs, '--hosts', 'localhost', '--token']);
  t.is(made.code, 0, made.stderr);
  t.regex(made.stdout, /created a new CA/);
  const out = join(tmp, 'run');
  const r = await spngd(
    [
      'train',
      '--workers',
      '1',
      '--owners',
      '1',
      '--steps',
      '2',
      '--batch-size',
      '128',
      '--train-limit',
      '512',
      '--test-limit',
      '256',
      '--eval-every',
      '2',
      '--data',
      dataDir,
      '--out',
      out,
      '--no-progress',
      '--tls-ca',
      join(certs, 'ca.crt'),
      '--tls-cert',
      join(certs, 'localhost.crt'),
      '--tls-key',
      join(certs, 'localhost.key'),
      '--token-file',
      join(certs, 'token'),
    ],
    180_000,
  );
  t.is(r.code, 0, r.stderr);
  const summary = JSON.parse(r.stdout.trim().split('\n').pop()!) as { steps: number };
  t.is(summary.steps, 2);
  for (const child of ['ps', 'worker-1', 'owner-1']) {
    t.regex(
      readFileSync(join(out, 'logs', `${child}.log`), 'utf8'),
      /security: mutual TLS \(CA O=spngd, CN=spngd development CA [0-9a-f]+\), bearer token/,
      child,
    );
  }
  const config = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as { security: Record<string, string> };
  t.is(config.security.tlsCa, join(certs, 'ca.crt'));
  t.is(config.security.tokenFile, join(certs, 'token'));
});

test('spngd status with the certificate and token; without either it is one clear line', async (t) => {
  const pki = await makeTestPki(join(tmp, 'status'));
  const backend = createReferenceBackend();
  const ps = new ParameterServer({
    config: resolveTrainConfig({}),
    listen: 'localhost:0',
    logger: silentLogger(),
    backend,
    trainSize: 512,
    credentials: clusterCredentials(pki),
  });
  const address = await ps.start();
  try {
    const tls = ['--tls-ca', pki.ca, '--tls-cert', pki.cert, '--tls-key', pki.key];
    const ok = await spngd(['status', address, ...tls, '--token-file', pki.token]);
    t.is(ok.code, 0, ok.stderr);
    t.regex(ok.stdout, /^parameter_server ps-0 at localhost:\d+: ready, step 0/);
    oneClearLine(t, await spngd(['status', address, ...tls]), /bearer token is required.*give the cluster's token with --token-file/);
    oneClearLine(t, await spngd(['status', address, ...tls, '--token-file', pki.wrongToken]), /bearer token is required/);
    oneClearLine(t, await spngd(['status', address, '--token-file', pki.token]), new RegExp(`${address}: No connection established`));
  } finally {
    await ps.stop();
    await backend.dispose();
  }
});

test('unreadable or mismatched security files are one line; so are half the TLS flags', async (t) => {
  const pki = await makeTestPki(join(tmp, 'bad'));
  oneClearLine(
    t,
    await spngd(['worker', '--ps', 'localhost:1', '--tls-ca', join(tmp, 'nope.crt'), '--tls-cert', pki.cert, '--tls-key', pki.key]),
    /TLS CA .*nope\.crt: cannot read it \(ENOENT\)/,
  );
  oneClearLine(
    t,
    await spngd(['owner', '--ps', 'localhost:1', '--tls-ca', pki.ca, '--tls-cert', pki.cert, '--tls-key', pki.otherKey]),
    /TLS key .* does not belong to the certificate/,
  );
  oneClearLine(t, await spngd(['status', 'localhost:1', '--tls-ca', pki.ca]), /missing --tls-cert, --tls-key/);
  oneClearLine(t, await spngd(['ps', '--listen', 'localhost:0', '--data', dataDir, '--tls-cert', pki.cert]), /security: tlsCa, tlsCert and tlsKey go together/);
});

test('an actor listening beyond loopback without TLS logs a warning', async (t) => {
  const r = await spngd(['owner', '--ps', '127.0.0.1:1', '--listen', '0.0.0.0:0', '--join-timeout', '300', '--backend', 'gpu']);
  oneClearLine(t, r, /parameter server 127\.0\.0\.1:1 is unreachable/);
  t.true(
    logMessages(r).some((m) => m.level === 40 && /listening on 0\.0\.0\.0:0 without TLS/.test(m.msg)),
    r.stderr,
  );
});
