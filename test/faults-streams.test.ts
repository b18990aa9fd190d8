/**
 * Connections cut in the middle of a transfer (a TCP proxy drops both sockets while a large tensor
 * is on the wire), with real gRPC on loopback:
 * - an owner's preconditioner stream to the PS, mid-publish: the owner reopens it and sends again
 *   what the PS never answered, then its watermark;
 * - a worker's statistics stream to an owner, mid-step: the worker reconnects at once and sends
 *   the step's statistics again.
 * Either way every step still applies the preconditioners computed for it, no step sits out the
 * PS's preconditioner wait, and the PS ends holding the owner's newest versions.
 */
import test from 'ava';
import { fileURLToPath } from 'node:url';
import { FactorOwner } from '../src/actors/owner/factor-owner.js';
import { resolveTrainConfig } from '../src/config/schema.js';
import { capturingLogger, clusterBackend, startCluster } from './helpers/cluster.js';
import { cuttingProxy, type CuttingProxy } from './helpers/cutting-proxy.js';

const dataDir = fileURLToPath(new URL('../../shared/datasets/fashion-mnist', import.meta.url));
const STEPS = 10;
const WAIT_MS = 20000;

const cases = {
  'a preconditioner stream cut mid-publish': 'owner-to-ps',
  'a statistics stream cut mid-step': 'worker-to-owner',
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
    let proxy: CuttingProxy | undefined;
    const cluster = await startCluster({
      config,
      workers: 1,
      owners: 0,
      backend,
      trainSize: 2048,
      logger,
      onRecord: (r) => {
        if (r.type !== 'step') return;
        stepTimes.push(performance.now());
        versions.push(r.preconditionerVersions as Record<string, number>);
        if (r.step === 4) proxy?.arm();
      },
    });
    // The only owner: either it reaches the PS through the proxy, or it registers the proxy's
    // address, so that the worker's statistics go through it.
    let owner: FactorOwner | undefined;
    proxy = await cuttingProxy(() => (link === 'owner-to-ps' ? cluster.ps.address : owner!.address));
    owner = link === 'owner-to-ps'
      ? new FactorOwner({ ps: proxy.address, listen: '127.0.0.1:0', logger, backend })
      : new FactorOwner({ ps: cluster.ps.address, listen: '127.0.0.1:0', advertise: proxy.address, logger, backend });
    try {
      await owner.start();
      const t0 = performance.now();
      await cluster.ps.run();
      const slowest = Math.max(...stepTimes.map((x, i) => x - (i === 0 ? t0 : stepTimes[i - 1])));
      t.log(`cuts ${proxy.cuts()}; slowest step ${slowest.toFixed(0)} ms (wait limit ${WAIT_MS} ms)`);
      for (const l of messages.filter((m) => /cut off|again on the new stream|reconnecting|have not published/.test(m))) t.log(l);
      t.log(`versions used per step: ${versions.map((v) => Object.values(v).join('/')).join(' ')}`);

      t.is(proxy.cuts(), 1, 'the stream was cut once, mid-transfer');
      t.is(cluster.ps.step, STEPS);
      // Stale statistics off and synchronous preconditioners: step k applies every layer's k-th
      // inverse. Without the second send the step after the cut ran with the previous ones.
      versions.forEach((v, i) => t.deepEqual(Object.values(v), Object.values(v).map(() => i + 1), `step ${i + 1} used fresh preconditioners`));
      t.false(messages.some((m) => /have not published fresh preconditioners/.test(m)), 'the PS never waited out its preconditioner wait');
      t.true(slowest < WAIT_MS / 2, `slowest step ${slowest.toFixed(0)} ms`);
      const held = new Map(cluster.ps.state.snapshot().preconditioners.map((p) => [p.layer, p.version]));
      for (const [layer, p] of owner.state.preconditioners) t.is(held.get(layer), p.version, `${layer}: the PS holds the owner's newest version`);
    } finally {
      await owner.stop();
      await cluster.stop();
      proxy.close();
    }
  });
}
