/**
 * The fast service definitions (src/transport/fast-services.ts) over real gRPC on loopback: every
 * tensor-carrying RPC of ParameterServerService and FactorOwnerService (Train both ways,
 * PublishPreconditioners, DownloadParameters, PushStatistics, FetchLayerState), with fast and
 * generated definitions mixed on either side (the wire format is the same), tensors checked bit
 * for bit; and Debian's python3-grpcio/python3-protobuf, with classes built from
 * src/gen/spngd.binpb, reading what a fast server sends and sending what it reads.
 */
import test, { type ExecutionContext } from 'ava';
import * as grpc from '@grpc/grpc-js';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';

import { sendDense, sendSymmetric } from '../src/actors/common/tensor-io.js';
import {
  FactorOwnerServiceClient,
  type FactorOwnerServiceServer,
  FactorOwnerServiceService,
  type FetchLayerStateResponse,
  type PushStatisticsRequest,
  type PushStatisticsResponse,
  StatisticKind,
} from '../src/gen/spngd/v1/factor_owner.js';
import {
  type DownloadParametersResponse,
  ParameterServerServiceClient,
  type ParameterServerServiceServer,
  ParameterServerServiceService,
  PreconditionerFactor,
  type PublishPreconditionersRequest,
  type PublishPreconditionersResponse,
  type TrainRequest,
  type TrainResponse,
} from '../src/gen/spngd/v1/parameter_server.js';
import {
  type AssembledTensor,
  ByteBudgetReader,
  ByteBudgetWriter,
  channelOptions,
  envelopeTensor,
  failServerCall,
  FastFactorOwnerServiceClient,
  FastFactorOwnerServiceService,
  FastParameterServerServiceClient,
  FastParameterServerServiceService,
  GRPC_JS_VERSION,
  MiB,
  packUpperTriangle,
  RESPONSE_SCRATCH_ENABLED,
  serverOptions,
  TensorAssembler,
} from '../src/transport/index.js';
import { PYTHON, pythonTest } from './helpers/python-client.js';

const CHUNK = 1 * MiB;

/** Deterministic random bit patterns (NaN payloads, subnormals, infinities included). */
function randomBits(n: number, seed: number): Float32Array {
  const u = new Uint32Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    u[i] = x;
  }
  return new Float32Array(u.buffer);
}

/**
 * Finite random values, for matrices that go through packUpperTriangle: a float32 -> number ->
 * float32 round trip may quiet a NaN's payload, differently in different JIT tiers.
 */
function randomFinite(n: number, seed: number): Float32Array {
  const u = new Uint32Array(randomBits(n, seed).buffer);
  return Float32Array.from(u, (x) => (x / 2 ** 32 - 0.5) * 1000);
}

const bytesOf = (v: Float32Array) => Buffer.from(v.buffer, v.byteOffset, v.byteLength);
const digest = (v: Float32Array | Uint8Array) =>
  createHash('sha1')
    .update(Buffer.from(v.buffer, v.byteOffset, v.byteLength))
    .digest('hex');

/** Tensors served by DownloadParameters: sizes and name lengths that put data at every alignment. */
const DOWNLOADS = new Map<string, { values: Float32Array; shape: number[] }>([
  ['a', { values: randomBits(1, 1), shape: [1] }],
  ['bb', { values: randomBits(1000, 2), shape: [10, 100] }],
  ['ccc', { values: randomBits((3 * MiB) / 4 + 3, 3), shape: [(3 * MiB) / 4 + 3] }],
  ['dddd', { values: randomBits(4097, 4), shape: [4097] }],
]);

/** Symmetric matrices served by FetchLayerState: [n, n] and a batch of 2x2 blocks. */
const LAYER_STATES = new Map<string, { matrix: Float32Array; n: number; batch?: number }>([
  ['fc1', { matrix: randomFinite(300 * 300, 5), n: 300 }],
  ['bn1', { matrix: randomFinite(64 * 4, 6), n: 2, batch: 64 }],
]);

const packedOf = (s: { matrix: Float32Array; n: number; batch?: number }) => packUpperTriangle(s.matrix, s.n, s.batch ?? 1);

/** Runs `f` on the stream's messages in order, failing the call on error; resolves at the end. */
function serveInOrder<T>(call: grpc.ServerDuplexStream<T, unknown>, f: (m: T) => Promise<void> | void, atEnd: () => Promise<void>): void {
  let chain = Promise.resolve();
  const fail = (err: unknown) => {
    failServerCall(call, err);
  };
  call.on('data', (m: T) => {
    chain = chain.then(() => f(m)).catch(fail);
  });
  call.on('end', () => {
    chain = chain.then(atEnd).catch(fail);
  });
}

function psImpl(): ParameterServerServiceServer {
  return {
    // Echoes the gradients back as parameters, and acknowledges with their digests.
    train(call) {
      const writer = new ByteBudgetWriter<TrainResponse>(call);
      const asm = new TensorAssembler();
      let received: AssembledTensor[] = [];
      serveInOrder<TrainRequest>(
        call,
        async (req) => {
          const k = req.kind;
          if (k?.$case === 'hello') {
            await writer.write({ kind: { $case: 'welcome', value: { epoch: k.value.epoch, step: 0, chunkBytes: CHUNK, maxMessageBytes: 8 * MiB } } }, 64);
          } else if (k?.$case === 'gradient') {
            const t = asm.push(envelopeTensor(k.value.tensor, k.value.step, 'GradientChunk.step'));
            if (t) received.push(t);
          } else if (k?.$case === 'gradientsComplete') {
            asm.assertComplete();
            const step = k.value.step;
            const tensors = received;
            received = [];
            for (const t of tensors) {
              await sendDense(
                writer,
                (tensor) => ({ kind: { $case: 'parameters' as const, value: { step, tensor } } }),
                t.name,
                t.values,
                t.shape,
                step,
                CHUNK,
                { copy: false },
              );
            }
            const reason = tensors.map((t) => `${t.name}:${digest(t.values)}`).join(',');
            await writer.write({ kind: { $case: 'gradientsAck', value: { step, accepted: true, reason, workersReduced: 1, loss: 0, accuracy: 0 } } }, 256);
          }
        },
        () => writer.end(),
      );
    },
    shardSession(call) {
      call.end();
    },
    // Acknowledges each commit with the digest of every factor received for it.
    publishPreconditioners(call) {
      const writer = new ByteBudgetWriter<PublishPreconditionersResponse>(call);
      const asm = new TensorAssembler();
      const factors = new Map<string, string[]>();
      serveInOrder<PublishPreconditionersRequest>(
        call,
        async (req) => {
          const k = req.kind;
          if (k?.$case === 'chunk') {
            const t = asm.push(envelopeTensor(k.value.tensor, k.value.version, 'PreconditionerChunk.version'));
            if (t) factors.set(k.value.layer, [...(factors.get(k.value.layer) ?? []), `${k.value.factor}:${digest(t.values)}`]);
          } else if (k?.$case === 'commit') {
            const { layer, version } = k.value;
            await writer.write({ layer, version, accepted: true, reason: (factors.get(layer) ?? []).join(',') }, 64);
            factors.delete(layer);
          }
        },
        () => writer.end(),
      );
    },
    async downloadParameters(call) {
      try {
        const writer = new ByteBudgetWriter<DownloadParametersResponse>(call);
        const names = call.request.names.length > 0 ? call.request.names : [...DOWNLOADS.keys()];
        const chunkBytes = call.request.maxMessageBytes > 0 ? call.request.maxMessageBytes : CHUNK;
        for (const name of names) {
          const t = DOWNLOADS.get(name)!;
          await sendDense(writer, (tensor) => ({ step: 9, tensorCount: names.length, tensor }), name, t.values, t.shape, 9, chunkBytes, { copy: false });
        }
        await writer.end();
      } catch (err) {
        failServerCall(call, err);
      }
    },
  };
}

function ownerImpl(): FactorOwnerServiceServer {
  return {
    // Answers each statistics_complete with one schedule per statistic received, its layer field
    // carrying "name/kind:digest".
    pushStatistics(call) {
      const writer = new ByteBudgetWriter<PushStatisticsResponse>(call);
      const asm = new TensorAssembler();
      let received: string[] = [];
      serveInOrder<PushStatisticsRequest>(
        call,
        async (req) => {
          const k = req.kind;
          if (k?.$case === 'statistic') {
            const t = asm.push(envelopeTensor(k.value.tensor, k.value.step, 'StatisticChunk.step'));
            if (t) received.push(`${k.value.layer}/${k.value.kind}:${digest(t.values)}`);
          } else if (k?.$case === 'statisticsComplete') {
            const schedules = received.map((layer) => ({
              layer,
              kind: StatisticKind.STATISTIC_KIND_A,
              interval: 1,
              lastRefreshStep: 0,
              nextRefreshStep: 0,
              lastDrift: 0,
            }));
            received = [];
            await writer.write({ epoch: 1, schedules, ackedStep: k.value.step }, 256);
          }
        },
        () => writer.end(),
      );
    },
    async fetchLayerState(call) {
      try {
        const writer = new ByteBudgetWriter<FetchLayerStateResponse>(call);
        for (const layer of call.request.layers) {
          const s = LAYER_STATES.get(layer)!;
          const schedule = { layer, kind: StatisticKind.STATISTIC_KIND_G, interval: 3, lastRefreshStep: 4, nextRefreshStep: 7, lastDrift: 0.25 };
          await sendSymmetric(writer, (tensor) => ({ schedule, tensor }), layer, s.matrix, s.n, 0, 64 * 1024, s.batch);
        }
        await writer.end();
      } catch (err) {
        failServerCall(call, err);
      }
    },
  };
}

async function startServer(fast: boolean): Promise<{ address: string; server: grpc.Server }> {
  const server = new grpc.Server(serverOptions());
  server.addService(fast ? FastParameterServerServiceService : ParameterServerServiceService, psImpl());
  server.addService(fast ? FastFactorOwnerServiceService : FactorOwnerServiceService, ownerImpl());
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  return { address: `127.0.0.1:${port}`, server };
}

function clients(address: string, fast: boolean): { ps: ParameterServerServiceClient; owner: FactorOwnerServiceClient; close(): void } {
  const creds = grpc.credentials.createInsecure();
  const ps = fast ? new FastParameterServerServiceClient(address, creds, channelOptions()) : new ParameterServerServiceClient(address, creds, channelOptions());
  const owner = fast ? new FastFactorOwnerServiceClient(address, creds, channelOptions()) : new FactorOwnerServiceClient(address, creds, channelOptions());
  return {
    ps,
    owner,
    close: () => {
      ps.close();
      owner.close();
    },
  };
}

/** Reads a stream to its end, assembling the tensors of the messages `tensorOf` picks. */
async function assembleAll<T>(
  call: grpc.ClientReadableStream<T> | grpc.ClientDuplexStream<unknown, T>,
  tensorOf: (m: T) => { tensor: Parameters<typeof envelopeTensor>[0]; version: number } | undefined,
  others: T[] = [],
): Promise<Map<string, AssembledTensor>> {
  const asm = new TensorAssembler();
  const out = new Map<string, AssembledTensor>();
  for await (const m of new ByteBudgetReader<T>(call, { sizeOf: () => CHUNK })) {
    const t = tensorOf(m);
    if (t === undefined) {
      others.push(m);
      continue;
    }
    const done = asm.push(envelopeTensor(t.tensor, t.version));
    if (done) out.set(done.name, done);
  }
  asm.assertComplete();
  return out;
}

async function exercise(t: ExecutionContext, address: string, fastClient: boolean, label: string): Promise<void> {
  const c = clients(address, fastClient);
  try {
    // DownloadParameters: default chunks, then 1000-byte chunks (many messages, every offset).
    for (const maxMessageBytes of [0, 1000]) {
      const got = await assembleAll(c.ps.downloadParameters({ names: [], newerThanVersion: 0, maxMessageBytes }), (m) => ({
        tensor: m.tensor,
        version: m.step,
      }));
      t.deepEqual([...got.keys()].sort(), [...DOWNLOADS.keys()].sort(), `${label}: download tensors`);
      for (const [name, want] of DOWNLOADS) {
        t.deepEqual(got.get(name)!.shape, want.shape);
        t.is(Buffer.compare(bytesOf(got.get(name)!.values), bytesOf(want.values)), 0, `${label}: download ${name} (chunks of ${maxMessageBytes || CHUNK})`);
      }
    }

    // Train: gradients up, the same tensors back as parameters, digests in the ack.
    {
      const grads = [
        { name: 'w', values: randomBits((2 * MiB) / 4 + 1, 7), shape: [(2 * MiB) / 4 + 1] },
        { name: 'bias', values: randomBits(33, 8), shape: [33] },
      ];
      const call = c.ps.train();
      const others: TrainResponse[] = [];
      const reading = assembleAll<TrainResponse>(
        call,
        (m) => (m.kind?.$case === 'parameters' ? { tensor: m.kind.value.tensor, version: m.kind.value.step } : undefined),
        others,
      );
      const w = new ByteBudgetWriter<TrainRequest>(call);
      await w.write({ kind: { $case: 'hello', value: { workerId: 'w1', epoch: 1, parametersVersion: 0, maxMessageBytes: 8 * MiB } } }, 64);
      for (const g of grads) {
        await sendDense(
          w,
          (tensor) => ({ kind: { $case: 'gradient' as const, value: { step: 3, workerId: 'w1', numSamples: 4, tensor } } }),
          g.name,
          g.values,
          g.shape,
          3,
          CHUNK,
          { copy: false },
        );
      }
      await w.write(
        {
          kind: {
            $case: 'gradientsComplete',
            value: { step: 3, workerId: 'w1', numSamples: 4, gradientTensors: 2, lossSum: 1, numCorrect: 2, phaseMs: { compute: 1 } },
          },
        },
        64,
      );
      await w.end();
      const params = await reading;
      for (const g of grads) t.is(Buffer.compare(bytesOf(params.get(g.name)!.values), bytesOf(g.values)), 0, `${label}: train echo ${g.name}`);
      const ack = others.find((m) => m.kind?.$case === 'gradientsAck');
      t.is(
        ack?.kind?.$case === 'gradientsAck' ? ack.kind.value.reason : undefined,
        grads.map((g) => `${g.name}:${digest(g.values)}`).join(','),
        `${label}: train ack`,
      );
      t.is(others[0]?.kind?.$case, 'welcome');
    }

    // PublishPreconditioners: two factors and a commit.
    {
      const a = { matrix: randomFinite(200 * 200, 9), n: 200 };
      const g = { matrix: randomFinite(70 * 70, 10), n: 70 };
      const call = c.ps.publishPreconditioners();
      const acks: PublishPreconditionersResponse[] = [];
      const reading = (async () => {
        for await (const m of new ByteBudgetReader<PublishPreconditionersResponse>(call, { sizeOf: () => 64 })) acks.push(m);
      })();
      const w = new ByteBudgetWriter<PublishPreconditionersRequest>(call);
      await w.write({ kind: { $case: 'hello', value: { ownerId: 'o1', epoch: 1, layers: ['fc1'] } } }, 64);
      for (const [factor, s] of [
        [PreconditionerFactor.PRECONDITIONER_FACTOR_A_INVERSE, a],
        [PreconditionerFactor.PRECONDITIONER_FACTOR_G_INVERSE, g],
      ] as const) {
        await sendSymmetric(
          w,
          (tensor) => ({ kind: { $case: 'chunk' as const, value: { layer: 'fc1', factor, version: 2, computedFromStep: 1, tensor } } }),
          'fc1',
          s.matrix,
          s.n,
          2,
          32 * 1024,
        );
      }
      await w.write(
        { kind: { $case: 'commit', value: { layer: 'fc1', version: 2, computedFromStep: 1, epoch: 1, factors: 2, damping: 1e-3, pi: 1, residual: 0 } } },
        64,
      );
      await w.end();
      await reading;
      t.is(acks.length, 1);
      t.is(acks[0].reason, `1:${digest(packedOf(a))},2:${digest(packedOf(g))}`, `${label}: preconditioner digests`);
    }

    // PushStatistics: an [n, n] factor and a batch of 2x2 blocks.
    {
      const stats = [
        { layer: 'conv1', kind: StatisticKind.STATISTIC_KIND_A, matrix: randomFinite(150 * 150, 11), n: 150 },
        { layer: 'bn1', kind: StatisticKind.STATISTIC_KIND_BN_FISHER, matrix: randomFinite(32 * 4, 12), n: 2, batch: 32 },
      ];
      const call = c.owner.pushStatistics();
      const responses: PushStatisticsResponse[] = [];
      const reading = (async () => {
        for await (const m of new ByteBudgetReader<PushStatisticsResponse>(call, { sizeOf: () => 64 })) responses.push(m);
      })();
      const w = new ByteBudgetWriter<PushStatisticsRequest>(call);
      await w.write({ kind: { $case: 'hello', value: { workerId: 'w1', epoch: 1 } } }, 64);
      for (const s of stats) {
        await sendSymmetric(
          w,
          (tensor) => ({ kind: { $case: 'statistic' as const, value: { step: 5, workerId: 'w1', layer: s.layer, kind: s.kind, numSamples: 8, tensor } } }),
          s.layer,
          s.matrix,
          s.n,
          5,
          16 * 1024,
          s.batch,
        );
      }
      await w.write({ kind: { $case: 'statisticsComplete', value: { step: 5, workerId: 'w1', statisticTensors: 2, shardCount: 1 } } }, 64);
      await w.end();
      await reading;
      t.is(responses.length, 1);
      t.deepEqual(
        responses[0].schedules.map((s) => s.layer),
        stats.map((s) => `${s.layer}/${s.kind}:${digest(packUpperTriangle(s.matrix, s.n, s.batch ?? 1))}`),
        `${label}: statistics digests`,
      );
      t.is(responses[0].ackedStep, 5);
    }

    // FetchLayerState.
    {
      const schedules: string[] = [];
      const got = await assembleAll<FetchLayerStateResponse>(c.owner.fetchLayerState({ layers: [...LAYER_STATES.keys()], epoch: 1 }), (m) => {
        if (m.schedule) schedules.push(`${m.schedule.layer}:${m.schedule.nextRefreshStep}`);
        return { tensor: m.tensor, version: m.tensor?.version ?? 0 };
      });
      for (const [layer, s] of LAYER_STATES) {
        t.is(Buffer.compare(bytesOf(got.get(layer)!.values), bytesOf(packedOf(s))), 0, `${label}: layer state ${layer}`);
      }
      t.true(schedules.length > 0 && schedules.every((s) => s.endsWith(':7')));
    }
  } finally {
    c.close();
  }
}

for (const [fastServer, fastClient] of [
  [true, true],
  [true, false],
  [false, true],
  [false, false],
] as const) {
  const label = `${fastServer ? 'fast' : 'generated'} server, ${fastClient ? 'fast' : 'generated'} client`;
  test(`every tensor RPC round-trips bit-exactly: ${label}`, async (t) => {
    const { address, server } = await startServer(fastServer);
    try {
      await exercise(t, address, fastClient, label);
    } finally {
      server.forceShutdown();
    }
  });
}

test('concurrent response streams of one fast server, sharing its response scratch buffer, stay bit-exact', async (t) => {
  t.log(`grpc-js ${GRPC_JS_VERSION}: server responses ${RESPONSE_SCRATCH_ENABLED ? 'reuse one scratch buffer' : 'get fresh buffers'}`);
  t.is(RESPONSE_SCRATCH_ENABLED, GRPC_JS_VERSION.startsWith('1.14.'), 'reuse only on the checked grpc-js versions');
  const { address, server } = await startServer(true);
  const c = clients(address, true);
  try {
    const downloads = Array.from({ length: 6 }, (_, i) =>
      assembleAll(c.ps.downloadParameters({ names: [], newerThanVersion: 0, maxMessageBytes: i % 2 === 0 ? 0 : 4096 + 4 * i }), (m) => ({
        tensor: m.tensor,
        version: m.step,
      })),
    );
    const layers = Array.from({ length: 3 }, () =>
      assembleAll<FetchLayerStateResponse>(c.owner.fetchLayerState({ layers: [...LAYER_STATES.keys()], epoch: 1 }), (m) => ({
        tensor: m.tensor,
        version: m.tensor?.version ?? 0,
      })),
    );
    for (const got of await Promise.all(downloads)) {
      for (const [name, want] of DOWNLOADS) t.is(Buffer.compare(bytesOf(got.get(name)!.values), bytesOf(want.values)), 0, `download ${name}`);
    }
    for (const got of await Promise.all(layers)) {
      for (const [layer, s] of LAYER_STATES) t.is(Buffer.compare(bytesOf(got.get(layer)!.values), bytesOf(packedOf(s))), 0, `layer state ${layer}`);
    }
  } finally {
    c.close();
    server.forceShutdown();
  }
});

// ---- Python (independent protobuf implementation) --------------------------------------------

const BINPB = fileURLToPath(new URL('../src/gen/spngd.binpb', import.meta.url));

/** Deterministic bytes with a period (251) that does not divide the chunk size. */
const pyPattern = (n: number) => Buffer.from(Uint8Array.from({ length: n }, (_, i) => i % 251));

const PY_SCRIPT = `
import hashlib, json, sys
import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

plan = json.loads(sys.argv[1])
fds = descriptor_pb2.FileDescriptorSet.FromString(open(plan["binpb"], "rb").read())
pool = descriptor_pool.DescriptorPool()
for f in fds.file:
    pool.Add(f)
def cls(name):
    d = pool.FindMessageTypeByName("spngd.v1." + name)
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(d)
    return message_factory.MessageFactory(pool).GetPrototype(d)

opts = [("grpc.max_receive_message_length", 8 << 20), ("grpc.max_send_message_length", 8 << 20)]
ch = grpc.insecure_channel(plan["address"], options=opts)
ser = lambda m: m.SerializeToString()
sha = lambda b: hashlib.sha1(b).hexdigest()
out = {}

# What a fast server sends: DownloadParameters responses.
DReq, DRes = cls("DownloadParametersRequest"), cls("DownloadParametersResponse")
download = ch.unary_stream("/spngd.v1.ParameterServerService/DownloadParameters", request_serializer=ser, response_deserializer=DRes.FromString)
tensors = {}
for r in download(DReq(max_message_bytes=plan["downloadChunk"]), timeout=30):
    t = r.tensor
    e = tensors.setdefault(t.name, {"shape": list(t.shape), "chunks": 0, "data": bytearray(), "total": t.total_bytes, "step": r.step})
    assert t.offset_bytes == len(e["data"]), (t.name, t.offset_bytes, len(e["data"]))
    e["data"] += t.data
    e["chunks"] += 1
out["download"] = {k: {"shape": v["shape"], "chunks": v["chunks"], "total": v["total"], "step": v["step"], "sha1": sha(bytes(v["data"])), "len": len(v["data"])} for k, v in tensors.items()}

# What a fast server reads (gradient chunks) and sends back (parameter chunks, the echo).
TReq, TRes = cls("TrainRequest"), cls("TrainResponse")
train = ch.stream_stream("/spngd.v1.ParameterServerService/Train", request_serializer=ser, response_deserializer=TRes.FromString)
n = plan["gradientBytes"]
grad = bytes(i % 251 for i in range(n))
chunk = plan["chunk"]
def requests():
    m = TReq(); m.hello.worker_id = "py"; m.hello.epoch = 1
    yield m
    count = (n + chunk - 1) // chunk
    for i in range(count):
        m = TReq()
        g = m.gradient
        g.step = 3; g.worker_id = "py"; g.num_samples = 2
        t = g.tensor
        t.name = "pyw"; t.shape.append(n // 4); t.encoding = 1; t.version = 3
        t.chunk_index = i; t.chunk_count = count; t.total_bytes = n; t.offset_bytes = i * chunk
        t.data = grad[i * chunk:(i + 1) * chunk]
        yield m
    m = TReq(); c = m.gradients_complete
    c.step = 3; c.worker_id = "py"; c.num_samples = 2; c.gradient_tensors = 1
    yield m
echo = bytearray()
kinds = []
ack = None
for r in train(requests(), timeout=30):
    k = r.WhichOneof("kind")
    kinds.append(k)
    if k == "parameters":
        echo += r.parameters.tensor.data
    elif k == "gradients_ack":
        ack = r.gradients_ack.reason
out["train"] = {"sent": sha(grad), "echo": sha(bytes(echo)), "ack": ack, "kinds": sorted(set(kinds))}

# A statistic (symmetric upper, [3, 3]: 6 values) up; the owner answers with its digest.
SReq, SRes = cls("PushStatisticsRequest"), cls("PushStatisticsResponse")
push = ch.stream_stream("/spngd.v1.FactorOwnerService/PushStatistics", request_serializer=ser, response_deserializer=SRes.FromString)
stat = bytes(range(24))
def stat_requests():
    m = SReq(); m.hello.worker_id = "py"; m.hello.epoch = 1
    yield m
    m = SReq(); s = m.statistic
    s.step = 4; s.worker_id = "py"; s.layer = "fc"; s.kind = 2; s.num_samples = 1
    t = s.tensor
    t.name = "fc"; t.shape.extend([3, 3]); t.encoding = 2; t.version = 4
    t.chunk_index = 0; t.chunk_count = 1; t.total_bytes = 24; t.offset_bytes = 0; t.data = stat
    yield m
    m = SReq(); c = m.statistics_complete; c.step = 4; c.worker_id = "py"; c.statistic_tensors = 1; c.shard_count = 1
    yield m
out["statistics"] = {"sent": sha(stat), "schedules": [s.layer for r in push(stat_requests(), timeout=30) for s in r.schedules]}

# FetchLayerState responses.
FReq, FRes = cls("FetchLayerStateRequest"), cls("FetchLayerStateResponse")
fetch = ch.unary_stream("/spngd.v1.FactorOwnerService/FetchLayerState", request_serializer=ser, response_deserializer=FRes.FromString)
states = {}
for r in fetch(FReq(layers=plan["layers"], epoch=1), timeout=30):
    states.setdefault(r.tensor.name, bytearray()).extend(r.tensor.data)
out["layerStates"] = {k: sha(bytes(v)) for k, v in states.items()}
print(json.dumps(out))
`;

function runPython(plan: object): Promise<any> {
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, ['-c', PY_SCRIPT, JSON.stringify(plan)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code !== 0) reject(new Error(`python exited with code ${code}:\n${stderr}`));
      else {
        try {
          resolve(JSON.parse(stdout));
        } catch {
          reject(new Error(`python printed no JSON:\n${stdout}\n${stderr}`));
        }
      }
    });
  });
}

pythonTest(test, 'python3-protobuf reads what the fast definitions send and sends what they read', async (t) => {
  const { address, server } = await startServer(true);
  try {
    const gradientBytes = 2 * MiB + 12;
    const out = await runPython({ address, binpb: BINPB, downloadChunk: 4092, gradientBytes, chunk: CHUNK, layers: [...LAYER_STATES.keys()] });
    for (const [name, want] of DOWNLOADS) {
      const got = out.download[name];
      t.truthy(got, `python received ${name}`);
      t.deepEqual(got.shape, want.shape);
      t.is(got.len, want.values.byteLength);
      t.is(got.total, want.values.byteLength);
      t.is(got.step, 9);
      t.is(got.chunks, Math.ceil(want.values.byteLength / 4092));
      t.is(got.sha1, digest(want.values), `python: download ${name}`);
    }
    const grad = pyPattern(gradientBytes);
    t.is(out.train.sent, digest(grad));
    t.is(out.train.echo, digest(grad), "python: the parameters echoed back (fast encoder) carry the gradient's bytes");
    t.is(out.train.ack, `pyw:${digest(grad)}`, "the fast decoder read python's gradient chunks");
    t.deepEqual(out.train.kinds, ['gradients_ack', 'parameters', 'welcome']);
    t.deepEqual(out.statistics.schedules, [`fc/2:${digest(Buffer.from(Uint8Array.from({ length: 24 }, (_, i) => i)))}`]);
    for (const [layer, s] of LAYER_STATES) t.is(out.layerStates[layer], digest(packedOf(s)), `python: layer state ${layer}`);
  } finally {
    server.forceShutdown();
  }
});
