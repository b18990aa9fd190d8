/**
 * A worker's statistics streams to the factor owners: one to every owner of a layer in the view,
 * each carrying the owner's schedules back. Before a step the worker waits for every owner to
 * have settled the assignment and reduced what it was sent; after the step it sends each owner
 * the due statistics of its layers. A stream that breaks is reopened with backoff, and the newest
 * step's statistics go again on the new one (the owner drops them if it has reduced that step).
 */
import { Metadata } from '@grpc/grpc-js';
import type { FactorOwnerServiceClient, PushStatisticsRequest, PushStatisticsResponse, StatisticSchedule } from '../../src/gen/spngd/v1/factor_owner.js';
import type { MembershipView } from '../../src/gen/spngd/v1/membership.js';
import type { ActorStateTracker } from '../../src/actors/common/actor-state.js';
import type { ActorCredentials } from '../../src/actors/common/credentials.js';
import { deferred, type Deferred } from '../../src/actors/common/deferred.js';
import { kindToWire, wireToKind } from '../../src/actors/common/layer-state.js';
import { Reconnector } from '../../src/actors/common/reconnect.js';
import { StreamSession } from '../../src/actors/common/stream-session.js';
import { sendSymmetric } from '../../src/actors/common/tensor-io.js';
import { waitUntilOrTimeout } from '../../src/actors/common/wait-until.js';
import type { TrainConfig } from '../../src/config/schema.js';
import { type CurvatureLayerSpec, dueKinds, layerStatKinds, type StatKind, statisticShape, statKey, statKinds } from '../../src/kfac/factors.js';
import type { TransportOptions } from '../../src/transport/channel-options.js';
import { FastFactorOwnerServiceClient } from '../../src/transport/fast-services.js';
import type { Logger } from '../../src/util/log.js';

interface OwnerLink {
  ownerId: string;
  address: string;
  client: FactorOwnerServiceClient;
  session: StreamSession<PushStatisticsRequest, PushStatisticsResponse>;
  schedules: Map<string, StatisticSchedule>;
  /** Steps the owner has reduced (all below `acked`), and the newest step we sent statistics for. */
  acked: number;
  lastSent: number;
  /** Membership epoch whose assignment the owner had settled when it sent its schedules. */
  epoch: number;
  changed: Deferred<void>;
  broken: boolean;
  /** Sends on this stream, one after another (two steps' chunks of a layer must not interleave). */
  sending: Promise<void>;
}

/** The statistics of the newest step, kept until the next one: sent again on a reopened stream. */
interface StepStatistics {
  step: number;
  shardCount: number;
  samples: number;
  stats: Map<string, Float32Array>;
}

export interface OwnerLinksOptions {
  config: TrainConfig;
  logger: Logger;
  security: ActorCredentials;
  transport: TransportOptions;
  state: ActorStateTracker;
  /** The membership view the worker follows (its assignment says which owner has which layer). */
  view(): MembershipView | undefined;
  /** Shapes of the model's K-FAC layers. */
  specs(): Map<string, CurvatureLayerSpec>;
}

export class OwnerLinks {
  private readonly links = new Map<string, OwnerLink>();
  /** Owner → its reconnection backoff, kept across the links that replace each other. */
  private readonly reconnectors = new Map<string, Reconnector>();
  private lastStatistics: StepStatistics | undefined;
  private stopped = false;

  constructor(private readonly opts: OwnerLinksOptions) {}

  /** Follows the assignment: a stream to every owner that owns a layer (a new one if its address changed). */
  follow(view: MembershipView): void {
    const needed = new Map<string, string>();
    for (const l of view.assignment?.layers ?? []) {
      const m = view.members.find((x) => x.id === l.ownerId);
      if (m) needed.set(m.id, m.address);
    }
    for (const [id, link] of this.links) {
      if (needed.get(id) !== link.address || link.broken) {
        this.close(link);
        this.links.delete(id);
      }
    }
    for (const [id, r] of this.reconnectors) {
      if (needed.has(id)) continue;
      r.cancel();
      this.reconnectors.delete(id);
    }
    for (const [id, address] of needed) if (!this.links.has(id)) this.open(id, address);
  }

  /** Closes every stream (the PS forgot us: the links follow its new view from scratch). */
  closeAll(): void {
    for (const link of this.links.values()) this.close(link);
    this.links.clear();
  }

  stop(): void {
    this.stopped = true;
    for (const r of this.reconnectors.values()) r.cancel();
    for (const link of this.links.values()) this.close(link);
  }

  /**
   * Layer → statistics due at step s, once every owner has settled the step's assignment (taken
   * over its layers) and reduced what we sent it. An owner that does not answer within
   * `cluster.preconditionerWaitMs` is passed over (its layers compute nothing this step).
   */
  async dueStatistics(s: number, epoch: number): Promise<Map<string, StatKind[]>> {
    const due = new Map<string, StatKind[]>();
    if (this.opts.config.optimizer.kind !== 'spngd') return due;
    this.reopenBroken();
    const deadline = Date.now() + this.opts.config.cluster.preconditionerWaitMs;
    for (const layer of this.opts.view()?.assignment?.layers ?? []) {
      const link = this.links.get(layer.ownerId);
      if (!link) continue;
      const answered = await waitUntilOrTimeout(() => (link.acked > link.lastSent && link.epoch >= epoch) || link.broken, {
        deadline,
        what: `owner ${link.ownerId}'s answer`,
        changed: () => link.changed.promise,
      });
      if (!answered) this.opts.logger.warn(`step ${s}: owner ${link.ownerId} has not answered; its statistics are skipped this step`);
      const kinds = dueKinds(statKinds, (k) => link.schedules.get(statKey(layer.layer, k))?.nextRefreshStep, s);
      if (kinds.length > 0) due.set(layer.layer, kinds);
    }
    return due;
  }

  /** Sends a step's statistics to every owner (each its layers'), and keeps them for a reopened stream. */
  async send(s: number, shardCount: number, samples: number, stats: Map<string, Float32Array>): Promise<void> {
    const step: StepStatistics = { step: s, shardCount, samples, stats };
    this.lastStatistics = step;
    await Promise.all([...this.links.values()].map((link) => this.sendTo(link, step)));
  }

  private open(ownerId: string, address: string): OwnerLink {
    const { security, state } = this.opts;
    const client = new FastFactorOwnerServiceClient(address, security.channelCredentials(), security.clientOptions(this.opts.transport));
    const link: OwnerLink = {
      ownerId,
      address,
      client,
      session: new StreamSession<PushStatisticsRequest, PushStatisticsResponse>(
        client.pushStatistics(new Metadata()),
        { kind: { $case: 'hello', value: { workerId: state.id, epoch: state.epoch } } },
        { onMessage: (r) => this.onAnswer(link, r), onEnd: (why) => this.broke(link, why) },
      ),
      schedules: new Map(),
      acked: 0,
      lastSent: -1,
      epoch: 0,
      changed: deferred<void>(),
      broken: false,
      sending: Promise.resolve(),
    };
    this.links.set(ownerId, link);
    return link;
  }

  private onAnswer(link: OwnerLink, r: PushStatisticsResponse): void {
    this.reconnector(link.ownerId).succeeded();
    for (const sch of r.schedules) {
      const kind = wireToKind.get(sch.kind);
      if (kind) link.schedules.set(statKey(sch.layer, kind), sch);
    }
    link.acked = Math.max(link.acked, r.ackedStep);
    link.epoch = r.epoch;
    this.opts.state.schedules = [...this.links.values()].flatMap((o) => [...o.schedules.values()]);
    const d = link.changed;
    link.changed = deferred<void>();
    d.resolve();
  }

  private broke(link: OwnerLink, why: string): void {
    if (link.broken) return;
    link.broken = true;
    link.changed.resolve();
    if (this.stopped) return;
    // Reconnect now, not at the next step: the owner may be waiting for this step's statistics,
    // and the PS for that owner's preconditioners.
    const delay = this.reconnector(link.ownerId).schedule();
    this.opts.logger.warn(`statistics stream to ${link.ownerId} ended: ${why}; reconnecting in ${delay} ms`);
  }

  private reconnector(ownerId: string): Reconnector {
    let r = this.reconnectors.get(ownerId);
    if (!r) {
      r = new Reconnector(() => this.reconnect(ownerId));
      this.reconnectors.set(ownerId, r);
    }
    return r;
  }

  /**
   * Replaces a broken stream to an owner that is still in the view (a connection dropped) and
   * sends the newest step's statistics again: the owner drops them if it has reduced that step.
   */
  private reconnect(ownerId: string): void {
    const old = this.links.get(ownerId);
    if (this.stopped || !old?.broken) return; // stopped, or the view replaced it
    this.close(old);
    const link = this.open(ownerId, old.address);
    if (this.lastStatistics) void this.sendTo(link, this.lastStatistics);
  }

  /**
   * Opens again the statistics streams that broke while the membership stayed the same (a
   * connection dropped and came back) without waiting for their backoff: a view change reopens
   * them in follow(), but without one the owner would get nothing more from this worker.
   */
  private reopenBroken(): void {
    for (const link of [...this.links.values()]) if (link.broken) this.reconnector(link.ownerId).now();
  }

  private close(link: OwnerLink): void {
    link.broken = true;
    link.changed.resolve();
    link.session.close();
    link.client.close();
  }

  /** Sends a step's statistics of the owner's layers on its stream (after what is being sent there). */
  private sendTo(link: OwnerLink, step: StepStatistics): Promise<void> {
    link.sending = link.sending.then(() => this.write(link, step));
    return link.sending;
  }

  private async write(link: OwnerLink, { step: s, shardCount, samples, stats }: StepStatistics): Promise<void> {
    if (link.broken) return;
    const { state } = this.opts;
    const specs = this.opts.specs();
    let sent = 0;
    try {
      for (const layer of this.opts.view()?.assignment?.layers ?? []) {
        if (layer.ownerId !== link.ownerId) continue;
        const spec = specs.get(layer.layer)!;
        for (const kind of layerStatKinds(spec)) {
          const values = stats.get(statKey(layer.layer, kind));
          if (!values) continue;
          const shape = statisticShape(spec, kind);
          await sendSymmetric(
            link.session.writer,
            (tensor) => ({
              kind: {
                $case: 'statistic' as const,
                value: { step: s, workerId: state.id, layer: layer.layer, kind: kindToWire[kind], numSamples: samples, tensor },
              },
            }),
            layer.layer,
            values,
            shape.order,
            s,
            this.opts.config.cluster.chunkBytes,
            shape.blocks,
          );
          sent++;
        }
      }
      if (sent > 0) link.lastSent = s;
      await link.session.writer.write(
        { kind: { $case: 'statisticsComplete', value: { step: s, workerId: state.id, statisticTensors: sent, shardCount } } },
        64,
      );
    } catch (err) {
      this.opts.logger.warn(`statistics to ${link.ownerId} failed: ${(err as Error).message}`);
      link.broken = true;
      link.changed.resolve();
    }
  }
}
