/**
 * Malformed messages for the actors' gRPC services, drawn from a seeded generator. Each case is one
 * call: optional valid setup messages (a hello) followed by exactly one malformed message, with
 * the status codes an honest server answers it with. Cases marked `inBand` are answered OK with a
 * rejection in the response (a PublishPreconditioners ack with accepted=false, a heartbeat with
 * known=false), as the protocol specifies; cases marked `tolerated` are dropped silently by design
 * (statistics of a step the owner has already reduced: a late sender).
 */
import { status } from '@grpc/grpc-js';
import { FetchLayerStateRequest, PushStatisticsRequest, StatisticKind, type StatisticChunk } from '../../src/gen/spngd/v1/factor_owner.js';
import { HeartbeatResponse, HeartbeatRequest, JoinRequest, LeaveRequest, LifecycleState, Role } from '../../src/gen/spngd/v1/membership.js';
import {
  DownloadParametersRequest,
  PreconditionerFactor,
  PublishPreconditionersRequest,
  PublishPreconditionersResponse,
  TrainRequest,
  ShardSessionRequest,
} from '../../src/gen/spngd/v1/parameter_server.js';
import { TensorEncoding, type TensorChunk } from '../../src/gen/spngd/v1/tensor.js';
import { Rng } from '../../src/util/rng.js';
import type { ServiceName } from './fuzz-clients.js';

export interface FuzzCase {
  /** Template, e.g. "train/gradient-wrong-shape" (a chunk fault adds ":gap" etc.). */
  name: string;
  service: ServiceName;
  address: string;
  method: string;
  kind: 'duplex' | 'unary' | 'server';
  messages: Buffer[];
  /** Status codes that are an honest answer. */
  expect: status[];
  /** For answers with status OK: the in-band rejection found in the responses, if any. */
  inBand?: (responses: Buffer[]) => string | undefined;
  /** An OK answer is by design: the message is dropped (why). */
  tolerated?: string;
  /** The session secret to send (metadata "spngd-session"), if any. */
  session?: string;
}

export interface FuzzLayer {
  name: string;
  kind: string;
  inFeatures: number;
  outFeatures: number;
}

export interface FuzzTarget {
  ps: string;
  owners: { id: string; address: string; layers: string[] }[];
  /** Worker ids that joined the PS (membership only: they never open Train with a step in progress). */
  fakeWorkers: string[];
  /** Ids of the real workers (never used on Train: a hello would replace their stream). */
  realWorkers: string[];
  params: { name: string; shape: number[] }[];
  layers: FuzzLayer[];
  psStep: () => number;
  psEpoch: () => number;
  /** The newest step owner i has reduced (-1: none). */
  ownerReduced: (i: number) => number;
  /** Layers with a preconditioner held by the PS: layer → {version, ownerId}. */
  held: () => Map<string, { version: number; ownerId: string }>;
  /** Session secrets of the fake workers and of the real owners (their calls carry them). */
  sessions: Map<string, string>;
}

const IA = status.INVALID_ARGUMENT;
const FP = status.FAILED_PRECONDITION;
const RE = status.RESOURCE_EXHAUSTED;
const NF = status.NOT_FOUND;
const UI = status.UNIMPLEMENTED;
const UA = status.UNAUTHENTICATED;
const PD = status.PERMISSION_DENIED;
const AE = status.ALREADY_EXISTS;

const buf = (u: Uint8Array): Buffer => Buffer.from(u.buffer, u.byteOffset, u.byteLength);
const train = (m: TrainRequest): Buffer => buf(TrainRequest.encode(m).finish());
const publish = (m: PublishPreconditionersRequest): Buffer => buf(PublishPreconditionersRequest.encode(m).finish());
const shard = (m: ShardSessionRequest): Buffer => buf(ShardSessionRequest.encode(m).finish());
const stats = (m: PushStatisticsRequest): Buffer => buf(PushStatisticsRequest.encode(m).finish());
const leaveReq = (m: LeaveRequest): Buffer => buf(LeaveRequest.encode(m).finish());

/** Bytes of 9 MiB and more: above the 8 MiB receive limit of every actor. */
const OVERSIZED = 9 * 1024 * 1024 + 17;

/** A chunked dense or symmetric tensor and what to break in it. */
interface TensorSpec {
  name: string;
  shape: number[];
  encoding: TensorEncoding;
  version: number;
}

function valuesOf(spec: TensorSpec): number {
  const n = spec.shape[spec.shape.length - 1];
  if (spec.encoding === TensorEncoding.TENSOR_ENCODING_SYMMETRIC_UPPER) {
    return spec.shape.slice(0, -2).reduce((a, b) => a * b, 1) * ((n * (n + 1)) / 2);
  }
  return spec.shape.reduce((a, b) => a * b, 1);
}

function randomFloats(rng: Rng, n: number): Buffer {
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) v[i] = rng.normal() * 0.01;
  return Buffer.from(v.buffer);
}

/** The chunks of a well-formed tensor, split into `parts` contiguous pieces (multiples of 4 bytes). */
function validChunks(rng: Rng, spec: TensorSpec, parts: number): TensorChunk[] {
  const count = valuesOf(spec);
  const data = randomFloats(rng, count);
  const per = Math.max(1, Math.ceil(count / parts)) * 4;
  const chunkCount = Math.ceil(data.length / per);
  const out: TensorChunk[] = [];
  for (let i = 0; i < chunkCount; i++) {
    out.push({
      name: spec.name,
      shape: [...spec.shape],
      encoding: spec.encoding,
      version: spec.version,
      chunkIndex: i,
      chunkCount,
      totalBytes: data.length,
      offsetBytes: i * per,
      data: data.subarray(i * per, Math.min(data.length, (i + 1) * per)),
    });
  }
  return out;
}

const pick = <T>(rng: Rng, xs: readonly T[]): T => xs[rng.int(xs.length)];

/**
 * A chunk sequence of `spec` with one structural fault (the TensorAssembler's checks), and the
 * codes for it. `shapeChecked`: the receiver checks names and shapes against its model before the
 * codec, so faults in the declared shape may also come back as INVALID_ARGUMENT.
 */
export function chunkFault(rng: Rng, spec: TensorSpec): { label: string; chunks: TensorChunk[]; expect: status[] } {
  const multi = () => {
    const c = validChunks(rng, spec, 2 + rng.int(6));
    return c.length >= 2 ? c : validChunks(rng, spec, 2);
  };
  const faults: (() => { label: string; chunks: TensorChunk[]; expect: status[] })[] = [
    () => ({
      label: 'bad-encoding',
      chunks: validChunks(rng, spec, 1).map((c) => ({ ...c, encoding: pick(rng, [0, 3, 7, 99]) as TensorEncoding })),
      expect: [IA],
    }),
    () => ({
      label: 'zero-dimension',
      chunks: validChunks(rng, spec, 1).map((c) => ({ ...c, shape: c.shape.map((d, i) => (i === 0 ? 0 : d)) })),
      expect: [IA],
    }),
    () => ({
      label: 'rank-9',
      chunks: validChunks(rng, spec, 1).map((c) => ({ ...c, shape: [...c.shape, 1, 1, 1, 1, 1, 1, 1, 1].slice(0, 9) })),
      expect: [IA],
    }),
    () => ({
      label: 'total-bytes-mismatch',
      chunks: validChunks(rng, spec, 1).map((c) => ({ ...c, totalBytes: c.totalBytes + 4 * (1 + rng.int(100)) })),
      expect: [IA],
    }),
    () => ({ label: 'chunk-count-0', chunks: validChunks(rng, spec, 1).map((c) => ({ ...c, chunkCount: 0 })), expect: [IA] }),
    () => ({
      label: 'chunk-count-impossible',
      chunks: validChunks(rng, spec, 1).map((c) => ({ ...c, chunkCount: c.totalBytes / 4 + 1 + rng.int(1000) })),
      expect: [IA],
    }),
    () => ({ label: 'index-out-of-range', chunks: validChunks(rng, spec, 1).map((c) => ({ ...c, chunkIndex: 1 + rng.int(50) })), expect: [IA] }),
    () => {
      const c = multi();
      return { label: 'first-index-not-0', chunks: [c[1]], expect: [FP] };
    },
    () => {
      const c = multi();
      return c.length >= 3
        ? { label: 'gap', chunks: [c[0], c[2]], expect: [FP] }
        : { label: 'gap', chunks: [c[0], { ...c[1], chunkIndex: c[1].chunkIndex + 1, chunkCount: c[1].chunkCount }], expect: [FP, IA] };
    },
    () => {
      const c = multi();
      return { label: 'duplicate', chunks: [c[0], c[0]], expect: [FP] };
    },
    () => ({
      label: 'data-not-multiple-of-4',
      chunks: validChunks(rng, spec, 1).map((c) => ({ ...c, data: c.data.subarray(0, c.data.length - 1 - rng.int(3)) })),
      expect: [IA],
    }),
    () => ({ label: 'empty-data', chunks: validChunks(rng, spec, 1).map((c) => ({ ...c, data: Buffer.alloc(0) })), expect: [IA] }),
    () => {
      const c = multi();
      return { label: 'bad-offset', chunks: [c[0], { ...c[1], offsetBytes: c[1].offsetBytes + 4 * (1 + rng.int(8)) }], expect: [IA] };
    },
    () => {
      const c = multi();
      return { label: 'overrun', chunks: [c[0], { ...c[1], data: Buffer.concat([c[1].data, Buffer.alloc(c[0].totalBytes)]) }], expect: [IA] };
    },
    () => ({
      label: 'short-tensor',
      chunks: validChunks(rng, spec, 1).map((c) => ({ ...c, data: c.data.subarray(0, Math.max(4, c.data.length - 4 * (1 + rng.int(4)))) })),
      expect: [IA],
    }),
    () => {
      const c = multi();
      const all = Buffer.concat(c.map((x) => x.data));
      return { label: 'all-bytes-early', chunks: [{ ...c[0], data: all }], expect: [IA] };
    },
    () => {
      const c = multi();
      const field = pick(rng, ['shape', 'version', 'chunkCount', 'totalBytes', 'encoding'] as const);
      const second: TensorChunk = { ...c[1] };
      if (field === 'shape') second.shape = [...second.shape, 1];
      if (field === 'version') second.version = second.version + 1;
      if (field === 'chunkCount') second.chunkCount = second.chunkCount + 1;
      if (field === 'totalBytes') second.totalBytes = second.totalBytes + 4;
      if (field === 'encoding')
        second.encoding =
          spec.encoding === TensorEncoding.TENSOR_ENCODING_DENSE ? TensorEncoding.TENSOR_ENCODING_SYMMETRIC_UPPER : TensorEncoding.TENSOR_ENCODING_DENSE;
      return { label: `header-mismatch-${field}`, chunks: [c[0], second], expect: [IA] };
    },
    () => ({ label: 'empty-name', chunks: validChunks(rng, spec, 1).map((c) => ({ ...c, name: '' })), expect: [IA] }),
    () => ({ label: 'long-name', chunks: validChunks(rng, spec, 1).map((c) => ({ ...c, name: 'x'.repeat(513 + rng.int(2000)) })), expect: [IA] }),
    () => {
      // Declares 2-4 GiB (above the 1 GiB cap) in a 4 KiB first chunk.
      const n = 2 * (16384 + rng.int(8192));
      const shape = spec.encoding === TensorEncoding.TENSOR_ENCODING_SYMMETRIC_UPPER ? [n, n] : [n, n / 2];
      const total = valuesOf({ ...spec, shape }) * 4;
      const c: TensorChunk = {
        ...spec,
        shape,
        chunkIndex: 0,
        chunkCount: Math.ceil(total / 4096),
        totalBytes: total,
        offsetBytes: 0,
        data: Buffer.alloc(4096),
      };
      return { label: 'too-large', chunks: [c], expect: [RE, IA] };
    },
    () => {
      // Declares a tensor below the cap but far larger than anything the receiver holds (memory for it must not be reserved).
      const n = 4096 + rng.int(2048);
      const shape = spec.encoding === TensorEncoding.TENSOR_ENCODING_SYMMETRIC_UPPER ? [n, n] : [n, n];
      const total = valuesOf({ ...spec, shape }) * 4;
      const c: TensorChunk = {
        ...spec,
        shape,
        chunkIndex: 0,
        chunkCount: Math.ceil(total / 65536),
        totalBytes: total,
        offsetBytes: 0,
        data: Buffer.alloc(65536),
      };
      return { label: 'large-declared-shape', chunks: [c], expect: [IA] };
    },
  ];
  return pick(rng, faults)();
}

/** Random bytes that the generated decoder of `decode` rejects (truly malformed protobuf). */
function undecodable(rng: Rng, decode: (b: Uint8Array) => unknown, prefix: Buffer = Buffer.alloc(0)): Buffer {
  for (;;) {
    const n = 1 + rng.int(rng.next() < 0.8 ? 64 : 4096);
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = rng.int(256);
    const m = Buffer.concat([prefix, b]);
    try {
      decode(m);
    } catch {
      return m;
    }
  }
}

/** A valid encoding truncated inside a length-delimited field (the decoder runs past the end). */
function truncated(valid: Buffer, rng: Rng, decode: (b: Uint8Array) => unknown): Buffer | undefined {
  for (let tries = 0; tries < 20; tries++) {
    const cut = valid.subarray(0, 1 + rng.int(Math.max(1, valid.length - 1)));
    try {
      decode(cut);
    } catch {
      return Buffer.from(cut);
    }
  }
  return undefined;
}

const oversizedCache = new Map<string, Buffer>();
function oversized(key: string, make: () => Buffer): Buffer {
  let b = oversizedCache.get(key);
  if (!b) {
    b = make();
    oversizedCache.set(key, b);
  }
  return b;
}

function factorShape(layer: FuzzLayer, factor: PreconditionerFactor): { shape: number[]; encoding: TensorEncoding } {
  if (factor === PreconditionerFactor.PRECONDITIONER_FACTOR_BN_INVERSE)
    return { shape: [layer.outFeatures, 2, 2], encoding: TensorEncoding.TENSOR_ENCODING_SYMMETRIC_UPPER };
  const n = factor === PreconditionerFactor.PRECONDITIONER_FACTOR_A_INVERSE ? layer.inFeatures + 1 : layer.outFeatures;
  return { shape: [n, n], encoding: TensorEncoding.TENSOR_ENCODING_SYMMETRIC_UPPER };
}

function statisticShape(layer: FuzzLayer, kind: StatisticKind): number[] {
  if (kind === StatisticKind.STATISTIC_KIND_A) return [layer.inFeatures + 1, layer.inFeatures + 1];
  if (kind === StatisticKind.STATISTIC_KIND_G) return [layer.outFeatures, layer.outFeatures];
  return [layer.outFeatures, 2, 2];
}

export type Phase = 'idle' | 'training';

/**
 * The case generator. `phase`: "idle" before the PS's first step (every template); "training"
 * while steps run: only templates that cannot take part in a step (no Train stream that passes
 * its hello, since the PS would make it a participant and change the shards).
 */
export class FuzzCases {
  private readonly rng: Rng;
  private ghost = 0;

  constructor(
    seed: number,
    private readonly t: FuzzTarget,
  ) {
    this.rng = new Rng(seed);
  }

  private ghostId(): string {
    return `ghost-${++this.ghost}-${this.rng.int(1e6)}`;
  }

  /**
   * The layers whose factors are small (all but the largest when there are several): what is
   * malformed is the same at any size, and large messages only cost time (each MiB crosses the
   * server's 64 KiB HTTP/2 receive window in 16 round trips, slow on a loaded machine).
   */
  private smallLayers(): FuzzLayer[] {
    const size = (l: FuzzLayer) => (l.inFeatures + 1) ** 2 + l.outFeatures ** 2;
    const sorted = [...this.t.layers].sort((a, b) => size(a) - size(b));
    return sorted.length > 1 ? sorted.slice(0, -1) : sorted;
  }

  next(phase: Phase): FuzzCase {
    const r = this.rng;
    const templates: (() => FuzzCase | undefined)[] = [
      ...Array<() => FuzzCase | undefined>(phase === 'idle' ? 6 : 2).fill(() => this.trainCase(phase)),
      ...Array<() => FuzzCase | undefined>(4).fill(() => this.publishCase(phase)),
      ...Array<() => FuzzCase | undefined>(4).fill(() => this.statisticsCase(phase)),
      () => this.downloadCase(),
      () => this.downloadCase(),
      () => this.shardCase(),
      () => this.joinCase(),
      () => this.heartbeatCase(),
      () => this.fetchCase(),
      () => this.lyingCase(phase),
      () => this.lyingCase(phase),
    ];
    for (;;) {
      const c = pick(r, templates)();
      if (c) return c;
    }
  }

  // --- ParameterServerService.Train -------------------------------------------------------------

  private trainCase(phase: Phase): FuzzCase | undefined {
    const r = this.rng;
    const t = this.t;
    const fake = pick(r, t.fakeWorkers);
    const base = { service: 'ps' as const, address: t.ps, method: 'train', kind: 'duplex' as const, session: t.sessions.get(fake) };
    const hello = train({ kind: { $case: 'hello', value: { workerId: fake, epoch: t.psEpoch(), parametersVersion: 0, maxMessageBytes: 0 } } });
    const param = pick(r, t.params);
    const step = t.psStep();
    const gradient = (tensor: TensorChunk | undefined, s = step, _name = 'gradient'): Buffer =>
      train({ kind: { $case: 'gradient', value: { step: s, workerId: fake, numSamples: 128, ...(tensor ? { tensor } : {}) } } });
    const complete = (s: number, tensors: number, samples = 128) =>
      train({
        kind: {
          $case: 'gradientsComplete',
          value: { step: s, workerId: fake, numSamples: samples, gradientTensors: tensors, lossSum: 1, numCorrect: 1, phaseMs: {} },
        },
      });
    const spec: TensorSpec = { name: param.name, shape: param.shape, encoding: TensorEncoding.TENSOR_ENCODING_DENSE, version: step };
    // Cases whose hello is rejected (or that never send one) are safe while steps run.
    const safe: (() => FuzzCase | undefined)[] = [
      () => ({ ...base, name: 'train/empty-envelope', messages: [train({})], expect: [IA] }),
      () => ({
        ...base,
        name: 'train/before-hello',
        messages: [
          pick(r, [
            gradient(validChunks(r, spec, 1)[0]),
            complete(step, 0),
            train({ kind: { $case: 'parametersAck', value: { parametersVersion: step, workerId: fake } } }),
          ]),
        ],
        expect: [FP],
      }),
      () => ({
        ...base,
        name: 'train/unknown-worker',
        messages: [
          train({ kind: { $case: 'hello', value: { workerId: pick(r, [this.ghostId(), '']), epoch: r.int(5), parametersVersion: 0, maxMessageBytes: 0 } } }),
        ],
        expect: [FP],
      }),
      () => ({
        ...base,
        name: 'train/hello-from-non-worker',
        messages: [
          train({
            kind: {
              $case: 'hello',
              value: { workerId: pick(r, ['ps-0', ...t.owners.map((o) => o.id)]), epoch: t.psEpoch(), parametersVersion: 0, maxMessageBytes: 0 },
            },
          }),
        ],
        expect: [FP],
      }),
      () => ({ ...base, name: 'train/random-bytes', messages: [undecodable(r, (b) => TrainRequest.decode(b))], expect: [IA] }),
      () => {
        const m = truncated(gradient(validChunks(r, { ...spec, name: pick(r, t.params).name, shape: [4] }, 1)[0]), r, (b) => TrainRequest.decode(b));
        return m ? { ...base, name: 'train/truncated', messages: [m], expect: [IA] } : undefined;
      },
      () => ({ ...base, name: 'train/huge-step', messages: [gradient(undefined, 2 ** 60)], expect: [IA] }),
      () => ({
        ...base,
        name: 'train/oversized',
        messages: [oversized('train', () => gradient({ ...validChunks(r, { ...spec, shape: [4] }, 1)[0], data: Buffer.alloc(OVERSIZED) }))],
        expect: [RE],
      }),
    ];
    if (phase === 'training') return pick(r, safe)();
    const withHello: (() => FuzzCase | undefined)[] = [
      () => ({ ...base, name: 'train/hello-twice', messages: [hello, hello], expect: [FP] }),
      () => ({ ...base, name: 'train/gradient-without-tensor', messages: [hello, gradient(undefined)], expect: [IA] }),
      () => ({
        ...base,
        name: 'train/gradient-version-mismatch',
        messages: [hello, gradient({ ...validChunks(r, spec, 1)[0], version: step + 1 + r.int(9) })],
        expect: [IA],
      }),
      () => ({
        ...base,
        name: 'train/gradient-unknown-name',
        messages: [hello, gradient(validChunks(r, { ...spec, name: pick(r, ['fc9.weight', 'nope', `${param.name}.x`, 'fc1']), shape: [1 + r.int(64)] }, 1)[0])],
        expect: [IA],
      }),
      () => {
        const shape = pick(r, [[param.shape.reduce((a, b) => a * b, 1)], [...param.shape].reverse(), [1 + r.int(32), 1 + r.int(32)], [...param.shape, 1]]);
        if (shape.join() === param.shape.join()) return undefined;
        return { ...base, name: 'train/gradient-wrong-shape', messages: [hello, gradient(validChunks(r, { ...spec, shape }, 1)[0])], expect: [IA] };
      },
      () => {
        const c = validChunks(r, spec, 1)[0];
        return {
          ...base,
          name: 'train/gradient-wrong-length',
          messages: [hello, gradient({ ...c, data: c.data.subarray(0, c.data.length - 4 * (1 + r.int(10))) })],
          expect: [IA],
        };
      },
      () => {
        const s = step > 0 && r.next() < 0.5 ? r.int(step) : step + 1 + r.int(100);
        return { ...base, name: 'train/gradient-stale-step', messages: [hello, gradient(validChunks(r, { ...spec, version: s }, 1)[0], s)], expect: [FP] };
      },
      () => ({ ...base, name: 'train/gradient-before-step-start', messages: [hello, gradient(validChunks(r, spec, 1)[0])], expect: [FP] }),
      () => {
        const f = chunkFault(r, spec);
        return { ...base, name: `train/chunks:${f.label}`, messages: [hello, ...f.chunks.map((c) => gradient(c, c.version))], expect: f.expect };
      },
      () => ({ ...base, name: 'train/complete-count-mismatch', messages: [hello, complete(step, 1 + r.int(10))], expect: [IA, FP] }),
      () => ({ ...base, name: 'train/complete-stale-step', messages: [hello, complete(step + 1 + r.int(100), 0)], expect: [FP] }),
      () => {
        const c = validChunks(
          r,
          { ...spec, shape: t.params.find((p) => p.shape.length === 2)!.shape, name: t.params.find((p) => p.shape.length === 2)!.name },
          3,
        );
        return { ...base, name: 'train/complete-with-incomplete-tensor', messages: [hello, gradient(c[0]), complete(step, 0)], expect: [FP] };
      },
      () => ({ ...base, name: 'train/complete-before-step-start', messages: [hello, complete(step, 0, r.int(3))], expect: [FP, IA] }),
      () => ({ ...base, name: 'train/random-bytes-after-hello', messages: [hello, undecodable(r, (b) => TrainRequest.decode(b))], expect: [IA] }),
      () => ({
        ...base,
        name: 'train/oversized-after-hello',
        messages: [hello, oversized('train', () => gradient({ ...validChunks(r, { ...spec, shape: [4] }, 1)[0], data: Buffer.alloc(OVERSIZED) }))],
        expect: [RE],
      }),
    ];
    return pick(r, r.next() < 0.3 ? safe : withHello)();
  }

  // --- ParameterServerService.PublishPreconditioners ---------------------------------------------

  /** ShardSession on the PS from callers that are not joined PS shards (no shard is in these jobs). */
  private shardCase(): FuzzCase {
    const r = this.rng;
    const t = this.t;
    const fake = pick(r, t.fakeWorkers);
    const base = { service: 'ps' as const, address: t.ps, method: 'shardSession', kind: 'duplex' as const };
    const hello = (shardId: string) => shard({ kind: { $case: 'hello', value: { shardId, epoch: r.int(5) } } });
    const cases: (() => FuzzCase)[] = [
      () => ({ ...base, name: 'shard/empty-envelope', messages: [shard({})], expect: [IA] }),
      () => ({
        ...base,
        name: 'shard/before-hello',
        messages: [
          pick(r, [
            shard({ kind: { $case: 'gathered', value: { step: r.int(100), workers: [fake], phaseMs: {} } } }),
            shard({ kind: { $case: 'updated', value: { step: r.int(100), phaseMs: {} } } }),
            shard({ kind: { $case: 'shared', value: { step: r.int(100), stateTensors: r.int(10) } } }),
          ]),
        ],
        expect: [FP],
      }),
      () => ({ ...base, name: 'shard/unknown-shard', messages: [hello(pick(r, [this.ghostId(), '']))], expect: [FP] }),
      // A member of another role, with its own session secret: it is not a PS shard.
      () => ({
        ...base,
        name: 'shard/hello-from-non-shard',
        session: t.sessions.get(fake),
        messages: [hello(pick(r, [fake, 'ps-0', ...t.realWorkers, ...t.owners.map((o) => o.id)]))],
        expect: [FP],
      }),
      () => ({ ...base, name: 'shard/random-bytes', messages: [undecodable(r, (b) => ShardSessionRequest.decode(b))], expect: [IA] }),
    ];
    return pick(r, cases)();
  }

  private publishCase(phase: Phase): FuzzCase | undefined {
    const r = this.rng;
    const t = this.t;
    // A real owner's id and session secret (a buggy owner): the PS allows several streams per owner,
    // and nothing below is well-formed enough to be applied.
    const owner = pick(r, t.owners);
    const base = { service: 'ps' as const, address: t.ps, method: 'publishPreconditioners', kind: 'duplex' as const, session: t.sessions.get(owner.id) };
    const hello = publish({ kind: { $case: 'hello', value: { ownerId: owner.id, epoch: t.psEpoch(), layers: owner.layers } } });
    const layer = pick(r, this.smallLayers());
    const factor = pick(r, [PreconditionerFactor.PRECONDITIONER_FACTOR_A_INVERSE, PreconditionerFactor.PRECONDITIONER_FACTOR_G_INVERSE]);
    const version = 1 + r.int(1000);
    const fs = factorShape(layer, factor);
    const spec: TensorSpec = { name: layer.name, shape: fs.shape, encoding: fs.encoding, version };
    const chunk = (tensor: TensorChunk | undefined, v = version, l = layer.name, f = factor) =>
      publish({ kind: { $case: 'chunk', value: { layer: l, factor: f, version: v, computedFromStep: 0, ...(tensor ? { tensor } : {}) } } });
    const commit = (l: string, v: number) =>
      publish({
        kind: { $case: 'commit', value: { layer: l, version: v, computedFromStep: 0, epoch: t.psEpoch(), factors: 2, damping: 0.01, pi: 1, residual: 0 } },
      });
    const rejectedInBand = (responses: Buffer[]) => {
      const acks = responses.map((b) => PublishPreconditionersResponse.decode(b));
      const bad = acks.find((a) => !a.accepted);
      return bad && acks.every((a) => !a.accepted) ? `accepted=false: ${bad.reason}` : undefined;
    };
    const cases: (() => FuzzCase | undefined)[] = [
      () => ({ ...base, name: 'publish/empty-envelope', messages: [publish({})], expect: [IA] }),
      () => ({
        ...base,
        name: 'publish/before-hello',
        messages: [
          pick(r, [
            chunk(validChunks(r, spec, 1)[0]),
            commit(layer.name, version),
            publish({ kind: { $case: 'watermark', value: { nextRefreshStep: 1, epoch: 1, intervals: {} } } }),
          ]),
        ],
        expect: [FP],
      }),
      () => ({
        ...base,
        name: 'publish/unknown-owner',
        messages: [publish({ kind: { $case: 'hello', value: { ownerId: pick(r, [this.ghostId(), '']), epoch: 1, layers: [] } } })],
        expect: [FP],
      }),
      () => ({
        ...base,
        name: 'publish/hello-from-non-owner',
        messages: [
          publish({ kind: { $case: 'hello', value: { ownerId: pick(r, ['ps-0', ...t.fakeWorkers, ...t.realWorkers]), epoch: t.psEpoch(), layers: [] } } }),
        ],
        expect: [FP],
      }),
      () => ({ ...base, name: 'publish/hello-twice', messages: [hello, hello], expect: [FP] }),
      () => ({ ...base, name: 'publish/chunk-without-tensor', messages: [hello, chunk(undefined)], expect: [IA] }),
      () => ({
        ...base,
        name: 'publish/chunk-version-mismatch',
        messages: [hello, chunk({ ...validChunks(r, spec, 1)[0], version: version + 1 })],
        expect: [IA],
      }),
      () => ({
        ...base,
        name: 'publish/chunk-unknown-layer',
        messages: [hello, chunk(validChunks(r, { ...spec, name: 'fc9', shape: [3, 3] }, 1)[0], version, 'fc9')],
        expect: [IA],
      }),
      () => {
        const n = fs.shape[0] + 1 + r.int(20);
        return { ...base, name: 'publish/chunk-wrong-shape', messages: [hello, chunk(validChunks(r, { ...spec, shape: [n, n] }, 1)[0])], expect: [IA] };
      },
      () => ({
        ...base,
        name: 'publish/chunk-dense-encoding',
        messages: [hello, chunk(validChunks(r, { ...spec, encoding: TensorEncoding.TENSOR_ENCODING_DENSE }, 1)[0])],
        expect: [IA],
      }),
      () => ({
        ...base,
        name: 'publish/chunk-bad-factor',
        messages: [hello, chunk(validChunks(r, spec, 1)[0], version, layer.name, pick(r, [0, 3, 99]) as PreconditionerFactor)],
        expect: [IA],
      }),
      () => {
        const other = this.smallLayers().find((l) => l.name !== layer.name) ?? t.layers.find((l) => l.name !== layer.name)!;
        const ofs = factorShape(other, factor);
        return {
          ...base,
          name: 'publish/chunk-layer-tensor-mismatch',
          messages: [hello, chunk(validChunks(r, { ...spec, name: other.name, shape: ofs.shape }, 1)[0])],
          expect: [IA],
        };
      },
      () => {
        const f = chunkFault(r, spec);
        return { ...base, name: `publish/chunks:${f.label}`, messages: [hello, ...f.chunks.map((c) => chunk(c, c.version))], expect: f.expect };
      },
      () => ({ ...base, name: 'publish/commit-without-inverses', messages: [hello, commit(layer.name, version)], expect: [], inBand: rejectedInBand }),
      () => ({
        ...base,
        name: 'publish/watermark-future-epoch',
        messages: [
          hello,
          publish({ kind: { $case: 'watermark', value: { nextRefreshStep: r.int(100), epoch: t.psEpoch() + 1 + r.int(100), intervals: {} } } }),
        ],
        expect: [FP],
      }),
      () => ({
        ...base,
        name: 'publish/watermark-stale-epoch',
        messages: [
          hello,
          publish({ kind: { $case: 'watermark', value: { nextRefreshStep: r.int(3), epoch: r.int(Math.max(1, t.psEpoch() - 1)), intervals: {} } } }),
        ],
        expect: [FP],
        tolerated: 'a watermark of an epoch older than the one held is ignored',
      }),
      () => ({
        ...base,
        name: 'publish/random-bytes',
        messages: [pick(r, [[], [hello]]).concat(undecodable(r, (b) => PublishPreconditionersRequest.decode(b)))].flat(),
        expect: [IA],
      }),
      () => ({ ...base, name: 'publish/huge-version', messages: [hello, chunk(undefined, 2 ** 60)], expect: [IA] }),
      () => ({
        ...base,
        name: 'publish/oversized',
        messages: [hello, oversized('publish', () => chunk({ ...validChunks(r, spec, 1)[0], data: Buffer.alloc(OVERSIZED) }))],
        expect: [RE],
      }),
      () => {
        // A complete, well-formed inverse pair of a version the PS already holds newer: rejected in band.
        if (phase !== 'training') return undefined;
        const small = new Set(this.smallLayers().map((l) => l.name));
        const held = [...t.held()].find(([l, h]) => small.has(l) && h.version >= 1 && t.owners.some((o) => o.id === h.ownerId && o.layers.includes(l)));
        if (!held) return undefined;
        const [name, h] = held;
        const l = t.layers.find((x) => x.name === name)!;
        const o = t.owners.find((x) => x.id === h.ownerId)!;
        const msgs = [publish({ kind: { $case: 'hello', value: { ownerId: o.id, epoch: t.psEpoch(), layers: o.layers } } })];
        for (const f of [PreconditionerFactor.PRECONDITIONER_FACTOR_A_INVERSE, PreconditionerFactor.PRECONDITIONER_FACTOR_G_INVERSE]) {
          const s = factorShape(l, f);
          for (const c of validChunks(r, { name, shape: s.shape, encoding: s.encoding, version: 0 }, 1)) msgs.push(chunk(c, 0, name, f));
        }
        msgs.push(commit(name, 0));
        return { ...base, name: 'publish/commit-stale-version', messages: msgs, expect: [], inBand: rejectedInBand };
      },
    ];
    return pick(r, cases)();
  }

  // --- FactorOwnerService.PushStatistics -----------------------------------------------------------

  private statisticsCase(phase: Phase): FuzzCase | undefined {
    const r = this.rng;
    const t = this.t;
    const oi = r.int(t.owners.length);
    const o = t.owners[oi];
    const base = { service: 'owner' as const, address: o.address, method: 'pushStatistics', kind: 'duplex' as const };
    const fake = pick(r, t.fakeWorkers);
    const hello = stats({ kind: { $case: 'hello', value: { workerId: fake, epoch: t.psEpoch() } } });
    const layer = pick(r, this.smallLayers());
    const kind = pick(r, [StatisticKind.STATISTIC_KIND_A, StatisticKind.STATISTIC_KIND_G]);
    // Steps far ahead of training, so that nothing here can be counted into a real step even if accepted.
    const step = 100000 + r.int(1000);
    const spec: TensorSpec = { name: layer.name, shape: statisticShape(layer, kind), encoding: TensorEncoding.TENSOR_ENCODING_SYMMETRIC_UPPER, version: step };
    const statistic = (tensor: TensorChunk | undefined, s = step, l = layer.name, k = kind) => {
      const v: StatisticChunk = { step: s, workerId: fake, layer: l, kind: k, numSamples: 128, ...(tensor ? { tensor } : {}) };
      return stats({ kind: { $case: 'statistic', value: v } });
    };
    const complete = (s: number, tensors: number, shards: number) =>
      stats({ kind: { $case: 'statisticsComplete', value: { step: s, workerId: fake, statisticTensors: tensors, shardCount: shards } } });
    const cases: (() => FuzzCase | undefined)[] = [
      () => ({ ...base, name: 'statistics/empty-envelope', messages: [stats({})], expect: [IA] }),
      () => ({ ...base, name: 'statistics/before-hello', messages: [pick(r, [statistic(validChunks(r, spec, 1)[0]), complete(step, 0, 2)])], expect: [FP] }),
      () => ({
        ...base,
        name: 'statistics/unknown-worker',
        messages: [
          stats({
            kind: {
              $case: 'hello',
              value: { workerId: pick(r, [this.ghostId(), '', 'ps-0', ...t.owners.map((x) => x.id)]), epoch: r.int(Math.max(1, t.psEpoch())) },
            },
          }),
        ],
        expect: [FP],
      }),
      () => ({ ...base, name: 'statistics/hello-twice', messages: [hello, hello], expect: [FP] }),
      () => ({ ...base, name: 'statistics/without-tensor', messages: [hello, statistic(undefined)], expect: [IA] }),
      () => ({
        ...base,
        name: 'statistics/version-mismatch',
        messages: [hello, statistic({ ...validChunks(r, spec, 1)[0], version: step + 1 })],
        expect: [IA],
      }),
      () => ({
        ...base,
        name: 'statistics/unknown-layer',
        messages: [hello, statistic(validChunks(r, { ...spec, name: 'fc9', shape: [3, 3] }, 1)[0], step, 'fc9')],
        expect: [IA],
      }),
      () => ({
        ...base,
        name: 'statistics/bad-kind',
        messages: [hello, statistic(validChunks(r, spec, 1)[0], step, layer.name, pick(r, [0, 3, 99]) as StatisticKind)],
        expect: [IA],
      }),
      () => {
        const n = spec.shape[0] + 1 + r.int(20);
        const owned = r.next() < 0.5;
        const l = this.smallLayers().find((x) => o.layers.includes(x.name) === owned) ?? layer;
        const s2: TensorSpec = { ...spec, name: l.name, shape: [n, n] };
        return {
          ...base,
          name: `statistics/wrong-shape-${o.layers.includes(l.name) ? 'owned' : 'not-owned'}-layer`,
          messages: [hello, statistic(validChunks(r, s2, 1)[0], step, l.name)],
          expect: [IA],
        };
      },
      () => ({
        ...base,
        name: 'statistics/dense-encoding',
        messages: [hello, statistic(validChunks(r, { ...spec, encoding: TensorEncoding.TENSOR_ENCODING_DENSE }, 1)[0])],
        expect: [IA],
      }),
      () => {
        const f = chunkFault(r, spec);
        return { ...base, name: `statistics/chunks:${f.label}`, messages: [hello, ...f.chunks.map((c) => statistic(c, c.version))], expect: f.expect };
      },
      () => {
        const c = validChunks(r, spec, 3);
        return { ...base, name: 'statistics/complete-with-incomplete-tensor', messages: [hello, statistic(c[0]), complete(step, 1, 2)], expect: [FP] };
      },
      () => ({ ...base, name: 'statistics/complete-shard-count-0', messages: [hello, complete(step, 0, 0)], expect: [IA] }),
      () => ({ ...base, name: 'statistics/complete-count-mismatch', messages: [hello, complete(step, 1 + r.int(5), 2)], expect: [IA] }),
      () => ({
        ...base,
        name: 'statistics/random-bytes',
        messages: [pick(r, [[], [hello]]).concat(undecodable(r, (b) => PushStatisticsRequest.decode(b)))].flat(),
        expect: [IA],
      }),
      () => ({ ...base, name: 'statistics/huge-step', messages: [hello, complete(2 ** 60, 0, 2)], expect: [IA] }),
      () => ({
        ...base,
        name: 'statistics/oversized',
        messages: [hello, oversized('stats', () => statistic({ ...validChunks(r, spec, 1)[0], data: Buffer.alloc(OVERSIZED) }))],
        expect: [RE],
      }),
      () => ({ service: 'owner', address: t.ps, method: 'pushStatistics', kind: 'duplex', name: 'statistics/sent-to-the-ps', messages: [hello], expect: [UI] }),
      () => {
        // A well-formed statistic of a step this owner has already reduced: a late sender, dropped.
        const reduced = t.ownerReduced(oi);
        const mine = this.smallLayers().find((x) => o.layers.includes(x.name));
        if (phase !== 'training' || reduced < 2 || !mine) return undefined;
        const s = r.int(reduced - 1);
        const sp: TensorSpec = { name: mine.name, shape: statisticShape(mine, kind), encoding: TensorEncoding.TENSOR_ENCODING_SYMMETRIC_UPPER, version: s };
        return {
          ...base,
          name: 'statistics/stale-step',
          messages: [hello, statistic(validChunks(r, sp, 1)[0], s, mine.name), complete(s, 1, 2)],
          expect: [FP],
          tolerated: 'statistics of a step already reduced are dropped (late sender)',
        };
      },
    ];
    return pick(r, cases)();
  }

  // --- ParameterServerService.DownloadParameters ---------------------------------------------------

  private downloadCase(): FuzzCase {
    const r = this.rng;
    const t = this.t;
    const base = { service: 'ps' as const, address: t.ps, method: 'downloadParameters', kind: 'server' as const };
    const req = (m: DownloadParametersRequest) => buf(DownloadParametersRequest.encode(m).finish());
    const cases: (() => FuzzCase)[] = [
      () => ({
        ...base,
        name: 'download/unknown-name',
        messages: [
          req({
            names: [pick(r, ['fc9.weight', 'nope', 'fc1', `${pick(r, t.params).name}x`]), ...(r.next() < 0.5 ? [pick(r, t.params).name] : [])],
            newerThanVersion: 0,
            maxMessageBytes: 0,
          }),
        ],
        expect: [NF],
      }),
      () => ({ ...base, name: 'download/empty-name', messages: [req({ names: [''], newerThanVersion: 0, maxMessageBytes: 0 })], expect: [NF] }),
      () => ({ ...base, name: 'download/random-bytes', messages: [undecodable(r, (b) => DownloadParametersRequest.decode(b))], expect: [IA] }),
      () => ({ ...base, name: 'download/huge-version', messages: [req({ names: [], newerThanVersion: 2 ** 60, maxMessageBytes: 0 })], expect: [IA] }),
      () => ({
        ...base,
        name: 'download/oversized',
        messages: [oversized('download', () => req({ names: ['x'.repeat(OVERSIZED)], newerThanVersion: 0, maxMessageBytes: 0 }))],
        expect: [RE],
      }),
    ];
    return pick(r, cases)();
  }

  // --- MembershipService.Join / Heartbeat -----------------------------------------------------------

  private joinCase(): FuzzCase {
    const r = this.rng;
    const t = this.t;
    const base = { service: 'membership' as const, address: t.ps, method: 'join', kind: 'unary' as const };
    const req = (m: JoinRequest) => buf(JoinRequest.encode(m).finish());
    const member = (id: string, role: Role) => ({
      id,
      role,
      address: '127.0.0.1:1',
      state: LifecycleState.LIFECYCLE_STATE_STARTING,
      joinedEpoch: 0,
      lastHeartbeatUnixMs: 0,
      capacity: 1,
    });
    const cases: (() => FuzzCase)[] = [
      () => ({ ...base, name: 'join/without-member', messages: [req({})], expect: [IA] }),
      () => ({
        ...base,
        name: 'join/bad-role',
        messages: [req({ member: member(pick(r, [this.ghostId(), ''])!, pick(r, [Role.ROLE_UNSPECIFIED, Role.ROLE_PARAMETER_SERVER, 5, 99] as Role[])) })],
        expect: [IA],
      }),
      () => ({
        ...base,
        name: 'join/as-the-ps',
        messages: [req({ member: member('ps-0', pick(r, [Role.ROLE_WORKER, Role.ROLE_FACTOR_OWNER])) })],
        expect: [FP],
      }),
      () => {
        // A member's id with another role: an owner as a worker, a (fake) worker as an owner. Not
        // the real workers' ids: were one's lease to run out, the join would be valid and take it.
        const [id, role] = pick(r, [
          ...t.owners.map((o) => [o.id, Role.ROLE_WORKER] as const),
          ...t.fakeWorkers.map((w) => [w, Role.ROLE_FACTOR_OWNER] as const),
        ]);
        return { ...base, name: 'join/role-change', messages: [req({ member: member(id, role) })], expect: [FP] };
      },
      () => ({ ...base, name: 'join/random-bytes', messages: [undecodable(r, (b) => JoinRequest.decode(b))], expect: [IA] }),
      () => ({
        ...base,
        name: 'join/oversized',
        messages: [oversized('join', () => req({ member: member('x'.repeat(OVERSIZED), Role.ROLE_WORKER) }))],
        expect: [RE],
      }),
    ];
    return pick(r, cases)();
  }

  private heartbeatCase(): FuzzCase {
    const r = this.rng;
    const t = this.t;
    const base = { service: 'membership' as const, address: t.ps, method: 'heartbeat', kind: 'unary' as const };
    const req = (m: HeartbeatRequest) => buf(HeartbeatRequest.encode(m).finish());
    const unknown = (responses: Buffer[]) => {
      const res = responses[0] ? HeartbeatResponse.decode(responses[0]) : undefined;
      return res && !res.known ? 'known=false (join first)' : undefined;
    };
    const cases: (() => FuzzCase)[] = [
      () => ({
        ...base,
        name: 'heartbeat/unknown-member',
        messages: [req({ memberId: pick(r, [this.ghostId(), '']), epoch: r.int(10), state: LifecycleState.LIFECYCLE_STATE_READY, step: 0 })],
        expect: [],
        inBand: unknown,
      }),
      () => ({
        ...base,
        name: 'heartbeat/as-the-ps',
        messages: [req({ memberId: 'ps-0', epoch: t.psEpoch(), state: LifecycleState.LIFECYCLE_STATE_STOPPED, step: 0 })],
        expect: [FP],
      }),
      () => ({
        ...base,
        session: t.sessions.get(t.fakeWorkers[0]),
        name: 'heartbeat/bad-state',
        messages: [req({ memberId: pick(r, t.fakeWorkers), epoch: t.psEpoch(), state: pick(r, [5, 42, 99]) as LifecycleState, step: 0 })],
        expect: [IA],
      }),
      () => ({ ...base, name: 'heartbeat/random-bytes', messages: [undecodable(r, (b) => HeartbeatRequest.decode(b))], expect: [IA] }),
      () => ({
        ...base,
        session: t.sessions.get(t.fakeWorkers[0]),
        name: 'heartbeat/huge-epoch',
        messages: [req({ memberId: pick(r, t.fakeWorkers), epoch: 2 ** 60, state: LifecycleState.LIFECYCLE_STATE_READY, step: 0 })],
        expect: [IA],
      }),
      () => ({
        ...base,
        name: 'heartbeat/oversized',
        messages: [oversized('heartbeat', () => req({ memberId: 'x'.repeat(OVERSIZED), epoch: 0, state: 0, step: 0 }))],
        expect: [RE],
      }),
    ];
    return pick(r, cases)();
  }

  // --- Well-formed messages that lie --------------------------------------------------------------

  /**
   * Messages that are well-formed but say what their sender may not say: a Join under a live
   * member's id, a Leave or a heartbeat of another member, a publish hello as another owner (with
   * no secret, or with another member's), a complete preconditioner of a layer another owner holds,
   * one of the sender's own layer with a version far ahead, or with NaN inverses. The secrets used
   * are real ones (a buggy or compromised member): none of these may be accepted.
   */
  private lyingCase(phase: Phase): FuzzCase | undefined {
    const r = this.rng;
    const t = this.t;
    const membership = (method: string) => ({ service: 'membership' as const, address: t.ps, method, kind: 'unary' as const });
    const publishBase = { service: 'ps' as const, address: t.ps, method: 'publishPreconditioners', kind: 'duplex' as const };
    const _fake = pick(r, t.fakeWorkers);
    const owner = pick(r, t.owners);
    const other = t.owners.find((o) => o.id !== owner.id);
    // Some other member's secret (a worker's, or another owner's), or none.
    const foreignSecret = (victim: string): { session?: string; expect: status[] } => {
      const holders = [...t.sessions.keys()].filter((id) => id !== victim);
      if (r.next() < 0.4 || holders.length === 0) return { expect: [UA] };
      return { session: t.sessions.get(pick(r, holders)), expect: [PD] };
    };
    const victim = pick(r, [...t.owners.map((o) => o.id), ...t.fakeWorkers, ...t.realWorkers]);
    const hello = (id: string) => publish({ kind: { $case: 'hello', value: { ownerId: id, epoch: t.psEpoch(), layers: [] } } });
    /** A complete Kronecker preconditioner of `layer` (identity inverses, or NaN). */
    const pair = (layer: FuzzLayer, version: number, values: 'identity' | 'nan', computedFromStep = 0): Buffer[] => {
      const msgs: Buffer[] = [];
      for (const f of [PreconditionerFactor.PRECONDITIONER_FACTOR_A_INVERSE, PreconditionerFactor.PRECONDITIONER_FACTOR_G_INVERSE]) {
        const { shape, encoding } = factorShape(layer, f);
        const n = shape[0];
        const packed = new Float32Array((n * (n + 1)) / 2);
        let k = 0;
        for (let i = 0; i < n; i++) for (let j = i; j < n; j++) packed[k++] = values === 'nan' ? Number.NaN : i === j ? 1 : 0;
        const data = Buffer.from(packed.buffer);
        const tensor: TensorChunk = { name: layer.name, shape, encoding, version, chunkIndex: 0, chunkCount: 1, totalBytes: data.length, offsetBytes: 0, data };
        msgs.push(publish({ kind: { $case: 'chunk', value: { layer: layer.name, factor: f, version, computedFromStep, tensor } } }));
      }
      msgs.push(
        publish({
          kind: { $case: 'commit', value: { layer: layer.name, version, computedFromStep, epoch: t.psEpoch(), factors: 2, damping: 0.01, pi: 1, residual: 0 } },
        }),
      );
      return msgs;
    };
    const notAccepted = (responses: Buffer[]) => {
      const acks = responses.map((b) => PublishPreconditionersResponse.decode(b));
      return acks.length > 0 && acks.every((a) => !a.accepted) ? `accepted=false: ${acks[0].reason}` : undefined;
    };
    const small = this.smallLayers().filter((l) => l.kind !== 'bn');
    const cases: (() => FuzzCase | undefined)[] = [
      () => {
        // Join under a live member's id (same role), without that member's secret.
        const [id, role] = pick(r, [
          ...t.owners.map((o) => [o.id, Role.ROLE_FACTOR_OWNER] as const),
          ...t.fakeWorkers.map((w) => [w, Role.ROLE_WORKER] as const),
        ]);
        const s =
          r.next() < 0.5
            ? t.sessions.get(
                pick(
                  r,
                  [...t.sessions.keys()].filter((x) => x !== id),
                ),
              )
            : undefined;
        const m = { id, role, address: '127.0.0.1:1', state: LifecycleState.LIFECYCLE_STATE_STARTING, joinedEpoch: 0, lastHeartbeatUnixMs: 0, capacity: 1 };
        return {
          ...membership('join'),
          name: 'lie/join-live-id',
          messages: [buf(JoinRequest.encode({ member: m }).finish())],
          expect: [AE],
          ...(s ? { session: s } : {}),
        };
      },
      () => {
        const f = foreignSecret(victim);
        return {
          ...membership('leave'),
          name: 'lie/leave-of-another-member',
          messages: [leaveReq({ memberId: victim, reason: 'lie' })],
          expect: f.expect,
          ...(f.session ? { session: f.session } : {}),
        };
      },
      () => {
        const f = foreignSecret(victim);
        const req = buf(HeartbeatRequest.encode({ memberId: victim, epoch: t.psEpoch(), state: LifecycleState.LIFECYCLE_STATE_DRAINING, step: 0 }).finish());
        return {
          ...membership('heartbeat'),
          name: 'lie/heartbeat-of-another-member',
          messages: [req],
          expect: f.expect,
          ...(f.session ? { session: f.session } : {}),
        };
      },
      () => {
        // A publish hello as an owner, from someone else (a worker's secret, another owner's, none).
        const f = foreignSecret(owner.id);
        return {
          ...publishBase,
          name: 'lie/publish-as-another-owner',
          messages: [hello(owner.id), ...(small[0] ? pair(small[0], 1, 'nan') : [])],
          expect: f.expect,
          ...(f.session ? { session: f.session } : {}),
        };
      },
      () => {
        // Owner A's real stream publishes a layer owner B holds: answered accepted=false.
        const foreign = small.find((l) => other?.layers.includes(l.name));
        if (!foreign || !other) return undefined;
        const v = (t.held().get(foreign.name)?.version ?? 0) + 1;
        return {
          ...publishBase,
          session: t.sessions.get(owner.id),
          name: 'lie/publish-foreign-layer',
          messages: [hello(owner.id), ...pair(foreign, v, 'identity')],
          expect: [],
          inBand: notAccepted,
        };
      },
      () => {
        // The owner's own layer, a version (or step) far ahead: it would make its real versions look old.
        const mine = small.find((l) => owner.layers.includes(l.name));
        if (!mine) return undefined;
        const far = pick(r, [2 ** 52, 2 ** 40, t.psStep() + 100000 + r.int(1e6)]);
        const msgs = r.next() < 0.7 ? pair(mine, far, 'identity') : pair(mine, (t.held().get(mine.name)?.version ?? 0) + 1, 'identity', far);
        return { ...publishBase, session: t.sessions.get(owner.id), name: 'lie/publish-version-ahead', messages: [hello(owner.id), ...msgs], expect: [IA] };
      },
      () => {
        // The owner's own layer with NaN inverses: refused (or, if a newer version arrived meanwhile, not newer).
        const mine = small.find((l) => owner.layers.includes(l.name));
        if (!mine) return undefined;
        const v = (t.held().get(mine.name)?.version ?? 0) + 1;
        return {
          ...publishBase,
          session: t.sessions.get(owner.id),
          name: 'lie/publish-nan',
          messages: [hello(owner.id), ...pair(mine, v, 'nan')],
          expect: [IA],
          inBand: notAccepted,
        };
      },
    ];
    void phase;
    return pick(r, cases)();
  }

  // --- FactorOwnerService.FetchLayerState (owners and the PS) ------------------------------------

  private fetchCase(): FuzzCase {
    const r = this.rng;
    const t = this.t;
    const o = pick(r, t.owners);
    const req = (m: FetchLayerStateRequest) => buf(FetchLayerStateRequest.encode(m).finish());
    const base = { service: 'owner' as const, address: o.address, method: 'fetchLayerState', kind: 'server' as const };
    const cases: (() => FuzzCase)[] = [
      () => ({
        ...base,
        name: 'fetch/unknown-layer',
        messages: [req({ layers: [pick(r, ['fc9', 'nope', '', 'fc1.weight'])], epoch: r.int(10) })],
        expect: [NF],
      }),
      () => ({
        ...base,
        name: 'fetch/many-unknown-layers',
        messages: [req({ layers: Array.from({ length: 100 + r.int(1000) }, (_, i) => `l${i}`), epoch: 1 })],
        expect: [NF],
      }),
      () => ({
        ...base,
        address: t.ps,
        name: 'fetch/from-the-ps-without-checkpoint',
        messages: [req({ layers: [pick(r, t.layers).name], epoch: t.psEpoch() })],
        expect: [NF],
      }),
      () => ({ ...base, name: 'fetch/random-bytes', messages: [undecodable(r, (b) => FetchLayerStateRequest.decode(b))], expect: [IA] }),
      () => ({ ...base, name: 'fetch/huge-epoch', messages: [req({ layers: ['fc9'], epoch: 2 ** 60 })], expect: [IA] }),
      () => ({ ...base, name: 'fetch/oversized', messages: [oversized(`fetch`, () => req({ layers: ['x'.repeat(OVERSIZED)], epoch: 0 }))], expect: [RE] }),
    ];
    return pick(r, cases)();
  }
}
