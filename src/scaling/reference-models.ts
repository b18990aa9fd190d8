/**
 * Models the scaling predictions are made for besides the built-ins: the wide MLP (the
 * communication-heavy case of the validation) and ResNet-50's layer shapes (the paper's ImageNet
 * model). Only their shapes are used (planModel); ResNet-50 is never built.
 */
import { ModelBuilder, type ModelSpec } from '../nn/models.js';

/** 784-2048-2048-10 with ReLU: 5.8 M parameters, 23 MB of float32. */
export const wideMlpSpec: ModelSpec = {
  input: [784],
  layers: [{ type: 'linear', out: 2048 }, { type: 'relu' }, { type: 'linear', out: 2048 }, { type: 'relu' }, { type: 'linear', out: 10 }],
};

/**
 * ResNet-50 (He et al. 2016, Table 1) on 3×224×224: a 7×7/2 stem with 64 channels, BN, ReLU and a
 * 2×2/2 max pool (the original's 3×3/2 with padding, which the spec's pooling lacks, gives the same
 * 56×56), then stages of [3, 4, 6, 3] bottleneck blocks (1×1, 3×3, 1×1 with 4× expansion; the
 * first block of each stage has a 1×1 projection shortcut, stride 2 from stage 2 on), global
 * average pooling and a linear layer to 1000 classes. Convs keep their bias (as the built-ins do),
 * which adds 0.03 M to the original's 25.56 M parameters.
 */
export function resnet50Spec(): ModelSpec {
  const b = new ModelBuilder([3, 224, 224]).conv(64, 7, { stride: 2, pad: 3 }).bn().relu().maxpool(2, { stride: 2 });
  [3, 4, 6, 3].forEach((blocks, stage) => {
    const width = 64 * 2 ** stage;
    for (let i = 0; i < blocks; i++) {
      const stride = stage > 0 && i === 0 ? 2 : 1;
      b.residual(
        (p) =>
          p
            .conv(width, 1)
            .bn()
            .relu()
            .conv(width, 3, { stride, pad: 1 })
            .bn()
            .relu()
            .conv(4 * width, 1)
            .bn(),
        {
          shortcut: i === 0 ? (p) => p.conv(4 * width, 1, { stride }).bn() : undefined,
        },
      );
    }
  });
  return b.globalAvgPool().linear(1000).spec();
}
