/**
 * Tensors <-> TensorChunk messages, as one import: sizes and shape checks (tensor-sizes.ts),
 * upper-triangle packing (upper-triangle.ts), float32 bytes (float-bytes.ts), sending
 * (tensor-chunker.ts) and receiving (tensor-assembler.ts). New code imports the module it needs;
 * this one stays for the actors that still import from it.
 */
export { type TensorChunk, TensorEncoding } from '../gen/spngd/v1/tensor.js';
export { bytesToFloat32, float32ToBytes } from './float-bytes.js';
export { type AssembledTensor, type AssemblerOptions, envelopeTensor, TensorAssembler, toDense } from './tensor-assembler.js';
export { type ChunkOptions, chunkCountFor, chunkSymmetric, chunkTensor, chunkWireBytes } from './tensor-chunker.js';
export { encodedByteLength, encodedElementCount, shapeSize, triangleSize } from './tensor-sizes.js';
export { packUpperTriangle, unpackUpperTriangle } from './upper-triangle.js';
