/**
 * Learning rate over (fractional) epochs (docs/numerics.md § Update): optional linear warm-up, then constant
 * until decayStart, polynomial decay lr0·(1 − (e − e_start)/(e_end − e_start))^p to decayEnd.
 */
export interface LrScheduleConfig {
  lr: number;
  warmupEpochs: number;
  /** Fraction of lr at the start of warm-up. */
  warmupStartFactor: number;
  decayStartEpoch: number;
  decayEndEpoch: number;
  power: number;
  /** Floor of the decayed rate, as a fraction of lr. */
  finalFactor: number;
}

export function learningRateAt(c: LrScheduleConfig, epoch: number): number {
  if (c.warmupEpochs > 0 && epoch < c.warmupEpochs) {
    const t = epoch / c.warmupEpochs;
    return c.lr * (c.warmupStartFactor + (1 - c.warmupStartFactor) * t);
  }
  if (epoch <= c.decayStartEpoch || c.decayEndEpoch <= c.decayStartEpoch) return c.lr;
  const t = Math.min(1, (epoch - c.decayStartEpoch) / (c.decayEndEpoch - c.decayStartEpoch));
  return c.lr * Math.max(c.finalFactor, (1 - t) ** c.power);
}
