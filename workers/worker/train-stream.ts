/**
 * A worker's Train stream with one PS endpoint (the coordinator or a PS shard): hello, then
 * parameters and StepStarts in, gradients out, reopened with backoff whenever it breaks (the PS
 * restarted, the connection dropped) until the worker stops or is drained. A step's results go back
 * on the streams that started it (worker/step-gather.ts).
 */
import { LifecycleState } from '../../src/gen/spngd/v1/membership.js';
import type { GradientsAck, ParameterServerServiceClient, StepStart, TrainRequest, TrainResponse, Welcome } from '../../src/gen/spngd/v1/parameter_server.js';
import type { ActorStateTracker } from '../../src/actors/common/actor-state.js';
import type { ActorCredentials } from '../../src/actors/common/credentials.js';
import type { MemberClient } from '../../src/actors/common/member-client.js';
import { Reconnector } from '../../src/actors/common/reconnect.js';
import { StreamSession } from '../../src/actors/common/stream-session.js';
import type { TransportOptions } from '../../src/transport/channel-options.js';
import { FastParameterServerServiceClient } from '../../src/transport/fast-services.js';
import type { ByteBudgetWriter } from '../../src/transport/flow.js';
import { envelopeTensor, TensorAssembler } from '../../src/transport/tensor-assembler.js';
import type { Logger } from '../../src/util/log.js';

/** Where a worker writes on one Train stream. */
export type TrainWriter = ByteBudgetWriter<TrainRequest>;

export interface TrainStreamOptions {
  /** host:port of the endpoint's ParameterServerService. */
  address: string;
  /** Names the endpoint in logs ("the PS", "PS shard ps-1 at host:port"). */
  label: string;
  logger: Logger;
  security: ActorCredentials;
  transport: TransportOptions;
  /** Gives the session secret for the call's metadata. */
  member: MemberClient;
  state: ActorStateTracker;
  /** A StepStart with the parameters sent before it; results go back on `writer`. */
  onStepStart(start: StepStart, params: Map<string, Float32Array>, writer: TrainWriter): void;
  /** What the stream received since its last StepStart is gone: it broke or was opened again. */
  onLost(): void;
  /** The endpoint admitted the worker. */
  onWelcome(welcome: Welcome): void;
  /** The endpoint acknowledged a step's gradients. */
  onAck(ack: GradientsAck): void;
  /** The endpoint drains this worker. */
  onDrain(reason: string): void;
}

export class TrainStream {
  private client: ParameterServerServiceClient | undefined;
  private session: StreamSession<TrainRequest, TrainResponse> | undefined;
  private readonly reconnect = new Reconnector(() => this.live() && this.open());
  /** Parameters received since the last StepStart. */
  private params = new Map<string, Float32Array>();
  private assembler = new TensorAssembler();
  private stopped = false;

  constructor(private readonly opts: TrainStreamOptions) {}

  /** Whether the stream has been opened (the worker opens it once its data and model are ready). */
  get opened(): boolean {
    return this.session !== undefined;
  }

  /** Opens a new stream in place of the current one. */
  open(): void {
    const { state } = this.opts;
    this.reconnect.cancel();
    this.session?.detach();
    this.client ??= new FastParameterServerServiceClient(
      this.opts.address,
      this.opts.security.channelCredentials(),
      this.opts.security.clientOptions(this.opts.transport),
    );
    this.assembler = new TensorAssembler();
    this.params = new Map();
    this.opts.onLost();
    this.session = new StreamSession<TrainRequest, TrainResponse>(
      this.client.train(this.opts.member.metadata()),
      { kind: { $case: 'hello', value: { workerId: state.id, epoch: state.epoch, parametersVersion: 0, maxMessageBytes: 0 } } },
      {
        onMessage: (msg, session) => {
          this.reconnect.succeeded();
          this.onMessage(msg, session.writer);
        },
        onEnd: (_why, err) => {
          if (err && !this.stopped) this.opts.logger.warn(`train stream to ${this.opts.label} broke: ${err.message}`);
          this.opts.onLost();
          if (this.live()) this.reconnect.schedule();
        },
      },
    );
  }

  /** Ends the stream for good. */
  close(): void {
    this.stopped = true;
    this.reconnect.cancel();
    this.session?.close();
    this.client?.close();
  }

  /** Reopening stops when the worker stops or is drained. */
  private live(): boolean {
    return !this.stopped && this.opts.state.lifecycle !== LifecycleState.LIFECYCLE_STATE_DRAINING;
  }

  private onMessage(msg: TrainResponse, writer: TrainWriter): void {
    const k = msg.kind;
    if (!k) return;
    try {
      switch (k.$case) {
        case 'welcome':
          this.opts.onWelcome(k.value);
          return;
        case 'parameters': {
          const t = this.assembler.push(envelopeTensor(k.value.tensor, k.value.step, 'ParameterChunk.step'));
          if (t) this.params.set(t.name, t.values);
          return;
        }
        case 'stepStart': {
          const params = this.params;
          this.params = new Map();
          this.opts.onStepStart(k.value, params, writer);
          return;
        }
        case 'gradientsAck':
          this.opts.onAck(k.value);
          return;
        case 'drain':
          this.opts.onDrain(k.value.reason);
          return;
      }
    } catch (err) {
      this.opts.logger.error(`bad message from ${this.opts.label}: ${(err as Error).message}`);
      this.session?.call.cancel();
    }
  }
}
