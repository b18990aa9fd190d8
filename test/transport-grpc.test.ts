/**
 * Transport over real gRPC on loopback (no mocked transport): a small ParameterServerService built
 * from the generated definitions streams 64 MiB tensors in chunks both ways, with byte budgets on
 * the senders, validation on the receivers, and grpc message limits.
 */
import test from 'ava';
import * as grpc from '@grpc/grpc-js';

import {
  type DownloadParametersResponse,
  ParameterServerServiceClient,
  type ParameterServerServiceServer,
  ParameterServerServiceService,
  type TrainRequest,
  type TrainResponse,
} from '../src/gen/spngd/v1/parameter_server.js';
import {
  type AssembledTensor,
  ByteBudgetReader,
  ByteBudgetWriter,
  channelOptions,
  chunkTensor,
  chunkWireBytes,
  failServerCall,
  MiB,
  serverOptions,
  type TensorChunk,
  TensorAssembler,
  TensorEncoding,
  type TransportOptions,
  type WriterStats,
} from '../src/transport/index.js';

const DENSE = TensorEncoding.TENSOR_ENCODING_DENSE;

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

function sameBits(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  return Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface ServerConfig {
  transport?: TransportOptions;
  /** Byte budget of the server's writers. */
  writeBudget: number;
  /** Chunk size the server uses for downloads. */
  chunkBytes: number;
  /** Tensors served by DownloadParameters. */
  tensors: Map<string, { values: Float32Array; shape: number[] }>;
  /** Delay per received Train message (a slow consumer). */
  receiveDelayMs: number;
  /** Byte budget of the server's receive queue. */
  receiveQueueBytes: number;
  assembler?: () => TensorAssembler;
}

interface ServerRecord {
  downloadStats: WriterStats[];
  received: AssembledTensor[];
  receiverMaxHeld: number[];
  receiverPauses: number[];
}

async function startServer(cfg: ServerConfig): Promise<{ port: number; rec: ServerRecord; server: grpc.Server }> {
  const rec: ServerRecord = { downloadStats: [], received: [], receiverMaxHeld: [], receiverPauses: [] };
  const impl: ParameterServerServiceServer = {
    async downloadParameters(call) {
      const w = new ByteBudgetWriter<DownloadParametersResponse>(call, { maxInFlightBytes: cfg.writeBudget });
      try {
        const names = call.request.names.length > 0 ? call.request.names : [...cfg.tensors.keys()];
        for (const name of names) {
          const t = cfg.tensors.get(name);
          if (!t) throw Object.assign(new Error(`no tensor ${name}`), { code: grpc.status.NOT_FOUND });
          for (const c of chunkTensor(name, t.values, t.shape, DENSE, { chunkBytes: cfg.chunkBytes, version: 5 })) {
            await w.write({ step: 5, tensorCount: names.length, tensor: c }, chunkWireBytes(c));
          }
        }
        await w.flush();
        rec.downloadStats.push(w.stats);
        call.end();
      } catch (err) {
        rec.downloadStats.push(w.stats);
        if (!call.cancelled) failServerCall(call, err);
      }
    },
    async train(call) {
      const asm = cfg.assembler?.() ?? new TensorAssembler();
      const reader = new ByteBudgetReader<TrainRequest>(call, {
        sizeOf: (m) => (m.kind?.$case === 'gradient' ? (m.kind.value.tensor?.data.length ?? 0) : 0),
        highWaterBytes: cfg.receiveQueueBytes,
      });
      try {
        for await (const m of reader) {
          if (cfg.receiveDelayMs > 0) await sleep(cfg.receiveDelayMs);
          const kind = m.kind;
          if (kind?.$case === 'gradient') {
            const tensor = kind.value.tensor;
            if (!tensor) throw Object.assign(new Error('gradient without tensor'), { code: grpc.status.INVALID_ARGUMENT });
            const done = asm.push(tensor);
            if (done) rec.received.push(done);
          } else if (kind?.$case === 'gradientsComplete') {
            asm.assertComplete();
            const ack: TrainResponse = {
              kind: {
                $case: 'gradientsAck',
                value: { step: kind.value.step, accepted: true, reason: '', workersReduced: 1, loss: 0, accuracy: 0 },
              },
            };
            call.write(ack);
          }
        }
        asm.assertComplete();
        call.end();
      } catch (err) {
        failServerCall(call, err);
      } finally {
        rec.receiverMaxHeld.push(reader.backpressure.maxHeldBytes);
        rec.receiverPauses.push(reader.backpressure.pauseCount);
      }
    },
    publishPreconditioners(call) {
      call.end();
    },
    shardSession(call) {
      call.end();
    },
  };
  const server = new grpc.Server(serverOptions(cfg.transport));
  server.addService(ParameterServerServiceService, impl);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  return { port, rec, server };
}

function defaults(over: Partial<ServerConfig> = {}): ServerConfig {
  return {
    writeBudget: 8 * MiB,
    chunkBytes: 1 * MiB,
    tensors: new Map(),
    receiveDelayMs: 0,
    receiveQueueBytes: 16 * MiB,
    ...over,
  };
}

function client(port: number, transport?: TransportOptions): ParameterServerServiceClient {
  return new ParameterServerServiceClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), channelOptions(transport));
}

/** Final status of a client call (OK or the error's code). */
function outcome(call: grpc.ClientReadableStream<unknown> | grpc.ClientDuplexStream<unknown, unknown>): Promise<grpc.StatusObject> {
  return new Promise((resolve) => {
    call.on('error', () => {});
    call.on('status', (s: grpc.StatusObject) => resolve(s));
  });
}

async function download(c: ParameterServerServiceClient, names: string[] = []): Promise<{ tensors: AssembledTensor[]; status: grpc.StatusObject; ms: number }> {
  const t0 = performance.now();
  const call = c.downloadParameters({ names, newerThanVersion: 0, maxMessageBytes: 0 });
  const st = outcome(call);
  const asm = new TensorAssembler();
  const tensors: AssembledTensor[] = [];
  call.on('data', (m: DownloadParametersResponse) => {
    const done = asm.push(m.tensor!);
    if (done) tensors.push(done);
  });
  const status = await st;
  return { tensors, status, ms: performance.now() - t0 };
}

async function uploadGradients(
  c: ParameterServerServiceClient,
  chunks: Iterable<TensorChunk>,
  budget: number,
  opts: { complete?: boolean; throughWriter?: boolean } = {},
): Promise<{ status: grpc.StatusObject; stats: WriterStats; acks: number; ms: number; writeError?: Error }> {
  const t0 = performance.now();
  const call = c.train();
  const st = outcome(call);
  let acks = 0;
  call.on('data', (m: TrainResponse) => {
    if (m.kind?.$case === 'gradientsAck') acks++;
  });
  const w = new ByteBudgetWriter<TrainRequest>(call, { maxInFlightBytes: budget });
  let writeError: Error | undefined;
  try {
    for (const tensor of chunks) {
      await w.write({ kind: { $case: 'gradient', value: { step: 1, workerId: 'w0', numSamples: 32, tensor } } }, chunkWireBytes(tensor));
    }
    if (opts.complete !== false) {
      await w.write(
        {
          kind: {
            $case: 'gradientsComplete',
            value: { step: 1, workerId: 'w0', numSamples: 32, gradientTensors: 1, lossSum: 0, numCorrect: 0, phaseMs: {} },
          },
        },
        64,
      );
    }
    await w.end();
  } catch (err) {
    writeError = err as Error;
  }
  const status = await st;
  return { status, stats: w.stats, acks, ms: performance.now() - t0, writeError };
}

function mbps(bytes: number, ms: number): string {
  return `${(bytes / 1e6 / (ms / 1000)).toFixed(0)} MB/s`;
}

test.serial('64 MiB tensor downloads in 4 MiB chunks and reassembles bit-exactly; sender stays within its byte budget', async (t) => {
  const values = randomBits(16 * MiB, 12345);
  const budget = 12 * MiB;
  const chunkBytes = 4 * MiB;
  const transport: TransportOptions = { chunkBytes, maxMessageBytes: 8 * MiB };
  const { port, rec, server } = await startServer(
    defaults({ transport, chunkBytes, writeBudget: budget, tensors: new Map([['fc.weight', { values, shape: [4096, 4096] }]]) }),
  );
  const c = client(port, transport);
  try {
    const r = await download(c);
    t.is(r.status.code, grpc.status.OK, r.status.details);
    t.is(r.tensors.length, 1);
    const got = r.tensors[0];
    t.is(got.chunkCount, 16);
    t.deepEqual(got.shape, [4096, 4096]);
    t.is(got.version, 5);
    t.true(sameBits(got.values, values), 'bit-exact');
    const stats = rec.downloadStats[0];
    t.is(stats.messages, 16);
    t.true(stats.maxInFlightBytes <= budget, `max in flight ${stats.maxInFlightBytes} <= ${budget}`);
    t.true(stats.maxInFlightBytes > chunkBytes, 'more than one chunk in flight at a time');
    t.log(`download 64 MiB (4 MiB chunks): ${r.ms.toFixed(0)} ms, ${mbps(64 * MiB, r.ms)}; max in flight ${(stats.maxInFlightBytes / MiB).toFixed(2)} MiB`);
  } finally {
    c.close();
    server.forceShutdown();
  }
});

test.serial("64 MiB gradient upload to a slow receiver: the client's in-flight bytes never exceed the budget", async (t) => {
  const values = randomBits(16 * MiB, 777);
  const budget = 4 * MiB;
  const { port, rec, server } = await startServer(defaults({ receiveDelayMs: 3, receiveQueueBytes: 4 * MiB }));
  const c = client(port);
  try {
    const r = await uploadGradients(c, chunkTensor('fc.weight', values, [16 * MiB], DENSE, { version: 1 }), budget);
    t.is(r.status.code, grpc.status.OK, r.status.details);
    t.is(r.writeError, undefined);
    t.is(r.acks, 1);
    t.is(rec.received.length, 1);
    t.true(sameBits(rec.received[0].values, values), 'bit-exact');
    t.is(r.stats.messages, 65);
    t.true(r.stats.maxInFlightBytes <= budget, `max in flight ${r.stats.maxInFlightBytes} <= ${budget}`);
    t.true(r.stats.waits > 0, 'the writer had to wait for the budget');
    // The receiver's application queue stays near its budget (one message of slack).
    t.true(rec.receiverMaxHeld[0] <= 4 * MiB + 1 * MiB, `receiver held at most ${rec.receiverMaxHeld[0]}`);
    t.log(
      `upload 64 MiB (1 MiB chunks) to a 3 ms/message receiver: ${r.ms.toFixed(0)} ms; max in flight ${(r.stats.maxInFlightBytes / MiB).toFixed(2)} MiB; waits ${r.stats.waits}`,
    );
  } finally {
    c.close();
    server.forceShutdown();
  }
});

test.serial('a paused receiver stalls the sender at its byte budget (write callbacks follow HTTP/2 flow control)', async (t) => {
  const values = randomBits(16 * MiB, 99);
  const budget = 6 * MiB;
  const { port, rec, server } = await startServer(defaults({ writeBudget: budget, tensors: new Map([['w', { values, shape: [16 * MiB] }]]) }));
  const c = client(port);
  try {
    const call = c.downloadParameters({ names: [], newerThanVersion: 0, maxMessageBytes: 0 });
    const st = outcome(call);
    const asm = new TensorAssembler();
    let got: AssembledTensor | undefined;
    let received = 0;
    call.on('data', (m: DownloadParametersResponse) => {
      received++;
      got = asm.push(m.tensor!) ?? got;
    });
    call.pause();
    await sleep(800);
    // Nothing consumed: the server must be blocked with at most `budget` bytes in flight.
    t.is(received, 0);
    t.is(rec.downloadStats.length, 0, 'the download has not finished');
    call.resume();
    const status = await st;
    t.is(status.code, grpc.status.OK, status.details);
    t.true(sameBits(got!.values, values));
    const stats = rec.downloadStats[0];
    t.true(stats.maxInFlightBytes <= budget);
    t.true(stats.waits > 0);
  } finally {
    c.close();
    server.forceShutdown();
  }
});

test.serial('a message above the receive limit gets RESOURCE_EXHAUSTED (both directions)', async (t) => {
  // Server: 8 MiB receive limit. Client: may send 32 MiB.
  const { port, server } = await startServer(
    defaults({
      tensors: new Map([['big', { values: randomBits(3 * MiB, 5), shape: [3 * MiB] }]]),
      chunkBytes: 12 * MiB,
      writeBudget: 32 * MiB,
      transport: { maxMessageBytes: 32 * MiB, chunkBytes: 12 * MiB },
    }),
  );
  const bigSender = client(port, { maxMessageBytes: 32 * MiB, chunkBytes: 12 * MiB });
  const strict = client(port); // default limits: 8 MiB
  try {
    // Client -> server: a 12 MiB chunk against the server's 32 MiB limit passes...
    const ok = await uploadGradients(bigSender, chunkTensor('g', randomBits(3 * MiB, 1), [3 * MiB], DENSE, { chunkBytes: 12 * MiB }), 64 * MiB);
    t.is(ok.status.code, grpc.status.OK, ok.status.details);
    // ...server -> client: a 12 MiB chunk against the strict client's 8 MiB receive limit fails.
    const r = await download(strict);
    t.is(r.status.code, grpc.status.RESOURCE_EXHAUSTED, r.status.details);
    t.regex(r.status.details, /max|larger|exceed/i);
  } finally {
    bigSender.close();
    strict.close();
    server.forceShutdown();
  }
  // Server with the default 8 MiB limit; a client allowed to send 32 MiB sends a 12 MiB chunk.
  const s2 = await startServer(defaults());
  const c2 = client(s2.port, { maxMessageBytes: 32 * MiB, chunkBytes: 12 * MiB });
  const c3 = client(s2.port); // default limits: the client refuses to send it at all
  try {
    const r = await uploadGradients(c2, chunkTensor('g', randomBits(3 * MiB, 2), [3 * MiB], DENSE, { chunkBytes: 12 * MiB }), 64 * MiB);
    t.is(r.status.code, grpc.status.RESOURCE_EXHAUSTED, r.status.details);
    const r3 = await uploadGradients(c3, chunkTensor('g', randomBits(3 * MiB, 2), [3 * MiB], DENSE, { chunkBytes: 12 * MiB }), 64 * MiB);
    t.is(r3.status.code, grpc.status.RESOURCE_EXHAUSTED, r3.status.details);
  } finally {
    c2.close();
    c3.close();
    s2.server.forceShutdown();
  }
});

test.serial("invalid chunks over the wire end the call with the assembler's status code", async (t) => {
  const { port, server } = await startServer(defaults({ assembler: () => new TensorAssembler({ maxTensorBytes: 16 * MiB }) }));
  const c = client(port);
  const good = [...chunkTensor('w', randomBits(1024, 3), [1024], DENSE, { chunkBytes: 1024 })]; // 4 chunks
  const cases: { name: string; chunks: TensorChunk[]; code: grpc.status; details: RegExp }[] = [
    { name: 'gap', chunks: [good[0], good[1], good[3]], code: grpc.status.FAILED_PRECONDITION, details: /expected 2/ },
    { name: 'duplicate', chunks: [good[0], good[1], good[1]], code: grpc.status.FAILED_PRECONDITION, details: /twice/ },
    { name: 'missing last chunk', chunks: good.slice(0, 3), code: grpc.status.FAILED_PRECONDITION, details: /incomplete/ },
    { name: 'odd length', chunks: [{ ...good[0], data: good[0].data.subarray(0, 1021) }], code: grpc.status.INVALID_ARGUMENT, details: /multiple of 4/ },
    { name: 'shape mismatch', chunks: [good[0], { ...good[1], shape: [32, 32] }], code: grpc.status.INVALID_ARGUMENT, details: /shape/ },
    { name: 'wrong total', chunks: [{ ...good[0], totalBytes: 4092 }], code: grpc.status.INVALID_ARGUMENT, details: /total_bytes/ },
    {
      name: 'oversized',
      chunks: [{ ...good[0], shape: [32 * MiB], totalBytes: 128 * MiB, chunkCount: 128 }],
      code: grpc.status.RESOURCE_EXHAUSTED,
      details: /exceeds the limit/,
    },
  ];
  try {
    for (const k of cases) {
      const r = await uploadGradients(c, k.chunks, 8 * MiB);
      t.is(r.status.code, k.code, `${k.name}: ${r.status.details}`);
      t.regex(r.status.details, k.details, k.name);
    }
    // The good sequence still works on the same server.
    const ok = await uploadGradients(c, good, 8 * MiB);
    t.is(ok.status.code, grpc.status.OK);
    t.is(ok.acks, 1);
  } finally {
    c.close();
    server.forceShutdown();
  }
});

test.serial('ByteBudgetWriter rejects pending writes when the peer cancels', async (t) => {
  const values = randomBits(16 * MiB, 4);
  const { port, rec, server } = await startServer(defaults({ writeBudget: 4 * MiB, tensors: new Map([['w', { values, shape: [16 * MiB] }]]) }));
  const c = client(port);
  try {
    const call = c.downloadParameters({ names: [], newerThanVersion: 0, maxMessageBytes: 0 });
    const st = outcome(call);
    // A grpc-js client stream without a 'data' listener reads everything regardless of pause():
    // attach one, then pause.
    call.on('data', () => {});
    call.pause();
    await sleep(300);
    call.cancel();
    const s = await st;
    t.is(s.code, grpc.status.CANCELLED);
    // The server's handler finishes (its writer was rejected) instead of hanging.
    for (let i = 0; i < 50 && rec.downloadStats.length === 0; i++) await sleep(20);
    t.is(rec.downloadStats.length, 1);
    t.true(rec.downloadStats[0].messages < 64);
  } finally {
    c.close();
    server.forceShutdown();
  }
});
