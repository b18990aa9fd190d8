/**
 * Layers moving between owners. On a new assignment the layers that moved away are kept as
 * snapshots for their new owners to fetch (FetchLayerState), and the gained ones are taken over
 * with the state of their previous owner, else of the PS (from the checkpoint it resumed from),
 * else afresh.
 */
import { status, type ServerWritableStream } from '@grpc/grpc-js';
import type { FetchLayerStateRequest, FetchLayerStateResponse } from '../../gen/spngd/v1/factor_owner.js';
import type { MembershipView } from '../../gen/spngd/v1/membership.js';
import type { LayerCurvatureSnapshot } from '../../kfac/layer-curvature.js';
import { failServerCall, TransportError } from '../../transport/errors.js';
import type { Logger } from '../../util/log.js';
import type { ActorCredentials } from '../common/credentials.js';
import { fetchLayerStates, serveLayerStates } from '../common/layer-state.js';
import { transportOf } from '../common/transport-of.js';
import type { OwnerJob } from './owner-job.js';

/** How long a layer that moved away stays fetchable, ms. */
const HANDOFF_KEEP_MS = 60000;
/** How long fetching a gained layer's state may take, ms. */
const FETCH_TIMEOUT_MS = 5000;

export interface LayerHandoverOptions {
  ps: string;
  logger: Logger;
  security: ActorCredentials;
  /** This owner's id. */
  id(): string;
  /** The joined job (undefined while joining). */
  job(): OwnerJob | undefined;
}

export class LayerHandover {
  /** Layers that moved away, until their new owner has fetched them. */
  private readonly handoff = new Map<string, LayerCurvatureSnapshot>();
  /** Members that left stay reachable for a while (hand-over): every address seen. */
  private readonly addresses = new Map<string, string>();

  constructor(private readonly opts: LayerHandoverOptions) {}

  /** Whether layers that moved away are still waiting to be fetched. */
  get pending(): boolean {
    return this.handoff.size > 0;
  }

  /** Hands off the layers `view` moved away and takes over the ones it gave us; returns the gained ones. */
  async follow(job: OwnerJob, view: MembershipView): Promise<string[]> {
    const { logger } = this.opts;
    const me = this.opts.id();
    for (const m of view.members) this.addresses.set(m.id, m.address);
    const mine = new Set((view.assignment?.layers ?? []).filter((l) => l.ownerId === me).map((l) => l.layer));
    for (const name of job.layers()) {
      if (!mine.has(name)) {
        this.handoff.set(name, job.curvature.layers.get(name)!.snapshot());
        job.curvature.remove(name);
        logger.info(`layer ${name} moved away (epoch ${view.epoch})`);
        setTimeout(() => this.handoff.delete(name), HANDOFF_KEEP_MS).unref();
      }
    }
    const gained = [...mine].filter((n) => !job.curvature.layers.has(n) && job.specs.has(n));
    for (const name of gained) {
      const c = job.curvature.add(job.specs.get(name)!);
      const from = view.assignment?.layers.find((l) => l.layer === name)?.previousOwnerId;
      const fromAddr = from ? this.addresses.get(from) : undefined;
      let how = 'fresh statistics';
      // A layer that comes back is not restored from this owner's own copy: it is older than what
      // the owner in between holds.
      this.handoff.delete(name);
      // The previous owner if it is still there, else the PS (which holds the layer's state from
      // the checkpoint it resumed from, if any).
      for (const [who, address] of [
        [from, fromAddr],
        ['the parameter server', this.opts.ps],
      ] as const) {
        if (!who || !address || who === me) continue;
        try {
          const [snap] = await fetchLayerStates(address, [name], view.epoch, job.specs, transportOf(job.config.cluster), FETCH_TIMEOUT_MS, this.opts.security);
          if (snap) {
            c.restore(snap);
            how = `state fetched from ${who}`;
            break;
          }
        } catch (err) {
          how = `${how}; ${who} could not hand over: ${(err as Error).message.split('\n')[0]}`;
        }
      }
      logger.info(`took layer ${name} in epoch ${view.epoch} with ${how}`);
    }
    for (const name of gained) job.curvature.layers.get(name)?.deferTo(view.firstStep);
    return gained;
  }

  /** FetchLayerState: a layer that moved away, or one still held (its new owner asks early). */
  serve(call: ServerWritableStream<FetchLayerStateRequest, FetchLayerStateResponse>): void {
    const job = this.opts.job();
    if (!job) {
      failServerCall(call, new TransportError(status.UNAVAILABLE, 'closed', 'this owner is still joining the job; try again'));
      return;
    }
    void serveLayerStates(
      call,
      (layer) => this.handoff.get(layer) ?? job.curvature.layers.get(layer)?.snapshot(),
      job.config.cluster.chunkBytes,
      `owner ${this.opts.id()}`,
    ).then(() => {
      for (const layer of call.request.layers) this.handoff.delete(layer);
    });
  }
}
