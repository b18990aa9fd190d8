/**
 * A worker's Train streams to the parameter server: one to the coordinator (shard 0, the PS the
 * worker joined) and one to every PS shard of the membership view, opened as shards appear and
 * closed as they leave. The StepStarts of all of them go through one StepGather, which hands the
 * worker each step once every endpoint sending it has started it.
 */
import { type MembershipView, Role } from '../../src/gen/spngd/v1/membership.js';
import type { ActorStateTracker } from '../../src/actors/common/actor-state.js';
import type { ActorCredentials } from '../../src/actors/common/credentials.js';
import type { MemberClient } from '../../src/actors/common/member-client.js';
import type { TransportOptions } from '../../src/transport/channel-options.js';
import type { Logger } from '../../src/util/log.js';
import { type GatheredStep, StepGather } from './step-gather.js';
import { TrainStream, type TrainStreamOptions, type TrainWriter } from './train-stream.js';

export interface PsStreamsOptions {
  /** The coordinator's address. */
  ps: string;
  logger: Logger;
  security: ActorCredentials;
  transport: TransportOptions;
  member: MemberClient;
  state: ActorStateTracker;
  /** A step every endpoint sending it has started. */
  onStep(step: GatheredStep<TrainWriter>): void;
  /** The coordinator drains this worker: no more steps. */
  onDrain(reason: string): void;
}

/** Kept the same as before shards: logs (and tests reading them) name the coordinator so. */
const COORDINATOR_LABEL = 'the PS';

function shardLabel(id: string, address: string): string {
  return `PS shard ${id} at ${address}`;
}

interface ShardLink {
  address: string;
  stream: TrainStream;
  /** The shard drained us: its stream stays closed while the shard stays in the view at this address. */
  drained: boolean;
}

export class PsStreams {
  private readonly gather = new StepGather<TrainWriter>();
  private readonly coordinator: TrainStream;
  /** Streams to the PS shards, by member id. */
  private readonly shards = new Map<string, ShardLink>();
  private isOpen = false;

  constructor(private readonly opts: PsStreamsOptions) {
    const { state } = opts;
    this.coordinator = this.stream(opts.ps, COORDINATOR_LABEL, {
      // Every pending part belongs to a step the coordinator drove: it will run it again, or, restarted, start elsewhere.
      onLost: () => this.gather.clear(),
      onWelcome: (w) => (state.epoch = Math.max(state.epoch, w.epoch)),
      onAck: (ack) => {
        state.lastLoss = ack.loss;
        state.lastAccuracy = ack.accuracy;
      },
      onDrain: (reason) => opts.onDrain(reason),
    });
  }

  /** Whether the streams have been opened (the worker opens them once its data and model are ready). */
  get opened(): boolean {
    return this.isOpen;
  }

  /** Opens every stream (again, in place of the current ones). */
  open(): void {
    this.isOpen = true;
    this.coordinator.open();
    for (const link of this.shards.values()) if (!link.drained) link.stream.open();
  }

  /** Ends every stream for good. */
  close(): void {
    this.isOpen = false;
    this.coordinator.close();
    for (const link of this.shards.values()) link.stream.close();
    this.shards.clear();
  }

  /** Keeps a stream to every PS shard of the view, and none to shards that left it. */
  follow(view: MembershipView): void {
    const wanted = new Map(view.members.filter((m) => m.role === Role.ROLE_PS_SHARD).map((m) => [m.id, m.address]));
    for (const [id, link] of this.shards) {
      if (wanted.get(id) === link.address) continue;
      this.closeShard(id, link);
    }
    for (const [id, address] of wanted) {
      if (this.shards.has(id)) continue;
      const label = shardLabel(id, address);
      const stream = this.stream(address, label, {
        onLost: () => this.gather.drop(label),
        onWelcome: () => undefined,
        // The coordinator's ack carries the step's loss and accuracy; a shard's adds nothing.
        onAck: () => undefined,
        onDrain: (reason) => {
          this.opts.logger.info(`drained by ${label}: ${reason}`);
          const link = this.shards.get(id);
          if (link?.stream !== stream) return;
          link.drained = true;
          stream.close();
          this.gather.drop(label);
        },
      });
      this.shards.set(id, { address, stream, drained: false });
      if (this.isOpen) stream.open();
    }
  }

  private closeShard(id: string, link: ShardLink): void {
    this.shards.delete(id);
    link.stream.close();
    this.gather.drop(shardLabel(id, link.address));
  }

  private stream(address: string, label: string, events: Pick<TrainStreamOptions, 'onLost' | 'onWelcome' | 'onAck' | 'onDrain'>): TrainStream {
    const { logger, security, transport, member, state } = this.opts;
    return new TrainStream({
      address,
      label,
      logger,
      security,
      transport,
      member,
      state,
      ...events,
      onStepStart: (start, params, writer) => {
        const outcome = this.gather.offer({ endpoint: label, start, params, writer });
        if (outcome.kind === 'ready') this.opts.onStep(outcome.step);
        else if (outcome.kind === 'refused') logger.error(`step ${outcome.step} is not computed: ${outcome.reason}`);
      },
    });
  }
}
