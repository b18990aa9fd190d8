/** Transport primitives: tensor chunking, byte-budget flow control, channel options, health/reflection. */
export * from "./limits.js";
export * from "./errors.js";
export * from "./tensor-codec.js";
export * from "./flow.js";
export * from "./channel-options.js";
export * from "./health-reflection.js";
