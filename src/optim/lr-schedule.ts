/**
 * Learning rate over (fractional) epochs (docs/numerics.md § Update): optional linear warm-up, then constant
 * until decayStart (or the warm-up's end, whichever is later), polynomial decay lr0·(1 − (e − e_start)/(e_end − e_start))^p to decayEnd.
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
  // The decay starts after the warm-up at the earliest, so the rate never jumps where the warm-up ends.
  const start = Math.max(c.decayStartEpoch, c.warmupEpochs);
  if (epoch <= start || c.decayEndEpoch <= start) return c.lr;
  const t = Math.min(1, (epoch - start) / (c.decayEndEpoch - start));
  return c.lr * Math.max(c.finalFactor, (1 - t) ** c.power);
}

/** The schedule as configured: `decayEndEpoch: 'end'` stands for the run's last step. */
export interface ConfiguredSchedule extends Omit<LrScheduleConfig, 'lr' | 'decayEndEpoch'> {
  decayEndEpoch: number | 'end';
}

/** The schedule of a run of `runEpochs` epochs (steps ÷ steps per epoch), with 'end' resolved. */
export function fitSchedule(lr: number, s: ConfiguredSchedule, runEpochs: number): LrScheduleConfig {
  return { ...s, lr, decayEndEpoch: s.decayEndEpoch === 'end' ? runEpochs : s.decayEndEpoch };
}
