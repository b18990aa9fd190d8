/**
 * Mutual TLS and the bearer token over real gRPC on loopback, with certificates made by
 * `spngd certs`'s code (host name localhost): a cluster whose actors all use mTLS and a token
 * trains to the single-process result while intruders try to get in, and every intruder is
 * refused: without a certificate, with one from another CA, or over plaintext the TLS handshake
 * fails (UNAVAILABLE); with a cluster certificate but no or a wrong token the call is refused
 * (UNAUTHENTICATED). Health checks answer without the token. No intruder joins, and the
 * parameters do not change.
 */
import test from 'ava';
import { status } from '@grpc/grpc-js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fetchState } from '../src/cli/status-command.js';
import { resolveTrainConfig } from '../src/config/schema.js';
import { loadSplit } from '../src/data/fashion-mnist.js';
import { buildModel } from '../src/nn/models.js';
import { Trainer } from '../src/train/trainer.js';
import { relativeError } from './helpers/backends.js';
import { clusterBackend, startCluster } from './helpers/cluster.js';
import { attack, clusterCredentials, healthCheck, healthClient, intruders, makeTestPki, type Attempts } from './helpers/security.js';

const dataDir = fileURLToPath(new URL('../data/fashion-mnist', import.meta.url));
const tmp = mkdtempSync(join(tmpdir(), 'spngd-security-'));
test.after.always(() => rmSync(tmp, { recursive: true, force: true }));

const trainLimit = 2048;
const config = resolveTrainConfig({
  seed: 5,
  batchSize: 256,
  steps: 5,
  data: { dir: dataDir, trainLimit },
  optimizer: { kind: 'spngd', lr: 0.05, kfac: { stale: { enabled: true, alpha: 0.5 } } },
  cluster: { waitForPreconditioners: true, minWorkers: 2, minOwners: 1, heartbeatMs: 200 },
});

async function singleProcess(): Promise<Record<string, Float32Array | number[]>> {
  const backend = await clusterBackend();
  try {
    const train = await loadSplit('train', { dir: dataDir, limit: trainLimit });
    const model = buildModel(config.model, config.seed);
    const trainer = new Trainer(config, model, backend, train, train);
    for (let s = 0; s < config.steps; s++) await trainer.step(s);
    return model.exportState();
  } finally {
    await backend.dispose();
  }
}

function expectStatus(t: import('ava').ExecutionContext, who: string, expected: status, got: Attempts): void {
  for (const [rpc, code] of Object.entries(got)) t.is(code, expected, `${who}: ${rpc} ended with ${status[code]}, expected ${status[expected]}`);
}

test('a cluster with mutual TLS and a token trains while intruders are refused; health answers without the token', async (t) => {
  const pki = await makeTestPki(tmp);
  const creds = clusterCredentials(pki);
  t.true(creds.tls && creds.token);
  const backend = await clusterBackend();
  const expected = await singleProcess();
  const cluster = await startCluster({ config, workers: 2, owners: 1, backend, trainSize: trainLimit, credentials: creds, host: 'localhost' });
  const seen = new Set(cluster.ps.membership.list().map((m) => m.id));
  cluster.ps.membership.on('change', (view: { members: { id: string }[] }) => view.members.forEach((m) => seen.add(m.id)));
  try {
    const ps = cluster.ps.address;
    const owner = cluster.owners[0].address;
    t.regex(ps, /^localhost:\d+$/);

    // Health checks answer with a cluster certificate and no token, on every actor (before
    // training: the PS and the workers report NOT_SERVING once they drain at the end).
    const noToken = clusterCredentials(pki, false);
    for (const address of [ps, owner, ...cluster.workers.map((w) => w.state.address)]) {
      t.is(await healthCheck(healthClient(address, noToken.channelCredentials(), noToken.clientOptions())), 'SERVING', `health of ${address}`);
    }

    // Intruders try everything while the cluster trains.
    const running = cluster.ps.run();
    const during = await Promise.all(intruders(pki).map(async (i, k) => ({ i, got: await attack(i, ps, owner, `intruder-${k}`) })));
    await running;
    for (const { i, got } of during) expectStatus(t, i.name, i.expected, got);

    // Trained over mTLS (statistics to the owner, preconditioners to the PS, gradients): the
    // same parameters as one process.
    t.is(cluster.ps.step, config.steps);
    const got = cluster.ps.parameters();
    for (const [name, values] of Object.entries(expected)) {
      const err = relativeError(got[name], values);
      t.true(err < 1e-4, `${name}: relative error ${err}`);
    }
    const state = cluster.ps.state.snapshot();
    t.true(state.preconditioners.length === 3 && state.preconditioners.every((p) => p.version >= 1), 'the owner published over mTLS');

    // After training: the same tries again; the parameters stay exactly as they were.
    const before = Object.fromEntries(Object.entries(cluster.ps.parameters()).map(([k, v]) => [k, Float32Array.from(v)]));
    for (const [k, i] of intruders(pki).entries()) expectStatus(t, `${i.name} (after training)`, i.expected, await attack(i, ps, owner, `intruder-after-${k}`));
    const after = cluster.ps.parameters();
    for (const [name, v] of Object.entries(before)) t.deepEqual(after[name], v, `${name} changed`);
    t.is(cluster.ps.step, config.steps);
    t.deepEqual(
      [...seen].filter((id) => id.startsWith('intruder')),
      [],
      'no intruder ever joined',
    );

    // The same tries with the cluster's certificate and token get through (the harness would see a breach).
    const member = { name: 'a cluster member', expected: status.OK, channel: () => creds.channelCredentials(), options: creds.clientOptions() };
    expectStatus(t, member.name, status.OK, await attack(member, ps, owner, 'member-check', ['join', 'downloadParameters', 'getState', 'reflection']));

    // Health still needs TLS: the handshake fails before any call.
    const [plaintext] = intruders(pki);
    t.is(await healthCheck(healthClient(ps, plaintext.channel())), status.UNAVAILABLE);

    // spngd status's client: with the token it reads the state, without it the error names the fix.
    const s = await fetchState(ps, 5000, creds);
    t.is(s.step, config.steps);
    const e = await t.throwsAsync(fetchState(owner, 5000, noToken));
    t.regex(e!.message, /bearer token is required.*--token-file/);
  } finally {
    await cluster.stop();
    await backend.dispose();
  }
});
