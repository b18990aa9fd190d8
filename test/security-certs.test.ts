/**
 * `spngd certs`'s certificates (src/security/x509.ts, Node's crypto only) and the checks that
 * src/actors/common/credentials.ts makes when it reads the files: a bad file, a key that does not
 * match, a certificate from another CA, half of the TLS settings, an empty token are each one
 * clear SecurityError line. `openssl verify` checks the certificates too when openssl is there.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { exposureWarning, INSECURE, isLoopbackHost, loadCredentials, SecurityError } from '../src/actors/common/credentials.js';
import { CertsError, makeCerts, parseHosts } from '../src/cli/certs-command.js';
import { ConfigError, loadTrainConfig } from '../src/config/load.js';
import { createCertificateAuthority, ipBytes, issueCertificate } from '../src/security/x509.js';
import { clusterCredentials, makeTestPki } from './helpers/security.js';
import { identitiesInAltNames } from '../src/actors/common/identity.js';
import { Role } from '../src/gen/spngd/v1/membership.js';

const tmp = mkdtempSync(join(tmpdir(), 'spngd-certs-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));
let n = 0;
const dir = () => join(tmp, `d${n++}`);

const hasOpenssl = spawnSync('openssl', ['version']).status === 0;

test('a host certificate is issued by the CA, for server and client use, with its names', async (t) => {
  const ca = await createCertificateAuthority();
  const host = await issueCertificate(ca, ['worker-1', 'w1.example.org', '10.0.0.7', '::1']);
  const caX = new X509Certificate(ca.cert);
  const x = new X509Certificate(host.cert);
  t.true(caX.ca);
  t.false(x.ca);
  t.true(x.checkIssued(caX) && x.verify(caX.publicKey));
  t.is(x.subjectAltName, 'DNS:worker-1, DNS:w1.example.org, IP Address:10.0.0.7, IP Address:0:0:0:0:0:0:0:1');
  t.is(x.checkHost('w1.example.org'), 'w1.example.org');
  t.is(x.checkIP('10.0.0.7'), '10.0.0.7');
  t.deepEqual(x.keyUsage, ['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2']); // serverAuth, clientAuth
  t.true(Date.parse(x.validTo) > Date.now() + 800 * 86_400_000);
  // The role and id of an actor, as the PS reads them from a peer certificate.
  const owner = new X509Certificate((await issueCertificate(ca, ['localhost'], { identity: 'spngd://owner/owner-1' })).cert);
  t.is(owner.subjectAltName, 'DNS:localhost, URI:spngd://owner/owner-1');
  t.deepEqual(identitiesInAltNames(owner.subjectAltName), [{ role: Role.ROLE_FACTOR_OWNER, id: 'owner-1', uri: 'spngd://owner/owner-1' }]);
  t.true(owner.checkIssued(caX) && owner.verify(caX.publicKey));
  t.deepEqual([...ipBytes('::ffff:10.1.2.3')], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 2, 3]);
  t.deepEqual([...ipBytes('fe80::1:2')], [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2]);
});

test('makeCerts writes the CA and the hosts (keys private), reuses the CA, refuses to overwrite without force', async (t) => {
  const d = dir();
  const r = await makeCerts({ out: d, hosts: parseHosts('ps,worker-1+w1.example.org,localhost'), token: true });
  t.true(r.caCreated);
  for (const f of ['ca.crt', 'ps.crt', 'worker-1.crt', 'localhost.crt']) t.is(statSync(join(d, f)).mode & 0o777, 0o644, f);
  for (const f of ['ca.key', 'ps.key', 'worker-1.key', 'localhost.key', 'token']) t.is(statSync(join(d, f)).mode & 0o777, 0o600, f);
  t.regex(readFileSync(join(d, 'token'), 'utf8'), /^[A-Za-z0-9_-]{43}\n$/);
  const caBefore = readFileSync(join(d, 'ca.crt'), 'utf8');
  const again = await makeCerts({ out: d, hosts: parseHosts('owner-1') });
  t.false(again.caCreated);
  t.is(readFileSync(join(d, 'ca.crt'), 'utf8'), caBefore);
  const caX = new X509Certificate(caBefore);
  t.true(new X509Certificate(readFileSync(join(d, 'owner-1.crt'))).checkIssued(caX));
  await t.throwsAsync(makeCerts({ out: d, hosts: parseHosts('ps') }), { instanceOf: CertsError, message: /ps\.crt, .*ps\.key already exist .*--force/ });
  await t.notThrowsAsync(makeCerts({ out: d, hosts: parseHosts('ps'), force: true }));
  t.throws(() => parseHosts('bad_name'), { message: /"bad_name" is not a host name/ });
  t.throws(() => parseHosts('localhost+boss/x'), { message: /"boss\/x" is not ROLE\/ID/ });
  t.throws(() => parseHosts('owner/owner-1'), { message: /needs a host name besides its ROLE\/ID/ });
  const named = await makeCerts({ out: d, hosts: parseHosts('localhost+owner/owner-2') });
  t.true(named.files.some((f) => f.endsWith('owner-2.crt')));
  t.is(new X509Certificate(readFileSync(join(d, 'owner-2.crt'))).subjectAltName, 'DNS:localhost, URI:spngd://owner/owner-2');
  // Every certificate works for credentials.
  t.true(loadCredentials({ tlsCa: join(d, 'ca.crt'), tlsCert: join(d, 'owner-1.crt'), tlsKey: join(d, 'owner-1.key'), tokenFile: join(d, 'token') }).tls);
});

test('openssl accepts the certificates (strict X.509, TLS server and client purposes)', async (t) => {
  if (!hasOpenssl) {
    t.log('openssl is not installed: skipped');
    t.pass();
    return;
  }
  const d = dir();
  await makeCerts({
    out: d,
    hosts: [
      ['localhost', '127.0.0.1'],
      ['localhost', 'worker/worker-1'],
    ],
  });
  for (const file of ['localhost.crt', 'worker-1.crt']) {
    for (const purpose of ['sslserver', 'sslclient']) {
      const r = spawnSync('openssl', ['verify', '-x509_strict', '-purpose', purpose, '-CAfile', join(d, 'ca.crt'), join(d, file)], { encoding: 'utf8' });
      t.is(r.status, 0, `${file}: ${r.stdout}${r.stderr}`);
    }
  }
});

/** Exactly one line, naming what is wrong. */
function oneLine(t: import('ava').ExecutionContext, f: () => unknown, what: RegExp): void {
  const e = t.throws(f, { instanceOf: SecurityError });
  t.regex(e!.message, what);
  t.false(e!.message.includes('\n'), e!.message);
}

test('bad security files are one clear error line each', async (t) => {
  const p = await makeTestPki(dir());
  const junk = join(p.dir, 'junk.pem');
  writeFileSync(junk, 'hello\n');
  const empty = join(p.dir, 'empty-token');
  writeFileSync(empty, '\n\n');
  const spaced = join(p.dir, 'spaced-token');
  writeFileSync(spaced, 'two words\n');
  const tls = { tlsCa: p.ca, tlsCert: p.cert, tlsKey: p.key };
  oneLine(t, () => loadCredentials({ ...tls, tlsCa: join(p.dir, 'missing.crt') }), /^TLS CA .*missing\.crt: cannot read it \(ENOENT\)$/);
  oneLine(t, () => loadCredentials({ ...tls, tlsCert: junk }), /^TLS certificate .*junk\.pem: no PEM certificate in it/);
  oneLine(t, () => loadCredentials({ ...tls, tlsKey: junk }), /^TLS key .*junk\.pem: not a valid PEM private key/);
  oneLine(t, () => loadCredentials({ ...tls, tlsKey: p.otherKey }), /^TLS key .* does not belong to the certificate /);
  oneLine(t, () => loadCredentials({ ...tls, tlsCert: p.otherCert, tlsKey: p.otherKey }), /^TLS certificate .* was not issued by the CA in /);
  oneLine(t, () => loadCredentials({ ...tls, tlsCa: p.cert }), /is not a CA certificate/);
  oneLine(t, () => loadCredentials({ tlsCa: p.ca }), /needs --tls-ca, --tls-cert and --tls-key .*missing --tls-cert, --tls-key/);
  oneLine(t, () => loadCredentials({ tokenFile: empty }), /^token file .*: it is empty$/);
  oneLine(t, () => loadCredentials({ tokenFile: spaced }), /^token file .*: the token must be one word/);
  t.is(loadCredentials({}), INSECURE);
  const tokenOnly = loadCredentials({ tokenFile: p.token });
  t.true(tokenOnly.token && !tokenOnly.tls);
});

test('the security config section is validated; the three TLS keys go together', (t) => {
  const e = t.throws(() => loadTrainConfig(undefined, { security: { tlsCa: 'ca.crt', tlsKey: 'k' } }), { instanceOf: ConfigError });
  t.regex(e!.message, /security: tlsCa, tlsCert and tlsKey go together/);
  t.throws(() => loadTrainConfig(undefined, { security: { tlsCA: 'x' } }), { message: /unknown key security\.tlsCA/ });
  t.deepEqual(loadTrainConfig(undefined, {}).security, {});
});

test('listening beyond loopback without TLS is warned about', async (t) => {
  const p = await makeTestPki(dir());
  const tls = clusterCredentials(p);
  for (const h of ['localhost', '127.0.0.1', '127.1.2.3', '[::1]', 'ps.localhost']) t.true(isLoopbackHost(h.replace(/:\d+$/, '')), h);
  t.is(exposureWarning('127.0.0.1:7000', INSECURE), undefined);
  t.is(exposureWarning('[::1]:0', INSECURE), undefined);
  t.regex(exposureWarning('0.0.0.0:7000', INSECURE)!, /listening on 0\.0\.0\.0:7000 without TLS: any host .* can join the job/);
  t.regex(exposureWarning('ps1:7000', loadCredentials({ tokenFile: p.token }))!, /without TLS.*token is required, but it travels in clear text/);
  t.is(exposureWarning('0.0.0.0:7000', tls), undefined);
});
