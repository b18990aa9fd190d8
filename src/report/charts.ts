/**
 * Hand-written SVG line charts for the run report: axes with "nice" ticks, labels, a legend that
 * wraps, a polyline per series. No DOM and no dependency: the output is a string that any browser
 * renders offline. Text widths are estimated (no font metrics server-side), so the layout leaves slack.
 */
import { esc } from './escape.js';
import { formatTick, linearAxis, log2Axis, scaler, type Axis } from './scale.js';
import type { Point } from './series.js';

/** Tableau 10: distinguishable and readable on white; series past ten reuse it dashed. */
export const palette = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac'];
const dashes = ['', '6 3', '2 3', '8 3 2 3'];

export interface Series {
  name: string;
  points: Point[];
  color?: string;
  dash?: string;
  /** Dots at the data points (sparse series such as evaluations). */
  markers?: boolean;
}

export interface ChartSpec {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  /** Base-2 log y axis with power-of-two ticks. */
  log2Y?: boolean;
  /** Piecewise-constant lines (a value holds until the next point). */
  stepped?: boolean;
  /** Shift series apart by a few pixels so identical lines stay visible side by side. */
  separate?: boolean;
  /** Start the x axis at 0 (steps and time do). Default true. */
  xFromZero?: boolean;
  /** Start the y axis at 0 (durations do). Default false. */
  yFromZero?: boolean;
  legend?: boolean;
  width?: number;
  height?: number;
}

const FONT = 12;
const CHAR_W = 6.8; // a generous average glyph width at 12px sans-serif
const M = { left: 62, right: 18, top: 32, bottom: 42 };
const LEGEND_ROW = 18;

/** Reduces a long series to per-bucket min and max so spikes survive and the SVG stays small. */
export function thin(points: Point[], max = 1000): Point[] {
  if (points.length <= max) return points;
  const buckets = Math.floor(max / 2);
  const size = points.length / buckets;
  const out: Point[] = [];
  for (let b = 0; b < buckets; b++) {
    const slice = points.slice(Math.floor(b * size), Math.floor((b + 1) * size));
    let lo = slice[0]!;
    let hi = slice[0]!;
    for (const p of slice) {
      if (p[1] < lo[1]) lo = p;
      if (p[1] > hi[1]) hi = p;
    }
    out.push(...(lo[0] <= hi[0] ? [lo, hi] : [hi, lo]).filter((p, i, a) => i === 0 || p !== a[0]));
  }
  const last = points[points.length - 1]!;
  if (out[out.length - 1] !== last) out.push(last);
  return out;
}

/** Legend entries laid out left to right, wrapping at `width`; returns positions and the rows used. */
function layoutLegend(names: string[], width: number): { x: number; row: number }[] {
  let x = 0;
  let row = 0;
  return names.map((name) => {
    const w = 26 + name.length * CHAR_W + 18;
    if (x > 0 && x + w > width) {
      x = 0;
      row++;
    }
    const at = { x, row };
    x += w;
    return at;
  });
}

/** Consecutive finite points, split wherever a value is NaN (a diverged loss leaves a gap). */
function segments(points: Point[]): Point[][] {
  const out: Point[][] = [[]];
  for (const p of points) {
    if (Number.isFinite(p[1])) out[out.length - 1]!.push(p);
    else if (out[out.length - 1]!.length > 0) out.push([]);
  }
  return out.filter((s) => s.length > 0);
}

function stepped(points: Point[]): Point[] {
  const out: Point[] = [];
  points.forEach((p, i) => {
    if (i > 0) out.push([p[0], points[i - 1]![1]]);
    out.push(p);
  });
  return out;
}

const fmt = (v: number) => (Math.round(v * 10) / 10).toString();

export function lineChart(spec: ChartSpec): string {
  const width = spec.width ?? 560;
  const plotH = (spec.height ?? 300) - M.top - M.bottom;
  const plotW = width - M.left - M.right;
  const series = spec.series.map((s, i) => ({
    ...s,
    color: s.color ?? palette[i % palette.length]!,
    dash: s.dash ?? dashes[Math.floor(i / palette.length) % dashes.length]!,
    points: thin(s.points),
  }));
  const showLegend = spec.legend ?? series.length > 1;
  const legend = showLegend
    ? layoutLegend(
        series.map((s) => s.name),
        plotW,
      )
    : [];
  const legendRows = legend.length > 0 ? legend[legend.length - 1]!.row + 1 : 0;
  const height = M.top + plotH + M.bottom + (legendRows > 0 ? legendRows * LEGEND_ROW + 6 : 0);

  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1])).filter(Number.isFinite);
  const xAxis: Axis = linearAxis(spec.xFromZero === false ? Math.min(...xs) : Math.min(0, ...xs), Math.max(...xs), Math.max(3, Math.floor(plotW / 90)));
  // A little headroom so a line lying on the extreme value is not hidden by the frame.
  const [yLo, yHi] = [spec.yFromZero ? 0 : Math.min(...ys), Math.max(...ys)];
  const pad = 0.03 * (yHi - yLo);
  const yAxis: Axis = spec.log2Y ? log2Axis(yLo, yHi) : linearAxis(spec.yFromZero ? 0 : yLo - pad, yHi + pad, Math.max(3, Math.floor(plotH / 45)));
  const X = scaler(xAxis, M.left, M.left + plotW);
  // On the log axis the extreme values are ticks (powers of two): map a quarter doubling beyond
  // them to the frame, so lines there (shifted apart by `separate`) stay inside it and off its edge.
  const yFrame: Axis = spec.log2Y ? { ...yAxis, min: yAxis.min / 2 ** 0.25, max: yAxis.max * 2 ** 0.25 } : yAxis;
  const Y = scaler(yFrame, M.top + plotH, M.top, spec.log2Y);

  // Pixel shifts that keep overlapping series apart, capped well below the gap between y ticks.
  const tickGap = plotH / Math.max(1, yAxis.ticks.length - 1);
  const spacing = series.length > 1 ? Math.min(2.5, (0.35 * tickGap) / (series.length - 1)) : 0;
  const shift = (i: number) => (spec.separate ? (i - (series.length - 1) / 2) * spacing : 0);

  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${esc(spec.title)}" font-family="system-ui, -apple-system, 'Segoe UI', Roboto, 'DejaVu Sans', sans-serif" font-size="${FONT}">`,
  );
  parts.push(`<title>${esc(spec.title)}</title>`);
  parts.push(`<text x="${M.left}" y="20" font-size="14" font-weight="600" fill="#222">${esc(spec.title)}</text>`);
  // Grid and ticks.
  for (const t of yAxis.ticks) {
    const y = fmt(Y(t));
    parts.push(`<line x1="${M.left}" x2="${M.left + plotW}" y1="${y}" y2="${y}" stroke="#e6e6e6"/>`);
    parts.push(`<text x="${M.left - 6}" y="${y}" dy="0.32em" text-anchor="end" fill="#555">${esc(formatTick(t))}</text>`);
  }
  for (const t of xAxis.ticks) {
    const x = fmt(X(t));
    parts.push(`<line x1="${x}" x2="${x}" y1="${M.top}" y2="${M.top + plotH}" stroke="#f0f0f0"/>`);
    parts.push(`<text x="${x}" y="${M.top + plotH + 16}" text-anchor="middle" fill="#555">${esc(formatTick(t))}</text>`);
  }
  parts.push(`<rect x="${M.left}" y="${M.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#999"/>`);
  parts.push(`<text x="${M.left + plotW / 2}" y="${M.top + plotH + 34}" text-anchor="middle" fill="#333">${esc(spec.xLabel)}</text>`);
  parts.push(`<text transform="translate(16 ${M.top + plotH / 2}) rotate(-90)" text-anchor="middle" fill="#333">${esc(spec.yLabel)}</text>`);

  // Lines, then markers on top.
  series.forEach((s, i) => {
    const dy = shift(i);
    const dash = s.dash ? ` stroke-dasharray="${s.dash}"` : '';
    for (const seg of segments(s.points)) {
      const pts = (spec.stepped ? stepped(seg) : seg).map(([x, y]) => `${fmt(X(x))},${fmt(Y(y) + dy)}`).join(' ');
      parts.push(
        `<polyline class="series" data-series="${esc(s.name)}" points="${pts}" fill="none" stroke="${s.color}" stroke-width="2" stroke-linejoin="round"${dash}/>`,
      );
    }
    if (s.markers || s.points.length === 1) {
      for (const [x, y] of s.points) {
        if (!Number.isFinite(y)) continue;
        parts.push(
          `<circle cx="${fmt(X(x))}" cy="${fmt(Y(y) + dy)}" r="3" fill="${s.color}"><title>${esc(`${s.name}: ${formatTick(x)}, ${formatTick(Number(y.toPrecision(4)))}`)}</title></circle>`,
        );
      }
    }
  });

  // Legend under the x label.
  const legendTop = M.top + plotH + M.bottom + 4;
  series.forEach((s, i) => {
    const at = legend[i];
    if (!at) return;
    const x = M.left + at.x;
    const y = legendTop + at.row * LEGEND_ROW + 8;
    const dash = s.dash ? ` stroke-dasharray="${s.dash}"` : '';
    parts.push(
      `<g class="legend-item"><line x1="${x}" x2="${x + 20}" y1="${y}" y2="${y}" stroke="${s.color}" stroke-width="3"${dash}/><text x="${x + 26}" y="${y}" dy="0.32em" fill="#222">${esc(s.name)}</text></g>`,
    );
  });
  parts.push('</svg>');
  return parts.join('\n');
}
