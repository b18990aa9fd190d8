/**
 * Axis arithmetic for the report's charts: "nice" tick values (1, 2, 5 × 10^k) that cover the data,
 * and the linear map from data to pixels. Kept apart from the SVG so it can be tested on numbers.
 */

export interface Axis {
  /** The domain the axis spans (the outermost ticks, so lines never leave the plot). */
  min: number;
  max: number;
  ticks: number[];
}

/** The tick spacing closest to span/target among 1, 2, 5 × 10^k. */
function niceStep(span: number, target: number): number {
  const raw = span / Math.max(1, target);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  return (norm < 1.5 ? 1 : norm < 3.5 ? 2 : norm < 7.5 ? 5 : 10) * mag;
}

/** Removes the float noise of k·step (0.30000000000000004 → 0.3). */
function clean(v: number, step: number): number {
  const digits = Math.max(0, -Math.floor(Math.log10(step)) + 1);
  return Number(v.toFixed(Math.min(digits, 15)));
}

/** A linear axis over [lo, hi] with about `target` ticks; a flat or empty range gets widened. */
export function linearAxis(lo: number, hi: number, target = 5): Axis {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) return { min: 0, max: 1, ticks: [0, 0.5, 1] };
  if (hi < lo) [lo, hi] = [hi, lo];
  if (hi === lo) {
    // A constant series (e.g. a fixed learning rate) still needs a visible band around it.
    const pad = lo === 0 ? 1 : Math.abs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  const step = niceStep(hi - lo, target);
  const min = Math.floor(lo / step + 1e-9) * step;
  const max = Math.ceil(hi / step - 1e-9) * step;
  const ticks: number[] = [];
  for (let v = min; v <= max + step / 2; v += step) ticks.push(clean(v, step));
  return { min: ticks[0]!, max: ticks[ticks.length - 1]!, ticks };
}

/** A base-2 log axis (for stale intervals, which double and halve): ticks at powers of two. */
export function log2Axis(lo: number, hi: number): Axis {
  const a = Math.max(0, Math.floor(Math.log2(Math.max(1, lo))));
  const b = Math.max(a + 1, Math.ceil(Math.log2(Math.max(1, hi))));
  const ticks: number[] = [];
  for (let e = a; e <= b; e++) ticks.push(2 ** e);
  return { min: ticks[0]!, max: ticks[ticks.length - 1]!, ticks };
}

/** Maps a data value on `axis` to a pixel between p0 (axis.min) and p1 (axis.max). */
export function scaler(axis: Axis, p0: number, p1: number, log2 = false): (v: number) => number {
  const f = log2 ? Math.log2 : (v: number) => v;
  const a = f(axis.min);
  const span = f(axis.max) - a || 1;
  return (v) => p0 + ((f(v) - a) / span) * (p1 - p0);
}

/** Short tick label: no trailing float noise, exponent form only for very small or large values. */
export function formatTick(v: number): string {
  if (v === 0) return '0';
  const abs = Math.abs(v);
  if (abs >= 1e5 || abs < 1e-3) return v.toExponential(0).replace('e+', 'e');
  return String(Number(v.toPrecision(6)));
}
