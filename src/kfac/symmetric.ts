/**
 * Small dense helpers for the symmetric n×n Kronecker factors: traces, norms, damping on the
 * diagonal and inverse residuals (packing to the upper triangle is the codec's, transport/upper-triangle.ts).
 */

export type Numeric = Float32Array | Float64Array;

export function trace(n: number, m: Numeric): number {
  let t = 0;
  for (let i = 0; i < n; i++) t += m[i * n + i];
  return t;
}

export function frobenius(m: Numeric): number {
  let s = 0;
  for (let i = 0; i < m.length; i++) s += m[i] * m[i];
  return Math.sqrt(s);
}

/** ‖a − b‖_F. */
export function frobeniusDistance(a: Numeric, b: Numeric): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i] - b[i];
    s += d * d;
  }
  return Math.sqrt(s);
}

/** A copy of m (float64) with `shift` added to the diagonal. */
export function addDiagonal(n: number, m: Numeric, shift: number): Float64Array {
  const out = new Float64Array(m);
  for (let i = 0; i < n; i++) out[i * n + i] += shift;
  return out;
}

/** max |(M·X − I)_ij| for n×n M and X, in float64: how good an inverse X is. */
export function inverseResidual(n: number, m: Numeric, x: Numeric): number {
  let worst = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += m[i * n + k] * x[k * n + j];
      const r = Math.abs(s - (i === j ? 1 : 0));
      if (r > worst) worst = r;
    }
  }
  return worst;
}

/**
 * Relative residual ‖M·X·v − v‖ / ‖v‖ over a few fixed probe vectors: O(n²) per probe, cheap
 * enough to report at every refresh where the full ‖M·X − I‖ (O(n³)) is not.
 */
export function probeInverseResidual(n: number, m: Numeric, x: Numeric, probes = 3): number {
  let worst = 0;
  const v = new Float64Array(n);
  const xv = new Float64Array(n);
  for (let p = 0; p < probes; p++) {
    // Deterministic ±1 probes: no RNG state needed and every component is exercised.
    for (let i = 0; i < n; i++) v[i] = ((i * 2654435761 + p * 40503) >>> 7) & 1 ? 1 : -1;
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += x[i * n + k] * v[k];
      xv[i] = s;
    }
    let num = 0;
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let k = 0; k < n; k++) s += m[i * n + k] * xv[k];
      num += (s - v[i]) ** 2;
    }
    worst = Math.max(worst, Math.sqrt(num / n));
  }
  return worst;
}
