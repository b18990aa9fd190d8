/**
 * Size limits shared by the codec, the flow control and the channel options.
 *
 * Why these numbers (measured on the project's 2-core loopback, see docs/protocol.md):
 * ts-proto `bytes` messages move ~300-400 MB/s end to end at 1-4 MiB per message and far less at
 * 32 MiB (large allocations), so tensors travel as chunks of at most DEFAULT_CHUNK_BYTES. The
 * message limits sit above the chunk size (plus room for the envelope and headers) on both sides.
 */

export const KiB = 1024;
export const MiB = 1024 * 1024;

/** Data bytes per TensorChunk unless configured otherwise (a multiple of 4). */
export const DEFAULT_CHUNK_BYTES = 1 * MiB;

/**
 * grpc max send/receive message length used on clients and servers: room for a chunk of up to
 * 4 MiB plus its envelope, and for large control messages (state snapshots).
 */
export const DEFAULT_MAX_MESSAGE_BYTES = 8 * MiB;

/** Bytes a ByteBudgetWriter keeps in flight per stream (queued, not yet written to HTTP/2). */
export const DEFAULT_IN_FLIGHT_BYTES = 8 * MiB;

/** Bytes a receiver queues per stream before pausing it. */
export const DEFAULT_RECEIVE_QUEUE_BYTES = 16 * MiB;

/** Largest tensor a TensorAssembler accepts (declared total_bytes). */
export const DEFAULT_MAX_TENSOR_BYTES = 1024 * MiB;

/** Largest sum of partially received tensors a TensorAssembler holds at once. */
export const DEFAULT_MAX_PENDING_BYTES = 1024 * MiB;

/** Largest number of tensors a TensorAssembler assembles at once (interleaved on one stream). */
export const DEFAULT_MAX_PENDING_TENSORS = 64;

/** Longest tensor name accepted, in UTF-16 code units. */
export const MAX_TENSOR_NAME_LENGTH = 512;

/** Most dimensions a tensor shape may have. */
export const MAX_TENSOR_RANK = 8;
