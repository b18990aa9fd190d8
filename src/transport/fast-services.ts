/**
 * grpc-js service definitions and client constructors for the two tensor-carrying services, with
 * the (de)serializers of fast-codec.ts on the tensor-carrying directions. Same paths, same wire
 * format, same TypeScript types as the generated ones: drop-in replacements.
 *
 * ```ts
 * server.addService(FastParameterServerServiceService, impl);
 * const ps: ParameterServerServiceClient = new FastParameterServerServiceClient(address, creds, channelOptions());
 * ```
 *
 * Received `TensorChunk.data` is a view into the received message buffer (no copy; any byte
 * offset: go through TensorAssembler / bytesToFloat32, which copy or view as alignment allows).
 * Messages without a tensor (hellos, acks, commits...) use the generated code unchanged. Every
 * method counts its bytes into this process's traffic meter (traffic.ts).
 *
 * Server responses are encoded into one reused scratch buffer rather than a fresh one per message
 * (measured: about a third less CPU per MiB on the sending server, from fewer page faults and less
 * garbage). That is safe because grpc-js's server copies the serialized bytes into its own framed
 * message synchronously, inside the call to `responseSerialize`'s caller
 * (BaseServerInterceptingCall.serializeMessage in server-interceptors.js), and never looks at them
 * again. It is enabled only for the grpc-js versions whose code was checked (SCRATCH_VERIFIED);
 * after an upgrade, check that function and extend the list. Clients always get a fresh buffer per
 * request: grpc-js's client copies them later, after asynchronous filters.
 */
import { type ChannelCredentials, type ClientOptions, makeGenericClientConstructor } from '@grpc/grpc-js';
import { createRequire } from 'node:module';

import { type FactorOwnerServiceClient, FactorOwnerServiceService } from '../gen/spngd/v1/factor_owner.js';
import { type ParameterServerServiceClient, ParameterServerServiceService } from '../gen/spngd/v1/parameter_server.js';
import {
  decodeDownloadParametersResponse,
  decodeFetchLayerStateResponse,
  decodePublishPreconditionersRequest,
  decodePushStatisticsRequest,
  decodeTrainRequest,
  decodeTrainResponse,
  DOWNLOAD_PARAMETERS_RESPONSE_ROUTE,
  encodePublishPreconditionersRequest,
  encodePushStatisticsRequest,
  encodeSpliced,
  encodeTrainRequest,
  FETCH_LAYER_STATE_RESPONSE_ROUTE,
  TRAIN_RESPONSE_ROUTE,
  type TensorRoute,
} from './fast-codec.js';
import { metered } from './traffic.js';

/** grpc-js versions (major.minor) whose server copies a serialized response synchronously. */
export const SCRATCH_VERIFIED: readonly string[] = ['1.14'];

/** The installed grpc-js version. */
export const GRPC_JS_VERSION: string = (createRequire(import.meta.url)('@grpc/grpc-js/package.json') as { version: string }).version;

/** Whether server responses are encoded into a reused scratch buffer (see above). */
export const RESPONSE_SCRATCH_ENABLED: boolean = SCRATCH_VERIFIED.includes(GRPC_JS_VERSION.split('.').slice(0, 2).join('.'));

let scratch = Buffer.alloc(0);

/** A view of the shared scratch buffer, grown as needed (own memory, not the Buffer pool). */
function scratchOf(bytes: number): Buffer {
  if (scratch.byteLength < bytes) scratch = Buffer.allocUnsafeSlow(bytes);
  return scratch.subarray(0, bytes);
}

/** `encode` for a grpc-js server's responseSerialize: into the scratch buffer when enabled. */
function responseSerializer<T>(route: TensorRoute<T>): (m: T) => Buffer {
  return RESPONSE_SCRATCH_ENABLED ? (m) => encodeSpliced(route, m, scratchOf) : (m) => encodeSpliced(route, m);
}

/** ParameterServerService with fast Train (both directions), PublishPreconditioners requests, DownloadParameters responses. */
export const FastParameterServerServiceService: typeof ParameterServerServiceService = metered({
  ...ParameterServerServiceService,
  train: {
    ...ParameterServerServiceService.train,
    requestSerialize: encodeTrainRequest,
    requestDeserialize: decodeTrainRequest,
    responseSerialize: responseSerializer(TRAIN_RESPONSE_ROUTE),
    responseDeserialize: decodeTrainResponse,
  },
  publishPreconditioners: {
    ...ParameterServerServiceService.publishPreconditioners,
    requestSerialize: encodePublishPreconditionersRequest,
    requestDeserialize: decodePublishPreconditionersRequest,
  },
  downloadParameters: {
    ...ParameterServerServiceService.downloadParameters,
    responseSerialize: responseSerializer(DOWNLOAD_PARAMETERS_RESPONSE_ROUTE),
    responseDeserialize: decodeDownloadParametersResponse,
  },
});

/** FactorOwnerService with fast PushStatistics requests and FetchLayerState responses. */
export const FastFactorOwnerServiceService: typeof FactorOwnerServiceService = metered({
  ...FactorOwnerServiceService,
  pushStatistics: {
    ...FactorOwnerServiceService.pushStatistics,
    requestSerialize: encodePushStatisticsRequest,
    requestDeserialize: decodePushStatisticsRequest,
  },
  fetchLayerState: {
    ...FactorOwnerServiceService.fetchLayerState,
    responseSerialize: responseSerializer(FETCH_LAYER_STATE_RESPONSE_ROUTE),
    responseDeserialize: decodeFetchLayerStateResponse,
  },
});

/** Client of ParameterServerService using the fast definitions; instances are `ParameterServerServiceClient`s. */
export const FastParameterServerServiceClient = makeGenericClientConstructor(
  FastParameterServerServiceService,
  'spngd.v1.ParameterServerService',
) as unknown as {
  new (address: string, credentials: ChannelCredentials, options?: Partial<ClientOptions>): ParameterServerServiceClient;
  service: typeof FastParameterServerServiceService;
  serviceName: string;
};

/** Client of FactorOwnerService using the fast definitions; instances are `FactorOwnerServiceClient`s. */
export const FastFactorOwnerServiceClient = makeGenericClientConstructor(FastFactorOwnerServiceService, 'spngd.v1.FactorOwnerService') as unknown as {
  new (address: string, credentials: ChannelCredentials, options?: Partial<ClientOptions>): FactorOwnerServiceClient;
  service: typeof FastFactorOwnerServiceService;
  serviceName: string;
};
