/**
 * Security test helpers: certificates made with `spngd certs`'s code in a temporary directory, and
 * an intruder that tries every way into a cluster (join, push gradients and statistics, publish
 * preconditioners, download parameters, read state) and reports the gRPC status of each try.
 */
import { credentials, Metadata, status, type ChannelCredentials, type Client, type ClientOptions, type ServiceError, type StatusObject } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import * as grpc from '@grpc/grpc-js';
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { loadCredentials, type ActorCredentials } from '../../src/actors/common/credentials.js';
import { makeCerts } from '../../src/cli/certs-command.js';
import { FactorOwnerServiceClient } from '../../src/gen/spngd/v1/factor_owner.js';
import { LifecycleState, MembershipServiceClient, Role } from '../../src/gen/spngd/v1/membership.js';
import { ParameterServerServiceClient } from '../../src/gen/spngd/v1/parameter_server.js';
import { StateServiceClient } from '../../src/gen/spngd/v1/state.js';
import { TensorEncoding } from '../../src/gen/spngd/v1/tensor.js';
import { chunkTensor } from '../../src/transport/tensor-chunker.js';

export interface TestPki {
  dir: string;
  ca: string;
  cert: string;
  key: string;
  token: string;
  /** A second, unrelated CA and its localhost certificate. */
  otherCa: string;
  otherCert: string;
  otherKey: string;
  /** A token file with a different token. */
  wrongToken: string;
}

/** The cluster's CA with a `localhost` certificate and a token, and a second CA, under `dir`. */
export async function makeTestPki(dir: string): Promise<TestPki> {
  await makeCerts({ out: join(dir, 'cluster'), hosts: [['localhost']], token: true });
  await makeCerts({ out: join(dir, 'other'), hosts: [['localhost']] });
  writeFileSync(join(dir, 'wrong-token'), 'not-the-cluster-token\n');
  const c = (f: string) => join(dir, 'cluster', f);
  const o = (f: string) => join(dir, 'other', f);
  return {
    dir,
    ca: c('ca.crt'),
    cert: c('localhost.crt'),
    key: c('localhost.key'),
    token: c('token'),
    otherCa: o('ca.crt'),
    otherCert: o('localhost.crt'),
    otherKey: o('localhost.key'),
    wrongToken: join(dir, 'wrong-token'),
  };
}

export function clusterCredentials(p: TestPki, token = true): ActorCredentials {
  return loadCredentials({ tlsCa: p.ca, tlsCert: p.cert, tlsKey: p.key, ...(token ? { tokenFile: p.token } : {}) });
}

export interface Intruder {
  name: string;
  /** The status every try must end with. */
  expected: status;
  channel: () => ChannelCredentials;
  options: ClientOptions;
}

/**
 * Clients that must be refused. The first three fail the TLS handshake: grpc-js reports that as a
 * connection failure, so the call ends with UNAVAILABLE ("No connection established. Last error:
 * ... certificate required" or "Failed to connect") before any request reaches the server. The
 * last two complete the handshake with a cluster certificate and are stopped by the token check.
 */
export function intruders(p: TestPki): Intruder[] {
  const ca = readFileSync(p.ca);
  const tlsNoToken = clusterCredentials(p, false);
  const wrong = loadCredentials({ tlsCa: p.ca, tlsCert: p.cert, tlsKey: p.key, tokenFile: p.wrongToken });
  return [
    { name: 'a plaintext client', expected: status.UNAVAILABLE, channel: () => credentials.createInsecure(), options: {} },
    { name: 'a TLS client without a certificate', expected: status.UNAVAILABLE, channel: () => credentials.createSsl(ca), options: {} },
    {
      name: 'a client with a certificate from another CA',
      expected: status.UNAVAILABLE,
      // It trusts the cluster's CA (ca.crt is no secret), so it is the server that refuses it.
      channel: () => credentials.createSsl(ca, readFileSync(p.otherKey), readFileSync(p.otherCert)),
      options: {},
    },
    {
      name: 'a client with a cluster certificate but no token',
      expected: status.UNAUTHENTICATED,
      channel: () => tlsNoToken.channelCredentials(),
      options: tlsNoToken.clientOptions(),
    },
    {
      name: 'a client with a cluster certificate and a wrong token',
      expected: status.UNAUTHENTICATED,
      channel: () => wrong.channelCredentials(),
      options: wrong.clientOptions(),
    },
  ];
}

const DEADLINE_MS = 5000;

function unary(client: Client, call: (md: Metadata, opts: { deadline: number }, cb: (err: ServiceError | null) => void) => unknown): Promise<status> {
  return new Promise((resolve) => {
    call(new Metadata(), { deadline: Date.now() + DEADLINE_MS }, (err) => {
      client.close();
      resolve(err ? err.code : status.OK);
    });
  });
}

interface StreamLike {
  on(event: 'status', l: (s: StatusObject) => void): unknown;
  on(event: 'error' | 'data', l: (x: unknown) => void): unknown;
  write?(msg: unknown): unknown;
  end?(): unknown;
}

/** Writes `messages` (if a client stream), then waits for the call's status. */
function stream(client: Client, call: StreamLike, messages: unknown[] = []): Promise<status> {
  return new Promise((resolve) => {
    call.on('error', () => undefined);
    call.on('data', () => undefined);
    call.on('status', (s) => {
      client.close();
      resolve(s.code);
    });
    try {
      for (const m of messages) call.write?.(m);
      call.end?.();
    } catch {
      /* the call may already be over */
    }
  });
}

export type Attempts = Record<string, status>;

/**
 * Every way in, against the PS at `ps` and the owner at `owner`: join as a worker, push non-finite
 * gradients on a Train stream, publish a preconditioner hello, download the parameters, read the
 * state, push statistics to an owner, read reflection. Returns each try's status.
 */
export async function attack(intruder: Intruder, ps: string, owner: string, id: string, only?: string[]): Promise<Attempts> {
  const opts = (): ClientOptions => ({ ...intruder.options, 'grpc.initial_reconnect_backoff_ms': 100 });
  const member = {
    id,
    role: Role.ROLE_WORKER,
    address: 'localhost:9',
    state: LifecycleState.LIFECYCLE_STATE_READY,
    joinedEpoch: 0,
    lastHeartbeatUnixMs: 0,
    capacity: 1,
  };
  const gradient = new Float32Array(16).fill(Number.POSITIVE_INFINITY);
  const tensors = [...chunkTensor('fc1.weight', gradient, [4, 4], TensorEncoding.TENSOR_ENCODING_DENSE, { version: 0 })];
  const tries: Record<string, () => Promise<status>> = {
    join: () => {
      const c = new MembershipServiceClient(ps, intruder.channel(), opts());
      return unary(c, (md, o, cb) => c.join({ member }, md, o, cb));
    },
    pushGradients: () => {
      const c = new ParameterServerServiceClient(ps, intruder.channel(), opts());
      return stream(c, c.train(new Metadata(), { deadline: Date.now() + DEADLINE_MS }), [
        { kind: { $case: 'hello', value: { workerId: id, epoch: 0, parametersVersion: 0, maxMessageBytes: 0 } } },
        ...tensors.map((tensor) => ({ kind: { $case: 'gradient', value: { step: 0, workerId: id, numSamples: 1, tensor } } })),
        { kind: { $case: 'gradientsComplete', value: { step: 0, workerId: id, numSamples: 1, gradientTensors: 1, lossSum: 0, numCorrect: 0, phaseMs: {} } } },
      ]);
    },
    publishPreconditioners: () => {
      const c = new ParameterServerServiceClient(ps, intruder.channel(), opts());
      return stream(c, c.publishPreconditioners(new Metadata(), { deadline: Date.now() + DEADLINE_MS }), [
        { kind: { $case: 'hello', value: { ownerId: id, epoch: 0, layers: [] } } },
      ]);
    },
    downloadParameters: () => {
      const c = new ParameterServerServiceClient(ps, intruder.channel(), opts());
      return stream(c, c.downloadParameters({ names: [], newerThanVersion: 0, maxMessageBytes: 0 }, new Metadata(), { deadline: Date.now() + DEADLINE_MS }));
    },
    getState: () => {
      const c = new StateServiceClient(ps, intruder.channel(), opts());
      return unary(c, (md, o, cb) => c.getState({}, md, o, cb));
    },
    pushStatistics: () => {
      const c = new FactorOwnerServiceClient(owner, intruder.channel(), opts());
      return stream(c, c.pushStatistics(new Metadata(), { deadline: Date.now() + DEADLINE_MS }), [
        { kind: { $case: 'hello', value: { workerId: id, epoch: 0 } } },
        { kind: { $case: 'statisticsComplete', value: { step: 0, workerId: id, statisticTensors: 0, shardCount: 1 } } },
      ]);
    },
    reflection: () => {
      const c = reflectionClient(ps, intruder.channel(), opts());
      return stream(c, c.ServerReflectionInfo(new Metadata(), { deadline: Date.now() + DEADLINE_MS }), [{ list_services: '' }]);
    },
  };
  const out: Attempts = {};
  await Promise.all(
    Object.entries(tries)
      .filter(([k]) => !only || only.includes(k))
      .map(async ([k, f]) => (out[k] = await f())),
  );
  return out;
}

const require = createRequire(import.meta.url);
const LOADER = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Dynamic = Client & Record<string, any>;

export function healthClient(address: string, channel: ChannelCredentials, options: ClientOptions = {}): Dynamic {
  const { protoPath } = require('grpc-health-check') as { protoPath: string };
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const pkg = grpc.loadPackageDefinition(loadSync(protoPath, LOADER)) as any;
  return new pkg.grpc.health.v1.Health(address, channel, options);
}

function reflectionClient(address: string, channel: ChannelCredentials, options: ClientOptions): Dynamic {
  const proto = join(require.resolve('@grpc/reflection'), '..', '..', 'proto', 'grpc', 'reflection', 'v1', 'reflection.proto');
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const pkg = grpc.loadPackageDefinition(loadSync(proto, LOADER)) as any;
  return new pkg.grpc.reflection.v1.ServerReflection(address, channel, options);
}

/** Health Check of the whole server: the serving status, or the gRPC status code of the failure. */
export function healthCheck(client: Dynamic): Promise<string | status> {
  return new Promise((resolve) =>
    client.Check({ service: '' }, new Metadata(), { deadline: Date.now() + DEADLINE_MS }, (err: ServiceError | null, res: { status: string }) => {
      client.close();
      resolve(err ? err.code : res.status);
    }),
  );
}
