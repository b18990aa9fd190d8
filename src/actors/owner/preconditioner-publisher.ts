/**
 * The owner's side of its preconditioner stream to the PS: inverts the damped factors that are
 * due and publishes each layer's inverses (chunks, then a commit with a version), then a
 * watermark saying which steps are final. A commit stays unanswered until the PS answers it; when
 * the stream breaks it is reopened with backoff and what went down with it is sent again.
 */
import { Metadata } from '@grpc/grpc-js';
import type { ComputeBackend } from '../../compute/backend.js';
import type { ParameterServerServiceClient, PublishPreconditionersRequest, PublishPreconditionersResponse } from '../../gen/spngd/v1/parameter_server.js';
import { effectiveDamping } from '../../kfac/preconditioner.js';
import type { PublishedPreconditioner } from '../../train/curvature-set.js';
import { type ByteBudgetWriter, StreamClosedError } from '../../transport/flow.js';
import { FastParameterServerServiceClient } from '../../transport/fast-services.js';
import type { Logger } from '../../util/log.js';
import type { ActorStateTracker } from '../common/actor-state.js';
import type { ActorCredentials } from '../common/credentials.js';
import type { MemberClient } from '../common/member-client.js';
import { sendPreconditioner } from '../common/preconditioner-wire.js';
import { Reconnector } from '../common/reconnect.js';
import { StreamSession } from '../common/stream-session.js';
import { transportOf } from '../common/transport-of.js';
import { preconditionerProblem } from '../common/value-checks.js';
import type { OwnerJob } from './owner-job.js';

export interface PublisherOptions {
  ps: string;
  logger: Logger;
  security: ActorCredentials;
  backend: ComputeBackend;
  /** Gives the session secret for the call's metadata. */
  member: MemberClient;
  state: ActorStateTracker;
  job: OwnerJob;
  /** Runs a task after the owner's queued ones (a publish under way finishes first). */
  enqueue(task: () => Promise<void>): Promise<void>;
}

type Session = StreamSession<PublishPreconditionersRequest, PublishPreconditionersResponse>;

export class PreconditionerPublisher {
  private client: ParameterServerServiceClient | undefined;
  private session: Session | undefined;
  private readonly reconnect = new Reconnector(() => !this.stopped && this.open());
  /** Layer → the version being published and its step, until the PS answers its commit. */
  private readonly unanswered = new Map<string, { version: number; step: number }>();
  private stopped = false;

  constructor(private readonly opts: PublisherOptions) {}

  /** Opens the stream (again: in place of the current one, and sends again what went down with it). */
  open(): void {
    const { state, job, logger } = this.opts;
    const reopened = this.session !== undefined;
    this.reconnect.cancel();
    this.session?.detach();
    this.client ??= new FastParameterServerServiceClient(
      this.opts.ps,
      this.opts.security.channelCredentials(),
      this.opts.security.clientOptions(transportOf(job.config.cluster)),
    );
    // Wait for the connection: right after the PS restarts the channel is still in reconnect
    // backoff, and a call that fails at once loses the preconditioners and watermark written to it.
    const call = this.client.publishPreconditioners(this.opts.member.metadata(new Metadata({ waitForReady: true })));
    this.session = new StreamSession<PublishPreconditionersRequest, PublishPreconditionersResponse>(
      call,
      { kind: { $case: 'hello', value: { ownerId: state.id, epoch: state.epoch, layers: job.layers() } } },
      {
        onMessage: (r) => {
          this.reconnect.succeeded();
          if (this.unanswered.get(r.layer)?.version === r.version) this.unanswered.delete(r.layer);
          if (!r.accepted) logger.warn(`PS rejected ${r.layer} v${r.version}: ${r.reason}`);
        },
        onEnd: (_why, err) => {
          if (this.stopped) return;
          if (err) logger.warn(`preconditioner stream to the PS broke: ${err.message}; reopening`);
          this.reconnect.schedule();
        },
      },
    );
    // What went down with the old call: the PS may be waiting for that watermark, and a commit it
    // never answered may never have arrived. Queued, so a publish under way finishes first.
    if (reopened) void this.opts.enqueue(() => this.republish());
  }

  stop(): void {
    this.stopped = true;
    this.reconnect.cancel();
    this.session?.detach();
    this.client?.close();
  }

  /** Inverts the due factors, publishes the new preconditioners of step `step`, then the watermark. */
  async refreshAndPublish(step: number): Promise<void> {
    await this.publish(await this.refresh(), step);
    await this.sendWatermark();
  }

  /** Inverts the damped factors that changed. */
  async refresh(): Promise<PublishedPreconditioner[]> {
    const t1 = performance.now();
    const published = await this.opts.job.curvature.refresh(this.opts.backend, (r) =>
      this.opts.logger.warn(r, `damping raised for ${r.layer}/${r.factor}: factor was not positive definite`),
    );
    this.opts.state.timings.record('invert', performance.now() - t1);
    return published;
  }

  /** Sends each new preconditioner to the PS: its inverses in chunks, then a commit. */
  async publish(all: PublishedPreconditioner[], step: number): Promise<void> {
    const { config } = this.opts.job;
    // The PS refuses what is not finite or larger than damping allows: say so here instead.
    const damping = effectiveDamping({ lambda: config.optimizer.kfac.damping, weightDecay: config.optimizer.weightDecay, piCorrection: true });
    const published = all.filter((p) => {
      const bad = preconditionerProblem(p.preconditioner, damping);
      if (bad) this.opts.logger.warn(`preconditioner ${p.layer} v${p.version} not published: ${bad}`);
      return !bad;
    });
    for (const p of published) this.unanswered.set(p.layer, { version: p.version, step });
    // One stream for the whole publish: if it breaks, the rest fails fast and the reopened stream
    // sends the unanswered layers again (a half-sent tensor must not continue on a new stream).
    const out = this.session?.writer;
    if (!out) return;
    try {
      await this.write(out, published, step);
    } catch (err) {
      if (!(err instanceof StreamClosedError) && out.error === undefined) throw err;
      this.opts.logger.warn(
        `publishing ${published.map((p) => p.layer).join(', ')} was cut off (${(err as Error).message}); they go again on the reopened stream`,
      );
    }
  }

  /** The watermark: the first step whose statistics this owner still needs, and the refresh intervals. */
  async sendWatermark(): Promise<void> {
    const { curvature, settledEpoch } = this.opts.job;
    let next = Number.MAX_SAFE_INTEGER;
    for (const c of curvature.layers.values()) for (const k of c.kinds) next = Math.min(next, c.schedule(k).nextStep);
    const intervals = curvature.intervals();
    await this.session?.writer
      .write({ kind: { $case: 'watermark', value: { nextRefreshStep: next, epoch: settledEpoch, intervals } } }, 256)
      .catch(() => undefined);
  }

  /**
   * Sends again the preconditioners whose commit the PS has not answered, then the watermark. An
   * entry stays until the PS answers, so a stream that breaks again is covered by the next reopen.
   */
  private async republish(): Promise<void> {
    const again: PublishedPreconditioner[] = [];
    let step = -1;
    for (const [layer, sent] of this.unanswered) {
      const c = this.opts.job.curvature.layers.get(layer);
      if (c?.preconditioner && c.version === sent.version) {
        again.push({ layer, version: sent.version, preconditioner: c.preconditioner });
        step = Math.max(step, sent.step);
      } else {
        this.unanswered.delete(layer); // moved away, or a newer version has been sent since
      }
    }
    if (again.length > 0) {
      this.opts.logger.info(`publishing ${again.map((p) => `${p.layer} v${p.version}`).join(', ')} again on the new stream`);
      await this.publish(again, step);
    }
    await this.sendWatermark();
  }

  private async write(out: ByteBudgetWriter<PublishPreconditionersRequest>, published: PublishedPreconditioner[], step: number): Promise<void> {
    const { job, state } = this.opts;
    const { config } = job;
    const chunkBytes = config.cluster.chunkBytes;
    const computedFromStep = Math.max(0, step);
    const damping = Math.max(config.optimizer.kfac.damping, config.optimizer.weightDecay);
    for (const p of published) {
      const version = p.version;
      await sendPreconditioner(
        out,
        { chunk: (value) => ({ kind: { $case: 'chunk' as const, value } }), commit: (value) => ({ kind: { $case: 'commit' as const, value } }) },
        { layer: p.layer, preconditioner: p.preconditioner, version, computedFromStep, epoch: job.settledEpoch, damping },
        chunkBytes,
      );
      state.preconditioners.set(p.layer, { layer: p.layer, version, computedFromStep, ownerId: state.id, updatedUnixMs: Date.now() });
    }
  }
}
