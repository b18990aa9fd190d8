export * from './idx.js';
export * from './fashion-mnist.js';
export * from './batches.js';
export * from './augment.js';
