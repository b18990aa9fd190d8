/**
 * The PS's checkpoints: a write holds the parameters, momentum and every layer's curvature
 * fetched from its owner; a resume restores the parameters and momentum and keeps the layers'
 * curvature to hand to the owners that take the layers (FetchLayerState on the PS).
 */
import { curvatureSpecOf } from '../../kfac/factors.js';
import { status } from '@grpc/grpc-js';
import { CheckpointError } from '../../checkpoint/format.js';
import { loadLatestState } from '../../checkpoint/latest-state.js';
import { writeCheckpoint } from '../../checkpoint/safe-write.js';
import { stateToCheckpoint, type TrainingState } from '../../checkpoint/training-state.js';
import type { TrainConfig } from '../../config/schema.js';
import type { FactorOwnerServiceServer } from '../../gen/spngd/v1/factor_owner.js';
import type { LayerCurvatureSnapshot } from '../../kfac/layer-curvature.js';
import type { Sequential } from '../../nn/sequential.js';
import type { MomentumUpdater } from '../../optim/momentum.js';
import { removeStaleTemporaries } from '../../run/output.js';
import type { Logger } from '../../util/log.js';
import type { ActorStateTracker } from '../common/actor-state.js';
import type { ActorCredentials } from '../common/credentials.js';
import { fetchLayerStates, serveLayerStates } from '../common/layer-state.js';
import { transportOf } from '../common/transport-of.js';
import type { Membership } from './membership.js';

export interface PsCheckpointsOptions {
  /** The run directory (none: no checkpoints). */
  dir: string | undefined;
  config: TrainConfig;
  model: Sequential;
  updater: MomentumUpdater;
  membership: Membership;
  state: ActorStateTracker;
  logger: Logger;
  credentials: ActorCredentials | undefined;
}

export class PsCheckpoints {
  /** Layer states from the checkpoint this PS resumed from, served to owners that take the layers. */
  private readonly curvature = new Map<string, LayerCurvatureSnapshot>();

  constructor(private readonly opts: PsCheckpointsOptions) {}

  get enabled(): boolean {
    return this.opts.dir !== undefined;
  }

  /** Removes the temporary files a process killed while writing left in the run directory. */
  removeTemporaries(): void {
    if (!this.opts.dir) return;
    const removed = removeStaleTemporaries(this.opts.dir);
    if (removed.length > 0) this.opts.logger.warn(`removed ${removed.length} temporary file(s) left by a process killed while writing: ${removed.join(', ')}`);
  }

  /** Restores the model and momentum of the newest good checkpoint; returns its state (step, run bookkeeping). */
  restore(): TrainingState {
    const dir = this.opts.dir;
    if (!dir) throw new CheckpointError('--resume needs the run directory (--out)');
    const { state, file } = loadLatestState(dir, this.opts.logger);
    this.opts.model.importState(state.model);
    this.opts.updater.restore({ previousLr: state.previousLr, velocity: state.velocity });
    for (const c of state.curvature) this.curvature.set(c.spec.name, c);
    this.opts.logger.info(`resumed from ${file} at step ${state.step}`);
    return state;
  }

  /**
   * Writes the checkpoint of `step` with `extra` (run bookkeeping); a layer whose owner does not
   * answer keeps the state of the previous checkpoint, if any.
   */
  async write(step: number, extra: Record<string, unknown>): Promise<string | undefined> {
    const dir = this.opts.dir;
    if (!dir) return undefined;
    const { model, updater, config, state, logger } = this.opts;
    const curvature = new Map(this.curvature);
    await state.timings.time('checkpoint_fetch', () => this.fetchCurvature(curvature));
    const u = updater.snapshot();
    return writeCheckpoint(
      dir,
      step,
      () =>
        stateToCheckpoint({
          step,
          model: model.exportState(),
          velocity: u.velocity,
          previousLr: u.previousLr,
          curvature: [...curvature.values()],
          extra,
        }),
      config.checkpointKeep,
      logger,
      state.warnings,
    );
  }

  /** FactorOwnerService with only FetchLayerState: owners that take a layer after a resume get its state here. */
  service(): FactorOwnerServiceServer {
    return {
      pushStatistics: (call) =>
        call.emit('error', { code: status.UNIMPLEMENTED, details: "the parameter server does not reduce statistics; send them to the layer's owner" }),
      fetchLayerState: (call) =>
        void serveLayerStates(call, (layer) => this.curvature.get(layer), this.opts.config.cluster.chunkBytes, 'the parameter server (no checkpoint)'),
    };
  }

  /** Every layer's curvature from its current owner, into `into`. */
  private async fetchCurvature(into: Map<string, LayerCurvatureSnapshot>): Promise<void> {
    const { model, membership, config, logger, credentials } = this.opts;
    const specs = new Map(model.kfacLayers().map((l) => [l.name, curvatureSpecOf(l)]));
    const byOwner = new Map<string, string[]>();
    for (const l of membership.layerAssignment().layers) if (l.ownerId) byOwner.set(l.ownerId, [...(byOwner.get(l.ownerId) ?? []), l.layer]);
    await Promise.all(
      [...byOwner].map(async ([owner, layers]) => {
        const address = membership.get(owner)?.address;
        if (!address) return;
        try {
          for (const snap of await fetchLayerStates(address, layers, membership.epoch, specs, transportOf(config.cluster), undefined, credentials))
            into.set(snap.spec.name, snap);
        } catch (err) {
          logger.warn(`checkpoint: could not fetch ${layers.join(', ')} from ${owner}: ${(err as Error).message}`);
        }
      }),
    );
  }
}
