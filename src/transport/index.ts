/** Transport primitives: tensor chunking, fast tensor (de)serializers and service definitions, byte-budget flow control, channel options, health/reflection. */
export * from './limits.js';
export * from './errors.js';
export { type TensorChunk, TensorEncoding } from '../gen/spngd/v1/tensor.js';
export * from './tensor-sizes.js';
export * from './upper-triangle.js';
export * from './float-bytes.js';
export * from './tensor-chunker.js';
export * from './tensor-assembler.js';
export * from './flow.js';
export * from './channel-options.js';
export * from './health-reflection.js';
export * from './fast-codec.js';
export * from './fast-services.js';
