/**
 * The reconnect backoff (src/actors/common/reconnect.ts): its delays grow by the multiplier up to
 * the cap, stay within the jitter, and start over after a success; the Reconnector runs one
 * attempt at a time on real timers; and over real gRPC on loopback a stream reconnects by itself
 * once its server comes back on the same port.
 */
import test from 'ava';
import * as grpc from '@grpc/grpc-js';
import { Backoff, RECONNECT_BACKOFF, Reconnector } from '../src/actors/common/reconnect.js';
import { StreamSession } from '../src/actors/common/stream-session.js';
import {
  FactorOwnerServiceClient,
  FactorOwnerServiceService,
  type PushStatisticsRequest,
  type PushStatisticsResponse,
} from '../src/gen/spngd/v1/factor_owner.js';

test('the delays grow by the multiplier up to the cap, and start over after reset()', (t) => {
  // random 0.5: no jitter, so the sequence is exact.
  const b = new Backoff({ random: () => 0.5 });
  const first = Array.from({ length: 8 }, () => b.next());
  t.deepEqual(first, [250, 400, 640, 1024, 1638, 2000, 2000, 2000]);
  b.reset();
  t.is(b.next(), RECONNECT_BACKOFF.initialMs);
  t.is(b.next(), 400);
});

test('a restarted peer is tried again within about a second', (t) => {
  const b = new Backoff();
  let elapsed = 0;
  const attempts: number[] = [];
  while (elapsed < 1000) attempts.push((elapsed += b.next()));
  t.true(attempts.length >= 3, `attempts at ${attempts.join(', ')} ms`);
  t.true(attempts[attempts.length - 1] < 1600, `attempts at ${attempts.join(', ')} ms`);
});

test('jitter keeps every delay within ±20% of the grown one and never past the cap', (t) => {
  const bad: string[] = [];
  for (const random of [() => 0, () => 0.999999, Math.random]) {
    for (let run = 0; run < 200; run++) {
      const b = new Backoff({ random });
      let prev = b.next();
      t.is(prev, 250, 'the first delay is not jittered');
      for (let i = 0; i < 12; i++) {
        const d = b.next();
        // `prev` is rounded: allow a millisecond or two either way.
        const grown = Math.min(prev * 1.6, 2000);
        if (!(d >= grown * 0.8 - 2 && d <= Math.min(grown * 1.2 + 2, 2000))) bad.push(`delay ${d} after ${prev}`);
        prev = d;
      }
    }
  }
  t.deepEqual(bad, []);
});

test('jitter spreads the delays of actors that lost the same peer', (t) => {
  const seconds = new Set(
    Array.from({ length: 50 }, () => {
      const b = new Backoff();
      b.next();
      return b.next();
    }),
  );
  t.true(seconds.size > 10, `${seconds.size} distinct second delays out of 50`);
});

test('the Reconnector runs one attempt at a time, after the delay, and now() skips the wait', async (t) => {
  let attempts = 0;
  const r = new Reconnector(() => attempts++, { random: () => 0.5, initialMs: 80 });
  const t0 = performance.now();
  t.is(r.schedule(), 80);
  t.is(r.schedule(), 80, 'a second failure while the attempt is pending does not add one');
  t.true(r.pending);
  await new Promise((res) => setTimeout(res, 40));
  t.is(attempts, 0);
  await new Promise((res) => setTimeout(res, 200));
  t.is(attempts, 1, `one attempt after ${(performance.now() - t0).toFixed(0)} ms`);
  t.false(r.pending);
  t.is(r.schedule(), 128, 'the next delay has grown');
  r.now();
  t.is(attempts, 2, 'now() attempts at once');
  await new Promise((res) => setTimeout(res, 250));
  t.is(attempts, 2, 'and cancels the pending attempt');
  r.succeeded();
  t.is(r.schedule(), 80, 'a success starts the delays over');
  r.cancel();
  await new Promise((res) => setTimeout(res, 150));
  t.is(attempts, 2, 'cancel() drops the pending attempt');
});

/** A FactorOwnerService whose PushStatistics answers every hello (tells the client it is through). */
async function answeringServer(address: string, hellos: string[]): Promise<{ server: grpc.Server; port: number }> {
  const server = new grpc.Server();
  server.addService(FactorOwnerServiceService, {
    pushStatistics: (call: grpc.ServerDuplexStream<PushStatisticsRequest, PushStatisticsResponse>) => {
      call.on('data', (req: PushStatisticsRequest) => {
        if (req.kind?.$case === 'hello') {
          hellos.push(req.kind.value.workerId);
          call.write({ epoch: 1, schedules: [], ackedStep: 0 });
        }
      });
      call.on('end', () => call.end());
    },
    fetchLayerState: (call: grpc.ServerWritableStream<unknown, unknown>) => call.end(),
  });
  const port = await new Promise<number>((res, rej) => server.bindAsync(address, grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))));
  return { server, port };
}

test('over real gRPC: a stream reconnects by itself once its server is back, and the backoff starts over', async (t) => {
  const hellos: string[] = [];
  let { server, port } = await answeringServer('127.0.0.1:0', hellos);
  // The client's own channel backoff is short too, as in our actors' channel options.
  const client = new FactorOwnerServiceClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
    'grpc.initial_reconnect_backoff_ms': 250,
    'grpc.max_reconnect_backoff_ms': 1000,
  });
  const delays: number[] = [];
  let connected: () => void = () => undefined;
  let session: StreamSession<PushStatisticsRequest, PushStatisticsResponse> | undefined;
  const reconnect = new Reconnector(() => open());
  const open = () => {
    session = new StreamSession<PushStatisticsRequest, PushStatisticsResponse>(
      client.pushStatistics(),
      { kind: { $case: 'hello', value: { workerId: 'worker-1', epoch: 0 } } },
      {
        onMessage: () => {
          reconnect.succeeded();
          connected();
        },
        onEnd: () => delays.push(reconnect.schedule()),
      },
    );
  };
  const through = () => new Promise<void>((res) => (connected = res));
  try {
    let up = through();
    open();
    await up;
    t.is(hellos.length, 1);

    // The server goes away for a while: the client keeps trying, with growing delays.
    up = through();
    server.forceShutdown();
    await new Promise((res) => setTimeout(res, 2500));
    t.true(delays.length >= 3, `delays ${delays.join(', ')}`);
    t.true(delays[1] > delays[0] && delays[2] > delays[1], `delays ${delays.join(', ')} grow`);
    t.true(
      delays.every((d) => d <= RECONNECT_BACKOFF.maxMs),
      `delays ${delays.join(', ')}`,
    );

    // Back on the same port: the stream is through again within the cap (plus the call itself).
    ({ server } = await answeringServer(`127.0.0.1:${port}`, hellos));
    const back = performance.now();
    await up;
    const took = performance.now() - back;
    t.true(took < RECONNECT_BACKOFF.maxMs + 1500, `through again ${took.toFixed(0)} ms after the server came back`);
    t.is(hellos.length, 2, 'one hello per stream that got through');

    // The success reset the backoff: the next break is tried again after the initial delay.
    delays.length = 0;
    up = through();
    server.forceShutdown();
    await new Promise((res) => setTimeout(res, 100));
    t.is(delays[0], RECONNECT_BACKOFF.initialMs);
    ({ server } = await answeringServer(`127.0.0.1:${port}`, hellos));
    await up;
  } finally {
    reconnect.cancel();
    session?.close();
    client.close();
    server.forceShutdown();
  }
});
