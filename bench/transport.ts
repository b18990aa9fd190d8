/**
 * Tensor-stream throughput over loopback: the project's transport path
 * (ParameterServerService.DownloadParameters through the fast service definitions of
 * src/transport/fast-services.ts, `sendDense` with `copy: false` = chunkTensor views +
 * ByteBudgetWriter on the sender, ByteBudgetReader + TensorAssembler on the receiver, the actors'
 * channel and server options) against a raw Node `net` socket moving the same bytes, measured in
 * the same run. The previous path (the generated ts-proto serializers, chunks copied by
 * chunkTensor) is measured alongside, on its own server and connection, as a reference.
 *
 * The sender (a gRPC server and a TCP server) runs in this process; the receiver runs in a forked
 * child process, so the two never share an event loop, for both transports (`--receiver inline`
 * puts it in this process instead, for comparison). Each transfer is timed at the receiver, from the request to the last byte in a
 * complete Float32Array, over a connection opened once (warm, as the actors' channels are). The
 * transports alternate (rotating which goes first) so machine-load drift hits all alike.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { createServer, connect, type Server as NetServer, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { credentials, Server, ServerCredentials, status, type ServerWritableStream } from '@grpc/grpc-js';
import { sendDense } from '../src/actors/common/tensor-io.js';
import {
  ParameterServerServiceClient,
  ParameterServerServiceService,
  type DownloadParametersRequest,
  type DownloadParametersResponse,
  type ParameterServerServiceServer,
} from '../src/gen/spngd/v1/parameter_server.js';
import { channelOptions, serverOptions } from '../src/transport/channel-options.js';
import { FastParameterServerServiceClient, FastParameterServerServiceService } from '../src/transport/fast-services.js';
import { ByteBudgetReader, ByteBudgetWriter } from '../src/transport/flow.js';
import { DEFAULT_CHUNK_BYTES, DEFAULT_IN_FLIGHT_BYTES, MiB } from '../src/transport/limits.js';
import { envelopeTensor, TensorAssembler } from '../src/transport/tensor-assembler.js';
import { spread, type Spread } from '../src/util/stats.js';

export interface TransportBenchOptions {
  /** Timed transfers per size and transport (after one warm-up each). */
  repeats: number;
  /** Tensor sizes in MiB. */
  sizesMiB: number[];
  /** Where the receiving side runs: a forked child process (default) or this process. */
  receiver: 'child' | 'inline';
}

const CHILD_ENV = 'SPNGD_BENCH_TRANSPORT_RECEIVER';
const STEP = 7;

/** `grpc`: the project path (fast codec); `grpc-gen`: generated serializers, copying chunkTensor (the previous path); `raw`: TCP. */
type Op = 'grpc' | 'grpc-gen' | 'raw';
const OPS: readonly Op[] = ['grpc', 'grpc-gen', 'raw'];
type Command = { op: 'init'; grpc: string; grpcGen: string; rawPort: number } | { op: Op; id: number; name: string; bytes: number } | { op: 'quit' };
type Reply = { op: 'ready' } | { op: 'done'; id: number; ms: number; ok: boolean; error?: string };

/** The same deterministic bit patterns on both sides (xorshift32), so the receiver can check them. */
function pattern(bytes: number, seed: number): Float32Array {
  const u = new Uint32Array(bytes / 4);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < u.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    u[i] = x;
  }
  return new Float32Array(u.buffer);
}

const tensorName = (bytes: number) => `t${bytes}`;
const sameBits = (a: Float32Array, b: Float32Array) =>
  a.length === b.length && Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;

// ---- receiver -----------------------------------------------------------------------------------

interface ReceiverSide {
  transfer(op: Op, bytes: number): Promise<number>;
  close(): Promise<void>;
}

/** The receiving side: two gRPC clients (fast and generated codec) and a raw socket, each connected once. */
async function openReceiver(grpcAddress: string, grpcGenAddress: string, rawPort: number): Promise<ReceiverSide> {
  const client: ParameterServerServiceClient = new FastParameterServerServiceClient(grpcAddress, credentials.createInsecure(), channelOptions());
  const genClient = new ParameterServerServiceClient(grpcGenAddress, credentials.createInsecure(), channelOptions());
  const raw: Socket = connect(rawPort, '127.0.0.1');
  raw.setNoDelay(true);
  await new Promise<void>((resolve, reject) => raw.once('connect', resolve).once('error', reject));
  const expected = new Map<number, Float32Array>();
  const expect = (bytes: number) => {
    let e = expected.get(bytes);
    if (!e) expected.set(bytes, (e = pattern(bytes, bytes)));
    return e;
  };

  /** One DownloadParameters call through the real receive path. */
  const viaGrpc = async (c: ParameterServerServiceClient, name: string): Promise<Float32Array> => {
    const call = c.downloadParameters({ names: [name], newerThanVersion: 0, maxMessageBytes: 0 });
    const asm = new TensorAssembler();
    let out: Float32Array | undefined;
    for await (const m of new ByteBudgetReader<DownloadParametersResponse>(call, { sizeOf: (m) => m.tensor?.data.length ?? 0 })) {
      const t = asm.push(envelopeTensor(m.tensor, m.step));
      if (t) out = t.values;
    }
    asm.assertComplete();
    if (!out) throw new Error('no tensor received');
    return out;
  };

  /** The same bytes over the raw socket: a 4-byte request, then `bytes` bytes copied into place. */
  const viaRaw = (bytes: number): Promise<Float32Array> =>
    new Promise((resolve, reject) => {
      const out = new Float32Array(bytes / 4);
      const dst = new Uint8Array(out.buffer);
      let got = 0;
      const onData = (b: Buffer) => {
        dst.set(b, got);
        got += b.length;
        if (got >= bytes) {
          raw.off('data', onData);
          raw.off('error', reject);
          resolve(out);
        }
      };
      raw.on('data', onData);
      raw.once('error', reject);
      const req = Buffer.alloc(4);
      req.writeUInt32LE(bytes);
      raw.write(req);
    });

  return {
    async transfer(op, bytes) {
      const want = expect(bytes);
      const t0 = performance.now();
      const got = op === 'raw' ? await viaRaw(bytes) : await viaGrpc(op === 'grpc' ? client : genClient, tensorName(bytes));
      const ms = performance.now() - t0;
      // Checked outside the timed region.
      if (!sameBits(got, want)) throw new Error(`${op} transfer of ${bytes} bytes: received bytes differ from those sent`);
      return ms;
    },
    async close() {
      client.close();
      genClient.close();
      raw.destroy();
    },
  };
}

/** Entry of the forked child: a ReceiverSide driven over IPC. */
function receiverMain(): void {
  let side: ReceiverSide | undefined;
  const reply = (r: Reply) => process.send!(r);
  process.on('message', (cmd: Command) => {
    void (async () => {
      if (cmd.op === 'init') {
        side = await openReceiver(cmd.grpc, cmd.grpcGen, cmd.rawPort);
        reply({ op: 'ready' });
      } else if (cmd.op === 'quit') {
        await side?.close();
        process.disconnect();
      } else {
        try {
          reply({ op: 'done', id: cmd.id, ms: await side!.transfer(cmd.op, cmd.bytes), ok: true });
        } catch (err) {
          reply({ op: 'done', id: cmd.id, ms: NaN, ok: false, error: (err as Error).message });
        }
      }
    })();
  });
}

// ---- sender (this process) ----------------------------------------------------------------------

interface Senders {
  grpcAddress: string;
  grpcGenAddress: string;
  rawPort: number;
  close(): Promise<void>;
}

async function startSenders(tensors: Map<string, Float32Array>, bySize: Map<number, Float32Array>): Promise<Senders> {
  const unimplemented = (call: { emit(e: string, v: unknown): void }) => call.emit('error', { code: status.UNIMPLEMENTED, details: 'not in this benchmark' });
  // As ParameterServer.onDownload: one envelope per chunk, sendDense under the byte budget. The
  // tensors are never modified, so the fast path sends views (`copy: false`), as onDownload may
  // with its private snapshot; the reference path copies, as before.
  const impl = (copy: boolean): ParameterServerServiceServer => ({
    async downloadParameters(call: ServerWritableStream<DownloadParametersRequest, DownloadParametersResponse>) {
      try {
        const names = call.request.names;
        const writer = new ByteBudgetWriter<DownloadParametersResponse>(call);
        for (const name of names) {
          const values = tensors.get(name);
          if (!values) throw Object.assign(new Error(`no tensor ${name}`), { code: status.NOT_FOUND });
          await sendDense(writer, (tensor) => ({ step: STEP, tensorCount: names.length, tensor }), name, values, [values.length], STEP, DEFAULT_CHUNK_BYTES, {
            copy,
          });
        }
        await writer.end();
      } catch (err) {
        if (!call.cancelled) call.emit('error', { code: (err as { code?: number }).code ?? status.INTERNAL, details: (err as Error).message });
      }
    },
    train: (call) => unimplemented(call),
    publishPreconditioners: (call) => unimplemented(call),
    shardSession: (call) => unimplemented(call),
  });
  const listen = (server: Server) =>
    new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  const server = new Server(serverOptions());
  server.addService(FastParameterServerServiceService, impl(false));
  const port = await listen(server);
  const genServer = new Server(serverOptions());
  genServer.addService(ParameterServerServiceService, impl(true));
  const genPort = await listen(genServer);

  const rawServer: NetServer = createServer((sock) => {
    sock.setNoDelay(true);
    let pending = Buffer.alloc(0);
    sock.on('data', (b: Buffer) => {
      pending = Buffer.concat([pending, b]);
      while (pending.length >= 4) {
        const bytes = pending.readUInt32LE(0);
        pending = pending.subarray(4);
        const values = bySize.get(bytes);
        if (!values) {
          sock.destroy(new Error(`no tensor of ${bytes} bytes`));
          return;
        }
        // One zero-copy write of the whole tensor: the most favourable case for the baseline.
        sock.write(Buffer.from(values.buffer, values.byteOffset, values.byteLength));
      }
    });
    sock.on('error', () => undefined);
  });
  const rawPort = await new Promise<number>((resolve) => rawServer.listen(0, '127.0.0.1', () => resolve((rawServer.address() as { port: number }).port)));
  return {
    grpcAddress: `127.0.0.1:${port}`,
    grpcGenAddress: `127.0.0.1:${genPort}`,
    rawPort,
    close: async () => {
      server.forceShutdown();
      genServer.forceShutdown();
      await new Promise<void>((resolve) => rawServer.close(() => resolve()));
    },
  };
}

/** A ReceiverSide in a forked child process. */
class ChildReceiver implements ReceiverSide {
  private next = 1;
  private readonly waiting = new Map<number, (r: Extract<Reply, { op: 'done' }>) => void>();
  private ready: (() => void) | undefined;
  private readonly exited: Promise<number | null>;

  constructor(private readonly child: ChildProcess) {
    child.on('message', (r: Reply) => {
      if (r.op === 'ready') this.ready?.();
      else this.waiting.get(r.id)?.(r);
    });
    this.exited = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
  }

  async init(grpc: string, grpcGen: string, rawPort: number): Promise<void> {
    const ready = new Promise<void>((resolve) => (this.ready = resolve));
    this.child.send({ op: 'init', grpc, grpcGen, rawPort } satisfies Command);
    await Promise.race([ready, this.exited.then((code) => Promise.reject(new Error(`the receiver exited (code ${code}) during start-up`)))]);
  }

  async transfer(op: Op, bytes: number): Promise<number> {
    const id = this.next++;
    const done = new Promise<Extract<Reply, { op: 'done' }>>((resolve) => this.waiting.set(id, resolve));
    this.child.send({ op, id, name: tensorName(bytes), bytes } satisfies Command);
    const r = await Promise.race([done, this.exited.then((code) => Promise.reject(new Error(`the receiver exited (code ${code})`)))]);
    this.waiting.delete(id);
    if (!r.ok) throw new Error(`${op} transfer of ${bytes} bytes: ${r.error ?? 'received bytes differ from those sent'}`);
    return r.ms;
  }

  async close(): Promise<void> {
    if (this.child.connected) this.child.send({ op: 'quit' } satisfies Command);
    const t = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await this.exited;
    clearTimeout(t);
  }
}

const f0 = (x: number) => x.toFixed(0);
const f2 = (x: number) => x.toFixed(2);
const fmt = (s: Spread, f: (x: number) => string) => `${f(s.min)}/${f(s.median)}/${f(s.max)}`;

export async function transportBench(o: TransportBenchOptions): Promise<void> {
  if (!(o.repeats >= 5)) throw new RangeError(`--repeats must be at least 5, got ${o.repeats}`);
  const sizes = o.sizesMiB.map((m) => Math.round((m * MiB) / 4) * 4);
  const tensors = new Map<string, Float32Array>();
  const bySize = new Map<number, Float32Array>();
  for (const bytes of sizes) {
    const values = pattern(bytes, bytes);
    tensors.set(tensorName(bytes), values);
    bySize.set(bytes, values);
  }
  const senders = await startSenders(tensors, bySize);
  let receiver: ReceiverSide | undefined;
  try {
    if (o.receiver === 'child') {
      const child = fork(fileURLToPath(import.meta.url), [], {
        execArgv: ['--import', 'tsx'],
        env: { ...process.env, [CHILD_ENV]: '1' },
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      });
      const c = new ChildReceiver(child);
      receiver = c;
      await c.init(senders.grpcAddress, senders.grpcGenAddress, senders.rawPort);
    } else {
      receiver = await openReceiver(senders.grpcAddress, senders.grpcGenAddress, senders.rawPort);
    }
    const where =
      o.receiver === 'child'
        ? 'sender in this process, receiver in a forked child process (for both gRPC and raw, so they never share an event loop)'
        : 'sender and receiver in this one process, sharing its event loop (--receiver inline), for both gRPC and raw';
    console.log('transport: tensor download throughput over loopback, gRPC (project path) vs raw TCP');
    console.log(
      `  ${where};\n` +
        `  gRPC: ParameterServerService.DownloadParameters, ${DEFAULT_CHUNK_BYTES / MiB} MiB chunks, ByteBudgetWriter ${DEFAULT_IN_FLIGHT_BYTES / MiB} MiB,\n` +
        `        ByteBudgetReader + TensorAssembler into a Float32Array;\n` +
        `        project path: fast service definitions (src/transport/fast-services.ts), sendDense copy: false;\n` +
        `        generated: the ts-proto serializers of src/gen, sendDense copying (the path before fast-services), for reference;\n` +
        `  raw: one socket.write of the bytes, copied into a Float32Array;\n` +
        `  one connection each, opened once; timed at the receiver from request to last byte; contents checked after each transfer;\n` +
        `  ${o.repeats} timed transfers per case after 1 warm-up, the three alternating (rotating the order); MB = 10^6 bytes.`,
    );
    type Row = { size: number; mbps: Record<Op, number[]>; ratios: Record<Op, number[]> };
    const rows: Row[] = [];
    for (const bytes of sizes) {
      for (const op of OPS) await receiver.transfer(op, bytes);
      const row: Row = { size: bytes, mbps: { grpc: [], 'grpc-gen': [], raw: [] }, ratios: { grpc: [], 'grpc-gen': [], raw: [] } };
      for (let r = 0; r < o.repeats; r++) {
        // Rotate which goes first, so none always follows another's garbage.
        const order = OPS.map((_, i) => OPS[(i + r) % OPS.length]);
        const got = {} as Record<Op, number>;
        for (const op of order) got[op] = bytes / 1e6 / ((await receiver.transfer(op, bytes)) / 1000);
        for (const op of OPS) {
          row.mbps[op].push(got[op]);
          row.ratios[op].push(got[op] / got.raw);
        }
      }
      rows.push(row);
      process.stderr.write(`  ${bytes / MiB} MiB done\n`);
    }
    const cell = (xs: number[]) => fmt(spread(xs), f0);
    console.log('\nMB/s min/median/max');
    console.log(`${'size'.padEnd(9)}${'gRPC (project path)'.padStart(22)}${'gRPC (generated)'.padStart(22)}${'raw TCP'.padStart(22)}`);
    for (const r of rows) {
      console.log(
        `${`${r.size / MiB} MiB`.padEnd(9)}${cell(r.mbps.grpc).padStart(22)}${cell(r.mbps['grpc-gen']).padStart(22)}${cell(r.mbps.raw).padStart(22)}`,
      );
    }
    console.log('\nratio to raw TCP: median/median, and paired (same repeat) min/median/max');
    console.log(`${'size'.padEnd(9)}${'project path'.padStart(16)}${'paired'.padStart(18)}${'generated'.padStart(14)}${'paired'.padStart(18)}`);
    const med = (xs: number[]) => spread(xs).median;
    for (const r of rows) {
      const w = med(r.mbps.raw);
      console.log(
        `${`${r.size / MiB} MiB`.padEnd(9)}${f2(med(r.mbps.grpc) / w).padStart(16)}${fmt(spread(r.ratios.grpc), f2).padStart(18)}` +
          `${f2(med(r.mbps['grpc-gen']) / w).padStart(14)}${fmt(spread(r.ratios['grpc-gen']), f2).padStart(18)}`,
      );
    }
    const worst = Math.min(...rows.map((r) => med(r.mbps.grpc) / med(r.mbps.raw)));
    console.log(`\nlowest gRPC (project path)/raw ratio of medians: ${f2(worst)} (target >= 0.4: ${worst >= 0.4 ? 'met' : 'NOT met'})`);
  } finally {
    await receiver?.close();
    await senders.close();
  }
}

if (process.env[CHILD_ENV] === '1' && process.send) receiverMain();
