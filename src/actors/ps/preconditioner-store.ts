/**
 * The preconditioners the owners published to the PS: the PublishPreconditioners streams, each
 * layer's newest accepted version (within its owner's tenure of the layer), the owners'
 * watermarks, and the wait for every owner to be past a step (`waitPast`).
 */
import { status, type ServerDuplexStream } from '@grpc/grpc-js';
import { Role, type MembershipView } from '../../gen/spngd/v1/membership.js';
import {
  PreconditionerFactor,
  type PreconditionerCommit,
  type PublishPreconditionersRequest,
  type PublishPreconditionersResponse,
} from '../../gen/spngd/v1/parameter_server.js';
import type { KfacLayerInfo } from '../../nn/types.js';
import type { Preconditioner } from '../../kfac/preconditioner.js';
import { TransportError } from '../../transport/errors.js';
import { type TensorChunk, TensorEncoding } from '../../gen/spngd/v1/tensor.js';
import { factorDims, hasStatistic, inverseShape, preconditionerFits } from '../../kfac/factors.js';
import { envelopeTensor, TensorAssembler } from '../../transport/tensor-assembler.js';
import { factorToKind } from '../common/preconditioner-wire.js';
import type { Logger } from '../../util/log.js';
import type { ActorStateTracker } from '../common/actor-state.js';
import { deferred } from '../common/deferred.js';
import { waitUntilOrTimeout } from '../common/wait-until.js';
import { decodePreconditioner, type OutgoingPreconditioner } from '../common/preconditioner-wire.js';
import { preconditionerProblem, versionProblem } from '../common/value-checks.js';
import type { Admission } from './admission.js';
import type { Membership } from './membership.js';
import { acceptSession } from '../common/server-session.js';

interface HeldPreconditioner {
  preconditioner: Preconditioner;
  version: number;
  computedFromStep: number;
  ownerId: string;
  /** The membership epoch since which ownerId held the layer when it sent it (see `tenures`). */
  tenure: number;
}

type PendingFactors = Map<PreconditionerFactor, { values: Float32Array; shape: number[] }>;

/** One owner's publish stream: who, its session secret, chunks being assembled, factors awaiting their commit. */
interface PublishSession {
  ownerId: string;
  secret: string;
  assembler: TensorAssembler;
  pending: Map<string, PendingFactors>;
}

export interface PreconditionerStoreOptions {
  layers: readonly KfacLayerInfo[];
  membership: Membership;
  admission: Admission;
  state: ActorStateTracker;
  logger: Logger;
  /** Damping the owners invert with: a preconditioner that could not come from it is refused. */
  damping: number;
  /** Longest wait of `waitPast` for owners that are behind. */
  waitMs: number;
  /** The step in progress: a version computed from a later step is refused. */
  step: () => number;
}

export class PreconditionerStore {
  private readonly held = new Map<string, HeldPreconditioner>();
  /**
   * Layer → its owner and the membership epoch since which it holds the layer. An owner's versions
   * of a layer only grow while it keeps the layer: one that takes it again (after it moved away,
   * or after the owner joined again) may start over from its own count or from another owner's.
   */
  private readonly tenures = new Map<string, { ownerId: string; since: number }>();
  /** Owner → its watermark and the membership epoch it was sent in. */
  private readonly watermarks = new Map<string, { next: number; epoch: number }>();
  /** Newest stale-statistics interval of every statistic, as the owners report them. */
  private readonly statIntervals = new Map<string, number>();
  private watermarkChange = deferred<void>();

  constructor(private readonly opts: PreconditionerStoreOptions) {}

  /** The newest accepted preconditioner of every layer that has one. */
  current(): Map<string, Preconditioner> {
    return new Map([...this.held].map(([k, v]) => [k, v.preconditioner]));
  }

  /** Forgets every preconditioner, tenure and watermark (the PS went back to a checkpoint: they are of later steps). */
  clear(): void {
    this.held.clear();
    this.tenures.clear();
    this.watermarks.clear();
    this.statIntervals.clear();
    this.opts.state.preconditioners.clear();
    this.wake();
  }

  /** The current preconditioners of `layers` as they go on a stream (relayed to the PS shard that holds them). */
  outgoing(layers: ReadonlySet<string>): OutgoingPreconditioner[] {
    return [...this.held]
      .filter(([layer]) => layers.has(layer))
      .map(([layer, h]) => ({
        layer,
        preconditioner: h.preconditioner,
        version: h.version,
        computedFromStep: h.computedFromStep,
        epoch: this.opts.membership.epoch,
        damping: this.opts.damping,
      }));
  }

  /** Layer → version of its current preconditioner (the step record's `preconditionerVersions`). */
  versions(): Record<string, number> {
    return Object.fromEntries([...this.held].map(([k, v]) => [k, v.version]));
  }

  /** Statistic → its newest stale-statistics interval; undefined before any owner reported one. */
  intervals(): Record<string, number> | undefined {
    return this.statIntervals.size > 0 ? Object.fromEntries(this.statIntervals) : undefined;
  }

  /**
   * Waits (at most `waitMs`) until every owner's watermark, sent after it settled the current
   * assignment, is past step s; after that the step uses the last preconditioners.
   */
  async waitPast(s: number): Promise<void> {
    const m = this.opts.membership;
    const behind = () =>
      m
        .list(Role.ROLE_FACTOR_OWNER)
        .map((o) => o.id)
        .filter((id) => {
          const w = this.watermarks.get(id);
          return !w || w.epoch < m.epoch || w.next <= s;
        });
    const fresh = await waitUntilOrTimeout(() => behind().length === 0, {
      deadline: Date.now() + this.opts.waitMs,
      what: `owners' watermarks past step ${s}`,
      changed: () => (this.watermarkChange = deferred<void>()).promise,
    });
    if (!fresh) this.opts.logger.warn(`step ${s}: owners ${behind().join(', ')} have not published fresh preconditioners; using the last ones`);
  }

  /** Ends a `waitPast` early (it checks again). */
  wake(): void {
    this.watermarkChange.resolve();
  }

  /** Starts the tenure of every layer that changed owner; forgets the watermarks of owners that left. */
  onMembershipChange(view: MembershipView): void {
    for (const l of view.assignment?.layers ?? []) {
      if (this.tenures.get(l.layer)?.ownerId !== l.ownerId) this.tenures.set(l.layer, { ownerId: l.ownerId, since: view.epoch });
    }
    const owners = new Set(this.opts.membership.list(Role.ROLE_FACTOR_OWNER).map((o) => o.id));
    for (const id of this.watermarks.keys()) if (!owners.has(id)) this.watermarks.delete(id);
    this.wake();
  }

  onPublishStream(call: ServerDuplexStream<PublishPreconditionersRequest, PublishPreconditionersResponse>): void {
    acceptSession(call, {
      rpc: 'PublishPreconditioners',
      what: 'preconditioner stream',
      logger: this.opts.logger,
      open: (hello): PublishSession => ({
        ownerId: hello.ownerId,
        secret: this.hello(call, hello.ownerId),
        assembler: new TensorAssembler(),
        pending: new Map(),
      }),
      label: (session) => session.ownerId,
      onMessage: (session, m) => {
        const { ownerId, secret, assembler, pending } = session;
        switch (m.$case) {
          case 'chunk': {
            const c = m.value;
            const chunk = envelopeTensor(c.tensor, c.version, 'PreconditionerChunk.version');
            this.checkHeader(c.layer, c.factor, chunk);
            const t = assembler.push(chunk);
            if (t) {
              if (t.name !== c.layer)
                throw new TransportError(status.INVALID_ARGUMENT, 'header_mismatch', `chunk of layer ${c.layer} carries tensor ${t.name}`);
              const f = pending.get(c.layer) ?? new Map();
              f.set(c.factor, { values: t.values, shape: t.shape });
              pending.set(c.layer, f);
            }
            return;
          }
          case 'commit': {
            const cm = m.value;
            const factors = pending.get(cm.layer);
            pending.delete(cm.layer);
            const reason = this.commit(ownerId, secret, cm, factors);
            if (reason) this.opts.logger.warn(`preconditioner ${cm.layer} v${cm.version} from ${ownerId} rejected: ${reason}`);
            call.write({ layer: cm.layer, version: cm.version, accepted: !reason, reason: reason ?? '' });
            return;
          }
          case 'watermark': {
            const w = m.value;
            const epoch = this.opts.membership.epoch;
            if (w.epoch > epoch)
              throw new TransportError(status.FAILED_PRECONDITION, 'bad_argument', `watermark of epoch ${w.epoch}, but the membership is at epoch ${epoch}`);
            // Keep the newest: an older one (from another stream of the same owner) must not make the PS wait for a fresh one.
            const held = this.watermarks.get(ownerId);
            if (held && w.epoch < held.epoch) return;
            this.watermarks.set(ownerId, { next: w.nextRefreshStep, epoch: w.epoch });
            for (const [stat, interval] of Object.entries(w.intervals)) this.statIntervals.set(stat, interval);
            this.wake();
            return;
          }
        }
      },
    });
  }

  private hello(call: ServerDuplexStream<PublishPreconditionersRequest, PublishPreconditionersResponse>, id: string): string {
    const member = this.opts.membership.get(id);
    if (!member) throw new TransportError(status.FAILED_PRECONDITION, 'bad_argument', `owner "${id}" has not joined`);
    if (member.role !== Role.ROLE_FACTOR_OWNER)
      throw new TransportError(
        status.FAILED_PRECONDITION,
        'bad_argument',
        `"${id}" is a member with role ${Role[member.role] ?? member.role}, not a factor owner`,
      );
    return this.opts.admission.authorize(call, id, 'publish');
  }

  /**
   * Takes a committed version of a layer's preconditioner; returns why not when it is not taken.
   * Values no owner sends end the stream (thrown, INVALID_ARGUMENT); races (a layer that just
   * moved, an older version) are answered.
   */
  private commit(ownerId: string, secret: string, cm: PreconditionerCommit, factors: PendingFactors | undefined): string | undefined {
    const { admission, membership } = this.opts;
    const ahead = versionProblem(cm.version, cm.computedFromStep, this.opts.step(), membership.epoch);
    if (ahead) throw admission.refuse(ownerId, 'version_ahead', status.INVALID_ARGUMENT, `preconditioner ${cm.layer.slice(0, 64)}: ${ahead}`);
    if (cm.epoch > membership.epoch)
      throw admission.refuse(
        ownerId,
        'epoch_ahead',
        status.INVALID_ARGUMENT,
        `preconditioner ${cm.layer.slice(0, 64)} of epoch ${cm.epoch}, but the membership is at epoch ${membership.epoch}`,
      );
    if (!factors) return 'no inverses received';
    if (!admission.current(ownerId, secret)) return `${ownerId} joined again since this stream was opened`;
    if (membership.ownerOf(cm.layer) !== ownerId) {
      const reason = `${ownerId} does not own ${cm.layer} in epoch ${membership.epoch}`;
      this.opts.state.refuse('not_layer_owner', ownerId, reason);
      return reason;
    }
    const held = this.held.get(cm.layer);
    const tenure = this.tenures.get(cm.layer)?.since ?? 0;
    if (held && held.ownerId === ownerId && held.tenure === tenure && held.version >= cm.version)
      return `version ${cm.version} is not newer than ${held.version}`;
    let p: Preconditioner;
    try {
      p = decodePreconditioner(cm.layer, factors, cm);
      const layer = this.opts.layers.find((l) => l.name === cm.layer);
      if (!layer) throw new RangeError(`unknown layer ${cm.layer}`);
      if (!preconditionerFits(layer, p)) throw new RangeError(`preconditioner of ${cm.layer} does not match the layer's shape`);
    } catch (err) {
      if (err instanceof TransportError) throw err;
      return (err as Error).message;
    }
    const bad = preconditionerProblem(p, this.opts.damping);
    if (bad) throw admission.refuse(ownerId, 'bad_preconditioner', status.INVALID_ARGUMENT, `preconditioner ${cm.layer} v${cm.version}: ${bad}`);
    this.held.set(cm.layer, { preconditioner: p, version: cm.version, computedFromStep: cm.computedFromStep, ownerId, tenure });
    this.opts.state.preconditioners.set(cm.layer, {
      layer: cm.layer,
      version: cm.version,
      computedFromStep: cm.computedFromStep,
      ownerId,
      updatedUnixMs: Date.now(),
    });
    return undefined;
  }

  /**
   * A preconditioner chunk must carry a factor of one of the model's K-FAC layers, as the upper
   * triangles of its order: checked before the codec reserves memory for the tensor.
   */
  private checkHeader(layerName: string, factor: PreconditionerFactor, chunk: TensorChunk): void {
    const layer = this.opts.layers.find((l) => l.name === layerName);
    if (!layer)
      throw new TransportError(status.INVALID_ARGUMENT, 'bad_name', `preconditioner of "${layerName.slice(0, 64)}", which is not a K-FAC layer of the model`);
    const kind = factorToKind.get(factor);
    if (!kind || !hasStatistic(layer, kind))
      throw new TransportError(
        status.INVALID_ARGUMENT,
        'bad_argument',
        `factor ${PreconditionerFactor[factor] ?? factor} is not one of layer ${layerName} (${layer.kind})`,
      );
    const shape = factorDims(inverseShape(layer, kind));
    if (chunk.name !== layerName)
      throw new TransportError(status.INVALID_ARGUMENT, 'header_mismatch', `chunk of layer ${layerName} carries tensor ${chunk.name.slice(0, 64)}`);
    if (
      chunk.encoding !== TensorEncoding.TENSOR_ENCODING_SYMMETRIC_UPPER ||
      chunk.shape.length !== shape.length ||
      chunk.shape.some((d, i) => d !== shape[i])
    ) {
      throw new TransportError(
        status.INVALID_ARGUMENT,
        'bad_shape',
        `${layerName}/${PreconditionerFactor[factor]}: shape [${chunk.shape.slice(0, 9)}] (${TensorEncoding[chunk.encoding] ?? chunk.encoding}) where symmetric-upper [${shape}] was expected`,
      );
    }
  }
}
