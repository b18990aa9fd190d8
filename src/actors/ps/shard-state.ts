/**
 * A PS shard's state on ShardSession, either way: the values of its layers' parameters and
 * buffers and the momentum of its parameters, as ShardTensor chunks, and their assembly with the
 * checks every received tensor gets (a known name that this shard's layers hold, the model's
 * shape, finite values).
 */
import { status } from '@grpc/grpc-js';
import { ShardTensorKind, type ShardTensor } from '../../gen/spngd/v1/parameter_server.js';
import type { Sequential } from '../../nn/sequential.js';
import type { MomentumUpdater } from '../../optim/momentum.js';
import { allFinite } from '../../train/reduce.js';
import { TransportError } from '../../transport/errors.js';
import type { ByteBudgetWriter } from '../../transport/flow.js';
import { envelopeTensor, TensorAssembler, toDense } from '../../transport/tensor-assembler.js';
import { sendDense } from '../common/tensor-io.js';

/** Values (parameters and buffers) and momentum of some of the model's tensors at one step. */
export interface ShardState {
  values: Map<string, Float32Array>;
  momentum: Map<string, Float32Array>;
}

/** Copies of the named tensors' values and of their momentum (where the updater has any). */
export function snapshotState(model: Sequential, velocity: ReadonlyMap<string, Float32Array>, names: ReadonlySet<string>): ShardState {
  const values = new Map<string, Float32Array>();
  const momentum = new Map<string, Float32Array>();
  for (const e of model.stateEntries()) {
    if (!names.has(e.name)) continue;
    values.set(e.name, new Float32Array(e.value.data));
    const v = velocity.get(e.name);
    if (v) momentum.set(e.name, new Float32Array(v));
  }
  return { values, momentum };
}

/** Sends a state as ShardTensors wrapped by `wrap`; returns how many tensors were sent. */
export async function sendState<T>(
  writer: ByteBudgetWriter<T>,
  wrap: (t: ShardTensor) => T,
  model: Sequential,
  state: ShardState,
  step: number,
  chunkBytes: number,
): Promise<number> {
  const shapes = new Map(model.stateEntries().map((e) => [e.name, e.value.shape.length ? e.value.shape : [e.value.data.length]]));
  let sent = 0;
  for (const [kind, tensors] of [
    [ShardTensorKind.SHARD_TENSOR_KIND_VALUE, state.values],
    [ShardTensorKind.SHARD_TENSOR_KIND_MOMENTUM, state.momentum],
  ] as const) {
    for (const [name, values] of tensors) {
      await sendDense(writer, (tensor) => wrap({ step, kind, tensor }), name, values, shapes.get(name)!, step, chunkBytes, { copy: false });
      sent++;
    }
  }
  return sent;
}

/** Assembles a state sent with sendState, refusing what the model or `holds` do not allow. */
export class ShardStateReceiver {
  readonly state: ShardState = { values: new Map(), momentum: new Map() };
  private readonly assemblers = new Map([
    [ShardTensorKind.SHARD_TENSOR_KIND_VALUE, new TensorAssembler()],
    [ShardTensorKind.SHARD_TENSOR_KIND_MOMENTUM, new TensorAssembler()],
  ]);

  constructor(
    private readonly model: Sequential,
    private readonly step: number,
    private readonly holds: (name: string) => boolean,
  ) {}

  /** Number of tensors complete so far. */
  get received(): number {
    return this.state.values.size + this.state.momentum.size;
  }

  push(t: ShardTensor): void {
    const assembler = this.assemblers.get(t.kind);
    if (!assembler) throw new TransportError(status.INVALID_ARGUMENT, 'bad_argument', `shard tensor of kind ${t.kind}`);
    if (t.step !== this.step) throw new TransportError(status.FAILED_PRECONDITION, 'bad_argument', `shard state of step ${t.step}, expected ${this.step}`);
    const chunk = envelopeTensor(t.tensor, t.step, 'ShardTensor.step');
    const entry = this.model.stateEntries().find((e) => e.name === chunk.name);
    if (!entry || !this.holds(entry.name))
      throw new TransportError(status.INVALID_ARGUMENT, 'bad_name', `shard state names "${chunk.name.slice(0, 64)}", which is not one of its layers' tensors`);
    const shape = entry.value.shape.length ? entry.value.shape : [entry.value.data.length];
    if (chunk.shape.length !== shape.length || chunk.shape.some((d, i) => d !== shape[i]))
      throw new TransportError(
        status.INVALID_ARGUMENT,
        'bad_shape',
        `shard state of ${entry.name}: shape [${chunk.shape.slice(0, 9)}] where [${shape}] was expected`,
      );
    const done = assembler.push(chunk);
    if (!done) return;
    const values = toDense(done);
    if (!allFinite(values)) throw new TransportError(status.INVALID_ARGUMENT, 'bad_argument', `shard state of ${entry.name} is not finite`);
    (t.kind === ShardTensorKind.SHARD_TENSOR_KIND_VALUE ? this.state.values : this.state.momentum).set(entry.name, values);
  }

  /** Throws unless exactly `count` tensors arrived and none is half-assembled. */
  assertComplete(count: number): void {
    for (const a of this.assemblers.values()) a.assertComplete();
    if (this.received !== count)
      throw new TransportError(status.INVALID_ARGUMENT, 'bad_argument', `shard state: ${this.received} tensors received, ${count} announced`);
  }
}

/** Puts a received state into a model and its momentum (the tensors named there only). */
export function importShardState(model: Sequential, updater: MomentumUpdater, state: ShardState): void {
  model.importState(Object.fromEntries(state.values), { strict: false });
  updater.adopt(state.momentum);
}
