/**
 * Combining per-worker contributions: the PS reduces gradients and an owner statistics, each
 * leaving out a contribution that is not finite.
 */

/** Whether every value is finite (no NaN or ±Infinity). */
export function allFinite(v: Float32Array): boolean {
  for (let i = 0; i < v.length; i++) if (!Number.isFinite(v[i])) return false;
  return true;
}

/** Sample-weighted mean of per-worker maps of local means: the global-batch mean. */
export function weightedMean(parts: { weight: number; values: Map<string, Float32Array> }[]): Map<string, Float32Array> {
  const total = parts.reduce((s, p) => s + p.weight, 0);
  const out = new Map<string, Float32Array>();
  for (const part of parts) {
    const w = part.weight / total;
    for (const [key, v] of part.values) {
      let acc = out.get(key);
      if (!acc) {
        acc = new Float32Array(v.length);
        out.set(key, acc);
      }
      if (acc.length !== v.length) throw new RangeError(`${key}: ${v.length} values where ${acc.length} were expected`);
      for (let i = 0; i < v.length; i++) acc[i] += w * v[i];
    }
  }
  return out;
}
