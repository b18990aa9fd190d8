/**
 * grpc-js channel (client) and server options used by every spngd actor, so that limits agree on
 * both ends of every stream.
 */
import type { ChannelOptions, ServerOptions } from '@grpc/grpc-js';

import { DEFAULT_CHUNK_BYTES, DEFAULT_MAX_MESSAGE_BYTES, MiB } from './limits.js';

/** Tunables shared by clients and servers. */
export interface TransportOptions {
  /**
   * Data bytes per TensorChunk. Must leave room for the envelope below maxMessageBytes.
   * Default DEFAULT_CHUNK_BYTES.
   */
  chunkBytes?: number;
  /** grpc max send and receive message length, bytes. Default DEFAULT_MAX_MESSAGE_BYTES. */
  maxMessageBytes?: number;
  /**
   * Interval between HTTP/2 keepalive pings, ms. Default 10000. Lower (e.g. 1000) to detect a dead
   * peer within about keepaliveTimeMs + keepaliveTimeoutMs.
   */
  keepaliveTimeMs?: number;
  /** How long to wait for a ping answer before the connection is considered dead, ms. Default 5000. */
  keepaliveTimeoutMs?: number;
  /** Client reconnect backoff, first and maximum delay, ms. Defaults 250 and 5000. */
  initialReconnectBackoffMs?: number;
  maxReconnectBackoffMs?: number;
  /**
   * Client HTTP/2 receive window (grpc-node.flow_control_window), bytes: how much a server may
   * send on a stream before the client acknowledges. Default 4 MiB.
   */
  clientFlowControlWindow?: number;
  /** The same for what clients send to a server (set by raiseServerReceiveWindow). Default 4 MiB. */
  serverFlowControlWindow?: number;
}

/** Headroom required between the chunk size and the message limit (envelope, headers). */
export const ENVELOPE_HEADROOM_BYTES = 64 * 1024;

/** The resolved tunables. */
export type ResolvedTransportOptions = Required<TransportOptions>;

/** Fills defaults and checks that the message limit exceeds the chunk size plus headroom. */
export function resolveTransportOptions(options: TransportOptions = {}): ResolvedTransportOptions {
  const r: ResolvedTransportOptions = {
    chunkBytes: options.chunkBytes ?? DEFAULT_CHUNK_BYTES,
    maxMessageBytes: options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES,
    keepaliveTimeMs: options.keepaliveTimeMs ?? 10_000,
    keepaliveTimeoutMs: options.keepaliveTimeoutMs ?? 5_000,
    initialReconnectBackoffMs: options.initialReconnectBackoffMs ?? 250,
    maxReconnectBackoffMs: options.maxReconnectBackoffMs ?? 5_000,
    clientFlowControlWindow: options.clientFlowControlWindow ?? 4 * MiB,
    serverFlowControlWindow: options.serverFlowControlWindow ?? 4 * MiB,
  };
  if (!Number.isSafeInteger(r.chunkBytes) || r.chunkBytes < 4 || r.chunkBytes % 4 !== 0) {
    throw new RangeError(`chunkBytes must be a positive multiple of 4, got ${r.chunkBytes}`);
  }
  if (r.maxMessageBytes < r.chunkBytes + ENVELOPE_HEADROOM_BYTES) {
    throw new RangeError(`maxMessageBytes (${r.maxMessageBytes}) must exceed chunkBytes (${r.chunkBytes}) by at least ${ENVELOPE_HEADROOM_BYTES}`);
  }
  if (r.keepaliveTimeMs <= 0 || r.keepaliveTimeoutMs <= 0) throw new RangeError('keepalive times must be > 0');
  return r;
}

/** Options for `new XxxClient(address, credentials, channelOptions())`. */
export function channelOptions(options: TransportOptions = {}): ChannelOptions {
  const r = resolveTransportOptions(options);
  return {
    'grpc.max_send_message_length': r.maxMessageBytes,
    'grpc.max_receive_message_length': r.maxMessageBytes,
    'grpc.keepalive_time_ms': r.keepaliveTimeMs,
    'grpc.keepalive_timeout_ms': r.keepaliveTimeoutMs,
    // Ping also between calls so a dead coordinator is noticed while idle.
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.initial_reconnect_backoff_ms': r.initialReconnectBackoffMs,
    'grpc.max_reconnect_backoff_ms': r.maxReconnectBackoffMs,
    'grpc-node.flow_control_window': r.clientFlowControlWindow,
  };
}

/** Options for `new grpc.Server(serverOptions())`. */
export function serverOptions(options: TransportOptions = {}): ServerOptions {
  const r = resolveTransportOptions(options);
  return {
    'grpc.max_send_message_length': r.maxMessageBytes,
    'grpc.max_receive_message_length': r.maxMessageBytes,
    'grpc.keepalive_time_ms': r.keepaliveTimeMs,
    'grpc.keepalive_timeout_ms': r.keepaliveTimeoutMs,
  };
}
