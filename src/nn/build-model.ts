/** A model plan → its Sequential model: the planned layers made, He-initialised from a seed. */
import { AvgPool2d } from './avgpool2d.js';
import { BatchNorm2d } from './batchnorm2d.js';
import { Conv2d } from './conv2d.js';
import { Flatten } from './flatten.js';
import { GlobalAvgPool2d } from './global-avg-pool.js';
import { heInit } from './init.js';
import { Linear } from './linear.js';
import { MaxPool2d } from './maxpool2d.js';
import { isPlannedBlock, type ModelPlan, type PlannedBlock, type PlannedLayer } from './model-plan.js';
import { ReLU } from './relu.js';
import { Residual } from './residual.js';
import { Sequential } from './sequential.js';
import type { Layer } from './types.js';

/** The layer a planned layer describes, with fresh (uninitialised) parameters. */
function makeLayer({ name, spec: ls, input }: PlannedLayer): Layer {
  switch (ls.type) {
    case 'conv':
      return new Conv2d({ name, inChannels: input[0], outChannels: ls.out, kernel: ls.kernel, stride: ls.stride, pad: ls.pad });
    case 'bn':
      return new BatchNorm2d({ name, channels: input[0], eps: ls.eps, momentum: ls.momentum });
    case 'relu':
      return new ReLU({ name });
    case 'maxpool':
      return new MaxPool2d({ name, kernel: ls.kernel, stride: ls.stride });
    case 'avgpool':
      return new AvgPool2d({ name, kernel: ls.kernel, stride: ls.stride });
    case 'globalavgpool':
      return new GlobalAvgPool2d({ name });
    case 'flatten':
      return new Flatten({ name });
    case 'linear':
      return new Linear({ name, inFeatures: input[0], outFeatures: ls.out });
  }
}

function makeBlock(b: PlannedBlock): Residual {
  return new Residual({ name: b.name, main: b.main.map(makeLayer), shortcut: b.shortcut.map(makeLayer), reluName: b.reluName });
}

/** Makes the planned layers and initialises them with `seed` (He weights, zero biases, BN identity). */
export function buildPlannedModel(plan: ModelPlan, seed: number): Sequential {
  const layers = plan.layers.map((l) => (isPlannedBlock(l) ? makeBlock(l) : makeLayer(l)));
  const model = new Sequential(layers, { inputShape: plan.input });
  heInit(model, seed);
  return model;
}
