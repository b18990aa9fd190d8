/**
 * StreamSession (src/actors/common/stream-session.ts) over real gRPC on loopback: the hello goes
 * first, answers reach onMessage, the end of the call is reported once whichever way it ends
 * (a failed call, the server ending it, the connection dropping), and not after detach().
 */
import test from 'ava';
import * as grpc from '@grpc/grpc-js';
import { StreamSession } from '../src/actors/common/stream-session.js';
import {
  FactorOwnerServiceClient,
  FactorOwnerServiceService,
  type PushStatisticsRequest,
  type PushStatisticsResponse,
} from '../src/gen/spngd/v1/factor_owner.js';

type ServerCall = grpc.ServerDuplexStream<PushStatisticsRequest, PushStatisticsResponse>;
type Session = StreamSession<PushStatisticsRequest, PushStatisticsResponse>;

/** A PushStatistics server that hands each call to `onCall`, and its client. */
async function loopback(onCall: (call: ServerCall) => void): Promise<{ server: grpc.Server; client: InstanceType<typeof FactorOwnerServiceClient> }> {
  const server = new grpc.Server();
  server.addService(FactorOwnerServiceService, { pushStatistics: onCall, fetchLayerState: (call: grpc.ServerWritableStream<unknown, unknown>) => call.end() });
  const port = await new Promise<number>((res, rej) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))),
  );
  return { server, client: new FactorOwnerServiceClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) };
}

const hello: PushStatisticsRequest = { kind: { $case: 'hello', value: { workerId: 'worker-1', epoch: 3 } } };

/** Opens a session and records what it reports. */
function record(client: InstanceType<typeof FactorOwnerServiceClient>) {
  const messages: PushStatisticsResponse[] = [];
  const ends: { why: string; err: Error | undefined }[] = [];
  let ended: () => void = () => undefined;
  const end = new Promise<void>((res) => (ended = res));
  const session: Session = new StreamSession(client.pushStatistics(), hello, {
    onMessage: (m) => messages.push(m),
    onEnd: (why, err) => {
      ends.push({ why, err });
      ended();
    },
  });
  return { session, messages, ends, end };
}

const settle = () => new Promise((res) => setTimeout(res, 150));

test('the hello goes first, answers reach onMessage, and a later write uses the same writer', async (t) => {
  const received: PushStatisticsRequest[] = [];
  const { server, client } = await loopback((call) =>
    call.on('data', (req: PushStatisticsRequest) => {
      received.push(req);
      call.write({ epoch: received.length, schedules: [], ackedStep: 0 });
    }),
  );
  const { session, messages, ends } = record(client);
  try {
    await session.writer.write({ kind: { $case: 'statisticsComplete', value: { step: 1, workerId: 'worker-1', statisticTensors: 0, shardCount: 1 } } }, 64);
    while (messages.length < 2) await settle();
    t.deepEqual(
      received.map((r) => r.kind?.$case),
      ['hello', 'statisticsComplete'],
    );
    t.deepEqual(received[0].kind?.$case === 'hello' && received[0].kind.value, { workerId: 'worker-1', epoch: 3 });
    t.deepEqual(
      messages.map((m) => m.epoch),
      [1, 2],
    );
    t.deepEqual(ends, []);
    t.false(session.ended);
  } finally {
    session.close();
    client.close();
    server.forceShutdown();
  }
});

test('a call the server fails ends once, with its error', async (t) => {
  const { server, client } = await loopback((call) =>
    call.on('data', () => call.emit('error', { code: grpc.status.FAILED_PRECONDITION, details: 'the first message must be hello' })),
  );
  const { ends, end, session } = record(client);
  try {
    await end;
    await settle();
    t.is(ends.length, 1, 'reported once, though grpc-js says it with error and status');
    t.regex(ends[0].why, /FAILED_PRECONDITION: the first message must be hello/);
    t.is((ends[0].err as grpc.ServiceError).code, grpc.status.FAILED_PRECONDITION);
    t.true(session.ended);
  } finally {
    client.close();
    server.forceShutdown();
  }
});

test('a call the server ends cleanly ends too (no error)', async (t) => {
  const { server, client } = await loopback((call) => call.on('data', () => call.end()));
  const { ends, end } = record(client);
  try {
    await end;
    await settle();
    t.is(ends.length, 1);
    t.is(ends[0].err, undefined);
  } finally {
    client.close();
    server.forceShutdown();
  }
});

test('a server that shuts down ends the session with an error', async (t) => {
  let opened: () => void = () => undefined;
  const open = new Promise<void>((res) => (opened = res));
  const { server, client } = await loopback((call) => call.on('data', () => opened()));
  const { ends, end } = record(client);
  try {
    await open;
    server.forceShutdown();
    await end;
    t.is(ends.length, 1);
    t.not((ends[0].err as grpc.ServiceError | undefined)?.code ?? grpc.status.OK, grpc.status.OK);
  } finally {
    client.close();
  }
});

test('after detach() the end is not reported and writes are refused; close() ends our side', async (t) => {
  let serverSawEnd: () => void = () => undefined;
  const sawEnd = new Promise<void>((res) => (serverSawEnd = res));
  const calls: ServerCall[] = [];
  const { server, client } = await loopback((call) => {
    calls.push(call);
    call.on('data', () => undefined); // flowing, so that 'end' comes
    call.on('end', () => serverSawEnd());
  });
  const detached = record(client);
  const closed = record(client);
  try {
    while (calls.length < 2) await settle();
    detached.session.detach();
    await t.throwsAsync(detached.session.writer.write(hello, 64));
    closed.session.close();
    await sawEnd;
    for (const c of calls) c.end();
    await settle();
    t.deepEqual(detached.ends, [], 'a detached session reports nothing');
    t.deepEqual(closed.ends, [], 'nor does a closed one');
  } finally {
    client.close();
    server.forceShutdown();
  }
});
