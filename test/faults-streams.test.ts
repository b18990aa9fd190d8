/**
 * Connections cut in the middle of a transfer (a TCP proxy drops both sockets while a large tensor
 * is on the wire), with real gRPC on loopback:
 * - an owner's preconditioner stream to the PS, mid-publish: the owner reopens it and sends again
 *   what the PS never answered, then its watermark;
 * - a worker's statistics stream to an owner, mid-step: the worker reconnects at once and sends
 *   the step's statistics again;
 * - the only worker's train stream to the PS, mid-upload: no gradients arrived, so the PS runs the
 *   step again once the worker is back.
 * Either way every step still applies the preconditioners computed for it, no step sits out the
 * PS's preconditioner wait, and the PS ends holding the owner's newest versions.
 */
import test from 'ava';
import { fileURLToPath } from 'node:url';
import { FactorOwner } from '../src/actors/owner/factor-owner.js';
import { resolveTrainConfig } from '../src/config/schema.js';
import { Worker } from '../workers/worker-actor.js';
import { capturingLogger, clusterBackend, startCluster } from './helpers/cluster.js';
import { cuttingProxy, type CuttingProxy } from './helpers/cutting-proxy.js';

const dataDir = fileURLToPath(new URL('../data/fashion-mnist', import.meta.url));
const STEPS = 10;
const WAIT_MS = 20000;

const cases = {
  'a preconditioner stream cut mid-publish': 'owner-to-ps',
  'a statistics stream cut mid-step': 'worker-to-owner',
  'a train stream cut mid-upload': 'worker-to-ps',
} as const;

for (const [title, link] of Object.entries(cases)) {
  test.serial(`${title}: sent again on a new stream, every step keeps its fresh preconditioners`, async (t) => {
    const backend = await clusterBackend();
    const config = resolveTrainConfig({
      seed: 4,
      batchSize: 256,
      steps: STEPS,
      data: { dir: dataDir, trainLimit: 2048 },
      // Stale statistics off: every step sends statistics and publishes inverses, so the cut lands mid-transfer.
      optimizer: { kind: 'spngd', lr: 0.05, kfac: { stale: { enabled: false } } },
      cluster: { waitForPreconditioners: true, preconditionerWaitMs: WAIT_MS, minWorkers: 1, minOwners: 1, heartbeatMs: 200, leaseMs: 10000 },
    });
    const { logger, messages } = capturingLogger();
    const stepTimes: number[] = [];
    const versions: Record<string, number>[] = [];
    const stepNumbers: number[] = [];
    let proxy: CuttingProxy | undefined;
    const cluster = await startCluster({
      config,
      workers: 0,
      owners: 0,
      backend,
      trainSize: 2048,
      logger,
      onRecord: (r) => {
        if (r.type !== 'step') return;
        stepTimes.push(performance.now());
        stepNumbers.push(r.step as number);
        versions.push(r.preconditionerVersions as Record<string, number>);
        if (r.step === 4) proxy?.arm();
      },
    });
    // One owner and one worker; the link under test goes through the proxy: the owner reaches
    // the PS through it, or registers its address (the worker's statistics go through it), or
    // the worker reaches the PS through it.
    let owner: FactorOwner | undefined;
    proxy = await cuttingProxy(() => (link === 'worker-to-owner' ? owner!.address : cluster.ps.address));
    const listen = '127.0.0.1:0';
    owner = new FactorOwner({
      ps: link === 'owner-to-ps' ? proxy.address : cluster.ps.address,
      listen,
      logger,
      backend,
      ...(link === 'worker-to-owner' ? { advertise: proxy.address } : {}),
    });
    const worker = new Worker({ ps: link === 'worker-to-ps' ? proxy.address : cluster.ps.address, listen, logger, backend, id: 'worker-1' });
    try {
      await owner.start();
      await worker.start();
      const t0 = performance.now();
      await cluster.ps.run();
      const slowest = Math.max(...stepTimes.map((x, i) => x - (i === 0 ? t0 : stepTimes[i - 1])));
      t.log(`cuts ${proxy.cuts()}; slowest step ${slowest.toFixed(0)} ms (wait limit ${WAIT_MS} ms)`);
      for (const l of messages.filter((m) => /cut off|again on the new stream|reconnecting|runs again|train stream to the PS broke|have not published/.test(m)))
        t.log(l);
      t.log(`versions used per step: ${versions.map((v) => Object.values(v).join('/')).join(' ')}`);

      t.is(proxy.cuts(), 1, 'the stream was cut once, mid-transfer');
      t.is(cluster.ps.step, STEPS);
      t.deepEqual(
        stepNumbers,
        Array.from({ length: STEPS }, (_, i) => i + 1),
        'every step recorded once',
      );
      // Stale statistics off and synchronous preconditioners: step k applies every layer's k-th
      // inverse. Without the second send the step after the cut ran with the previous ones.
      versions.forEach((v, i) =>
        t.deepEqual(
          Object.values(v),
          Object.values(v).map(() => i + 1),
          `step ${i + 1} used fresh preconditioners`,
        ),
      );
      t.false(
        messages.some((m) => /have not published fresh preconditioners/.test(m)),
        'the PS never waited out its preconditioner wait',
      );
      t.true(slowest < WAIT_MS / 2, `slowest step ${slowest.toFixed(0)} ms`);
      const held = new Map(cluster.ps.state.snapshot().preconditioners.map((p) => [p.layer, p.version]));
      for (const [layer, p] of owner.state.preconditioners) t.is(held.get(layer), p.version, `${layer}: the PS holds the owner's newest version`);
    } finally {
      await worker.stop();
      await owner.stop();
      await cluster.stop();
      proxy.close();
    }
  });
}
