/**
 * Moving a layer's curvature between actors (FactorOwnerService.FetchLayerState): the running
 * statistic of each of its statistics as an upper triangle, with its schedule. Owners serve it
 * for layers they hand over; the PS serves it from the checkpoint it resumed from.
 */
import { Metadata, status, type ServerWritableStream } from '@grpc/grpc-js';
import { FastFactorOwnerServiceClient } from '../../transport/fast-services.js';
import { StatisticKind, type FetchLayerStateRequest, type FetchLayerStateResponse, type StatisticSchedule } from '../../gen/spngd/v1/factor_owner.js';
import { statisticShape, type CurvatureLayerSpec, type StatKind } from '../../kfac/factors.js';
import type { LayerCurvatureSnapshot } from '../../kfac/layer-curvature.js';
import type { ScheduleSnapshot } from '../../kfac/stale.js';
import type { TransportOptions } from '../../transport/channel-options.js';
import { failServerCall, TransportError } from '../../transport/errors.js';
import { ByteBudgetWriter } from '../../transport/flow.js';
import { envelopeTensor, TensorAssembler, toDense } from '../../transport/tensor-assembler.js';
import { INSECURE, type ActorCredentials } from './credentials.js';
import { sendSymmetric } from './tensor-io.js';

export const kindToWire: Record<StatKind, StatisticKind> = {
  A: StatisticKind.STATISTIC_KIND_A,
  G: StatisticKind.STATISTIC_KIND_G,
  F: StatisticKind.STATISTIC_KIND_BN_FISHER,
};
export const wireToKind = new Map<StatisticKind, StatKind>([
  [StatisticKind.STATISTIC_KIND_A, 'A'],
  [StatisticKind.STATISTIC_KIND_G, 'G'],
  [StatisticKind.STATISTIC_KIND_BN_FISHER, 'F'],
]);

export function scheduleToWire(layer: string, kind: StatKind, s: ScheduleSnapshot): StatisticSchedule {
  return {
    layer,
    kind: kindToWire[kind],
    interval: s.interval,
    lastRefreshStep: Math.max(0, s.lastStep ?? 0),
    nextRefreshStep: s.nextStep,
    lastDrift: s.lastDrift ?? 0,
  };
}

/** Serves FetchLayerState from `lookup` (undefined: NOT_FOUND). */
export async function serveLayerStates(
  call: ServerWritableStream<FetchLayerStateRequest, FetchLayerStateResponse>,
  lookup: (layer: string) => LayerCurvatureSnapshot | undefined,
  chunkBytes: number,
  holder: string,
): Promise<void> {
  try {
    const writer = new ByteBudgetWriter(call);
    for (const layer of call.request.layers) {
      const snap = lookup(layer);
      if (!snap) throw new TransportError(status.NOT_FOUND, 'bad_argument', `${holder} holds no state of layer ${layer}`);
      for (const st of snap.stats) {
        const shape = statisticShape(snap.spec, st.kind);
        const schedule = scheduleToWire(layer, st.kind, st.schedule);
        await sendSymmetric(writer, (tensor) => ({ schedule, tensor }), layer, st.running, shape.order, 0, chunkBytes, shape.blocks);
      }
    }
    await writer.end();
  } catch (err) {
    failServerCall(call, err);
  }
}

/** Fetches the states of `layers` from the actor at `address`. */
export async function fetchLayerStates(
  address: string,
  layers: string[],
  epoch: number,
  specs: Map<string, CurvatureLayerSpec>,
  transport: TransportOptions,
  timeoutMs = 10000,
  security: ActorCredentials = INSECURE,
): Promise<LayerCurvatureSnapshot[]> {
  const client = new FastFactorOwnerServiceClient(address, security.channelCredentials(), security.clientOptions(transport));
  try {
    const call = client.fetchLayerState({ layers, epoch }, new Metadata(), { deadline: Date.now() + timeoutMs });
    const assembler = new TensorAssembler();
    const out = new Map<string, LayerCurvatureSnapshot>();
    for await (const msg of call as AsyncIterable<FetchLayerStateResponse>) {
      const t = assembler.push(envelopeTensor(msg.tensor, msg.tensor?.version ?? 0, 'tensor.version'));
      if (!t || !msg.schedule) continue;
      const kind = wireToKind.get(msg.schedule.kind);
      const spec = specs.get(t.name);
      if (!kind || !spec || t.name !== msg.schedule.layer) throw new Error(`unexpected statistic ${t.name}/${msg.schedule.kind}`);
      const full = Array.from(toDense(t));
      const s = msg.schedule;
      const snap = out.get(t.name) ?? { spec, version: 0, stats: [] };
      // The sender's running average also serves as the drift reference of the next refresh.
      snap.stats.push({
        kind,
        running: full,
        last: full,
        schedule: { interval: s.interval, nextStep: s.nextRefreshStep, refreshes: 1, lastStep: s.lastRefreshStep, lastDrift: s.lastDrift },
      });
      out.set(t.name, snap);
    }
    assembler.assertComplete();
    return [...out.values()];
  } finally {
    client.close();
  }
}
