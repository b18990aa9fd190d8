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
 * Messages without a tensor (hellos, acks, commits...) use the generated code unchanged.
 */
import { type ChannelCredentials, type ClientOptions, makeGenericClientConstructor } from "@grpc/grpc-js";

import {
  type FactorOwnerServiceClient,
  FactorOwnerServiceService,
} from "../gen/spngd/v1/factor_owner.js";
import {
  type ParameterServerServiceClient,
  ParameterServerServiceService,
} from "../gen/spngd/v1/parameter_server.js";
import {
  decodeDownloadParametersResponse,
  decodeFetchLayerStateResponse,
  decodePublishPreconditionersRequest,
  decodePushStatisticsRequest,
  decodeTrainRequest,
  decodeTrainResponse,
  encodeDownloadParametersResponse,
  encodeFetchLayerStateResponse,
  encodePublishPreconditionersRequest,
  encodePushStatisticsRequest,
  encodeTrainRequest,
  encodeTrainResponse,
} from "./fast-codec.js";

/** ParameterServerService with fast Train (both directions), PublishPreconditioners requests, DownloadParameters responses. */
export const FastParameterServerServiceService: typeof ParameterServerServiceService = {
  ...ParameterServerServiceService,
  train: {
    ...ParameterServerServiceService.train,
    requestSerialize: encodeTrainRequest,
    requestDeserialize: decodeTrainRequest,
    responseSerialize: encodeTrainResponse,
    responseDeserialize: decodeTrainResponse,
  },
  publishPreconditioners: {
    ...ParameterServerServiceService.publishPreconditioners,
    requestSerialize: encodePublishPreconditionersRequest,
    requestDeserialize: decodePublishPreconditionersRequest,
  },
  downloadParameters: {
    ...ParameterServerServiceService.downloadParameters,
    responseSerialize: encodeDownloadParametersResponse,
    responseDeserialize: decodeDownloadParametersResponse,
  },
};

/** FactorOwnerService with fast PushStatistics requests and FetchLayerState responses. */
export const FastFactorOwnerServiceService: typeof FactorOwnerServiceService = {
  ...FactorOwnerServiceService,
  pushStatistics: {
    ...FactorOwnerServiceService.pushStatistics,
    requestSerialize: encodePushStatisticsRequest,
    requestDeserialize: decodePushStatisticsRequest,
  },
  fetchLayerState: {
    ...FactorOwnerServiceService.fetchLayerState,
    responseSerialize: encodeFetchLayerStateResponse,
    responseDeserialize: decodeFetchLayerStateResponse,
  },
};

/** Client of ParameterServerService using the fast definitions; instances are `ParameterServerServiceClient`s. */
export const FastParameterServerServiceClient = makeGenericClientConstructor(
  FastParameterServerServiceService,
  "spngd.v1.ParameterServerService",
) as unknown as {
  new (address: string, credentials: ChannelCredentials, options?: Partial<ClientOptions>): ParameterServerServiceClient;
  service: typeof FastParameterServerServiceService;
  serviceName: string;
};

/** Client of FactorOwnerService using the fast definitions; instances are `FactorOwnerServiceClient`s. */
export const FastFactorOwnerServiceClient = makeGenericClientConstructor(
  FastFactorOwnerServiceService,
  "spngd.v1.FactorOwnerService",
) as unknown as {
  new (address: string, credentials: ChannelCredentials, options?: Partial<ClientOptions>): FactorOwnerServiceClient;
  service: typeof FastFactorOwnerServiceService;
  serviceName: string;
};
