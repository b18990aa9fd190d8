/** The built-in model specs, selectable by name (`--model`, or `model: resnet8` in a config). */
import { ModelBuilder } from './model-builder.js';
import { type ModelSpec, ModelSpecError } from './model-spec.js';
import { parseModelSpec } from './model-schema.js';

export const builtinModelNames = ['mlp', 'cnn', 'resnet8', 'resnet20'] as const;
export type BuiltinModelName = (typeof builtinModelNames)[number];

/**
 * A CIFAR-style ResNet (He et al. 2016, § 4.2) for 1×28×28 input: a 3×3 conv stem with 16
 * channels, BN and ReLU; three stages of `blocksPerStage` basic blocks (conv3×3-BN-ReLU-conv3×3-BN
 * plus the shortcut, then ReLU) with 16, 32 and 64 channels on 28×28, 14×14 and 7×7; the first
 * block of stages 2 and 3 has stride 2 and a 1×1 conv + BN projection shortcut; global average
 * pooling and a linear layer to 10 classes. Depth 6·blocksPerStage + 2.
 */
export function cifarResnetSpec(blocksPerStage: number): ModelSpec {
  const b = new ModelBuilder([1, 28, 28]).conv(16, 3, { pad: 1 }).bn().relu();
  [16, 32, 64].forEach((channels, stage) => {
    for (let block = 0; block < blocksPerStage; block++) {
      const stride = stage > 0 && block === 0 ? 2 : 1;
      b.residual((p) => p.conv(channels, 3, { stride, pad: 1 }).bn().relu().conv(channels, 3, { pad: 1 }).bn(), {
        shortcut: stride === 1 ? undefined : (p) => p.conv(channels, 1, { stride }).bn(),
      });
    }
  });
  return b.globalAvgPool().linear(10).spec();
}

/**
 * mlp: 784-256-256-10 with ReLU on flattened 1×28×28 input (269,322 params).
 * cnn: two conv3×3(pad 1)-BN-ReLU-maxpool2 blocks with 16 and 32 channels, then linear 32·7·7 → 10
 * (20,586 params), kept small for 2 CPU cores.
 * resnet8, resnet20: cifarResnetSpec with 1 and 3 blocks per stage (78,090 and 272,970 params;
 * convs keep their bias, which the BN after them makes redundant).
 */
export const builtinModelSpecs: Record<BuiltinModelName, ModelSpec> = {
  mlp: new ModelBuilder([1, 28, 28]).flatten().linear(256).relu().linear(256).relu().linear(10).spec(),
  cnn: new ModelBuilder([1, 28, 28])
    .conv(16, 3, { stride: 1, pad: 1 })
    .bn()
    .relu()
    .maxpool(2, { stride: 2 })
    .conv(32, 3, { stride: 1, pad: 1 })
    .bn()
    .relu()
    .maxpool(2, { stride: 2 })
    .flatten()
    .linear(10)
    .spec(),
  resnet8: cifarResnetSpec(1),
  resnet20: cifarResnetSpec(3),
};

/** A built-in's name or a spec (validated) → a spec. */
export function resolveModelSpec(config: unknown): ModelSpec {
  if (typeof config === 'string') {
    if ((builtinModelNames as readonly string[]).includes(config)) return builtinModelSpecs[config as BuiltinModelName];
    throw new ModelSpecError(`unknown built-in model "${config}" (known: ${builtinModelNames.join(', ')})`);
  }
  return parseModelSpec(config);
}
