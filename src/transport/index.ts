/** Transport primitives: tensor chunking, fast tensor (de)serializers and service definitions, byte-budget flow control, channel options, health/reflection. */
export * from './limits.js';
export * from './errors.js';
export * from './tensor-codec.js';
export * from './flow.js';
export * from './channel-options.js';
export * from './health-reflection.js';
export * from './fast-codec.js';
export * from './fast-services.js';
