/**
 * The parameter update shared by SP-NGD and SGD (docs/numerics.md § Update): v ← m·v − lr·d, w ← w + v, where
 * d is the (preconditioned) gradient. When the learning rate drops, that step's momentum is
 * m·lr_t/lr_{t−1} so that velocity accumulated at the old rate does not overshoot.
 */
export interface MomentumConfig {
  momentum: number;
  /** Rescale momentum when the learning rate drops (the SP-NGD paper's code does). */
  correctOnDrop: boolean;
}

export class MomentumUpdater {
  private readonly velocity = new Map<string, Float32Array>();
  private previousLr: number | undefined;

  constructor(private readonly config: MomentumConfig) {}

  /** Momentum coefficient for a step at learning rate lr (call once per step, before apply). */
  beginStep(lr: number): number {
    const m0 = this.config.momentum;
    const prev = this.previousLr;
    this.previousLr = lr;
    if (this.config.correctOnDrop && prev !== undefined && lr < prev && prev > 0) return (m0 * lr) / prev;
    return m0;
  }

  /** Applies one parameter's update in place. */
  apply(name: string, weights: Float32Array, direction: Float32Array, lr: number, m: number): void {
    let v = this.velocity.get(name);
    if (!v) {
      v = new Float32Array(weights.length);
      this.velocity.set(name, v);
    }
    for (let i = 0; i < weights.length; i++) {
      const vi = m * v[i] - lr * direction[i];
      v[i] = vi;
      weights[i] += vi;
    }
  }

  /** Takes these parameters' velocities (copies), keeping the others' (a PS shard's layers coming back). */
  adopt(velocity: ReadonlyMap<string, Float32Array>): void {
    for (const [k, v] of velocity) this.velocity.set(k, new Float32Array(v));
  }

  /** Velocities and the last rate, for checkpoints. */
  snapshot(): { previousLr: number | undefined; velocity: Map<string, Float32Array> } {
    return { previousLr: this.previousLr, velocity: this.velocity };
  }

  restore(s: { previousLr: number | undefined; velocity: ReadonlyMap<string, Float32Array> }): void {
    this.previousLr = s.previousLr;
    // Copied before clearing: `s.velocity` may be this updater's own map (from snapshot()).
    const given = [...s.velocity].map(([k, v]) => [k, new Float32Array(v)] as const);
    this.velocity.clear();
    for (const [k, v] of given) this.velocity.set(k, v);
  }
}
