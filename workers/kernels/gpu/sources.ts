/**
 * Kernel sources for gpu.js, generated as plain strings.
 *
 * Why strings: gpu.js parses a kernel's source text. A TypeScript function would reach it through
 * `fn.toString()` after tsx/esbuild or tsc has rewritten it (esbuild may inject `__name(...)`
 * helpers or change syntax), so every kernel here is a string that no build step touches.
 *
 * Why generated per shape: every dimension is baked in as an integer literal or a `this.constants`
 * entry. Loops are bounded by `this.constants` only: a loop bounded by a kernel argument silently
 * stops at `loopMaxIterations` (1000 by default).
 *
 * Index arithmetic (gpu.js 2.24 webasm, measured): every `let`/`const` local becomes an f32, even one
 * initialised from an integer expression, while an expression built only from `this.thread.*`,
 * integer constants (with `strictIntegers`), integer literals and bitwise operators stays i32. So
 * flat indices are written inline as i32 expressions, loop counters enter them as `(k | 0)` (exact:
 * counters stay far below 2^24), and locals hold only small coordinates. Besides being exact for
 * arrays of more than 2^24 values, i32 indices skip the float→int conversions (1.3–1.5x faster).
 *
 * The webasm SIMD lowering spreads `this.thread.x` over the 4 lanes of an f32x4: a read whose index
 * depends on `thread.x` is a 4-load gather, any other read is one load and a splat. The blocked
 * matmul therefore reads the B operand (indexed by the output column = thread.x) once per k and
 * reuses it for 4 output rows returned as an `Array(4)`.
 */

/** Literal for an integer baked into a source; rejects anything that is not a safe non-negative integer. */
function lit(v: number): string {
  if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`kernel source: bad integer ${v}`);
  return String(v);
}

/**
 * How the inner dimension is split over thread.z (split-K): each of `splits` output layers sums
 * `chunk` consecutive k (a multiple of 4; the last layer may have fewer), and the caller adds the
 * layers. It lets a product with a small output but a long k use every worker thread: gpu.js splits
 * a threaded run by output cells (4096 per worker).
 */
export interface KSplit {
  splits: number;
  chunk: number;
}

/** Shape of a blocked product: the kernel computes P = op(A)·op(B) for m4 rows, n4 columns. */
export interface BlockedMatmulShape {
  /** Rows of the product, a multiple of 4 (the caller pads A). */
  m4: number;
  /** Columns of the product, a multiple of 4 (the caller pads B). */
  n4: number;
  /** Inner dimension (any value ≥ 1; the last k % 4 terms are unrolled after the main loop). */
  k: number;
  /** A is stored k×m4 (row-major) instead of m4×k. */
  transA: boolean;
  /** B is stored n4×k instead of k×n4. */
  transB: boolean;
  /** Split-K over thread.z (default: none). */
  split?: KSplit;
}

/** The split of a kernel's k loop: the given one, or one chunk of all k4 = k − k % 4 terms. */
export function normalSplit(k: number, split?: KSplit): KSplit {
  const k4 = k - (k % 4);
  if (split === undefined || split.splits <= 1) return { splits: 1, chunk: k4 };
  if (split.chunk % 4 !== 0 || split.chunk <= 0 || split.splits * split.chunk < k4 || (split.splits - 1) * split.chunk >= k4) {
    throw new RangeError(`k split ${split.splits}x${split.chunk} does not cover k4=${k4}`);
  }
  return split;
}

/** Constants a blocked-matmul (or Gram) kernel expects: the k loop's bound. */
export function kLoopConstants(k: number, split?: KSplit): Record<string, number> {
  return { KC: normalSplit(k, split).chunk };
}

/**
 * The k loop shared by the product kernels: accumulators s0..s3 += Σ_k A(4y + r, k)·B(k, x), the
 * loop unrolled by 4, then the k % 4 tail. `aIndex(base, r, u)` and `bIndex(base, u)` give the flat
 * indices of A(row r of the block, k = base + u) and B(k = base + u, column), base '' meaning 0.
 */
function kLoop(
  lines: string[],
  k: number,
  split: KSplit,
  bName: string,
  aIndex: (base: string, r: number, u: number) => string,
  bIndex: (base: string, u: number) => string,
): void {
  const k4 = k - (k % 4);
  const base = split.splits > 1 ? `(this.thread.z * ${lit(split.chunk)} + (k | 0))` : '(k | 0)';
  if (k4 > 0) {
    const guarded = split.splits * split.chunk > k4;
    const pad = guarded ? '      ' : '    ';
    lines.push('  for (let k = 0; k < this.constants.KC; k += 4) {');
    if (guarded) lines.push(`    if (${base} < ${lit(k4)}) {`);
    for (let u = 0; u < 4; u++) lines.push(`${pad}const b${u} = ${bName}[${bIndex(base, u)}];`);
    for (let r = 0; r < 4; r++) {
      const terms = [0, 1, 2, 3].map((u) => `a[${aIndex(base, r, u)}] * b${u}`);
      lines.push(`${pad}s${r} += ${terms.join(' + ')};`);
    }
    if (guarded) lines.push('    }');
    lines.push('  }');
  }
  if (k4 < k) {
    const last = split.splits > 1;
    const pad = last ? '    ' : '  ';
    if (last) lines.push(`  if (this.thread.z == ${lit(split.splits - 1)}) {`);
    for (let t = k4; t < k; t++) {
      lines.push(`${pad}const t${t - k4} = ${bName}[${bIndex('', t)}];`);
      for (let r = 0; r < 4; r++) lines.push(`${pad}s${r} += a[${aIndex('', r, t)}] * t${t - k4};`);
    }
    if (last) lines.push('  }');
  }
}

/**
 * Blocked matmul: output [n4, m4/4] (or [n4, m4/4, splits]) of Array(4); cell (x, y, z) holds the
 * layer-z part of P[4y + r][x] in component r, at flat offset (((z·m4/4 + y)·n4 + x)·4 + r).
 */
export function blockedMatmulSource(s: BlockedMatmulShape): string {
  const { m4, n4, k, transA, transB } = s;
  if (m4 % 4 !== 0 || n4 % 4 !== 0 || m4 === 0 || n4 === 0 || k < 1) {
    throw new RangeError(`blocked matmul: bad shape m4=${m4} n4=${n4} k=${k}`);
  }
  const split = normalSplit(k, s.split);
  const aIndex = (base: string, r: number, u: number): string =>
    transA
      ? `${base ? `${base} * ${lit(m4)} + ` : ''}this.thread.y * 4 + ${lit(u * m4 + r)}`
      : `this.thread.y * ${lit(4 * k)} + ${base ? `${base} + ` : ''}${lit(r * k + u)}`;
  const bIndex = (base: string, u: number): string =>
    transB ? `this.thread.x * ${lit(k)} + ${base ? `${base} + ` : ''}${lit(u)}` : `${base ? `${base} * ${lit(n4)} + ` : ''}${lit(u * n4)} + this.thread.x`;
  const lines: string[] = ['function(a, b) {', '  let s0 = 0;', '  let s1 = 0;', '  let s2 = 0;', '  let s3 = 0;'];
  kLoop(lines, k, split, 'b', aIndex, bIndex);
  lines.push('  return [s0, s1, s2, s3];', '}');
  return lines.join('\n');
}

/**
 * Gram matrix XᵀX over its upper triangle only: X is stored k×n4; output [4, units] (or
 * [4, units, splits]) of Array(4), one SIMD quad per unit. `units` holds, per unit, the first row
 * 4·rb and first column 4·cq (cq ≥ rb) of a 4×4 block of the result; component r of cell (x, unit)
 * is S[4·rb + r][4·cq + x]. Only the blocks on or above the diagonal are listed, so this does ~half
 * the work of the full product, and every unit costs the same, so gpu.js's equal split of cells
 * over workers is balanced.
 */
export function gramTriangleSource(n4: number, k: number, split?: KSplit): string {
  if (n4 % 4 !== 0 || n4 === 0 || k < 1) throw new RangeError(`gram: bad shape n4=${n4} k=${k}`);
  const aIndex = (base: string, r: number, u: number): string => `${base ? `${base} * ${lit(n4)} + ` : ''}(ra | 0) + ${lit(u * n4 + r)}`;
  const bIndex = (base: string, u: number): string => `${base ? `${base} * ${lit(n4)} + ` : ''}${lit(u * n4)} + (cb | 0) + this.thread.x`;
  const lines: string[] = [
    'function(a, units) {',
    '  const ra = units[this.thread.y * 2];',
    '  const cb = units[this.thread.y * 2 + 1];',
    '  let s0 = 0;',
    '  let s1 = 0;',
    '  let s2 = 0;',
    '  let s3 = 0;',
  ];
  kLoop(lines, k, normalSplit(k, split), 'a', aIndex, bIndex);
  lines.push('  return [s0, s1, s2, s3];', '}');
  return lines.join('\n');
}

/**
 * The textbook kernel, one output per thread: output [n, m], a as m×k, b as k×n, both passed as 2-D
 * `input(...)` views. The baseline the blocked kernel is measured against.
 */
export function naiveMatmulSource(): string {
  return [
    'function(a, b) {',
    '  let sum = 0;',
    '  for (let i = 0; i < this.constants.K; i++) {',
    '    sum += a[this.thread.y][i] * b[i][this.thread.x];',
    '  }',
    '  return sum;',
    '}',
  ].join('\n');
}

/** Geometry a convolution kernel source bakes in. */
export interface ConvShape {
  batch: number;
  channels: number;
  height: number;
  width: number;
  kernelH: number;
  kernelW: number;
  stride: number;
  pad: number;
  outH: number;
  outW: number;
}

/**
 * im2col: output [cols4, rows] for the row-major (n, oy, ox) × (c, ky, kx) patch matrix, the column
 * count padded to a multiple of 4 (cols4 ≥ channels·kernelH·kernelW; the caller drops the padding)
 * so that every SIMD quad and worker range runs vectorised. A 2-D output also keeps gpu.js's per-cell
 * thread-id arithmetic (integer divisions) to one quad in four: a 3-D output measured 3x slower.
 * thread.x = (c, ky, kx) is split with f32 divisions (exact below 2^24), thread.y = (n, oy, ox)
 * likewise; the input index is built in i32.
 */
export function im2colSource(g: ConvShape): string {
  const khw = g.kernelH * g.kernelW;
  const ohw = g.outH * g.outW;
  return [
    'function(x) {',
    `  const n = Math.floor(this.thread.y / ${lit(ohw)});`,
    `  const p = this.thread.y - n * ${lit(ohw)};`,
    `  const oy = Math.floor(p / ${lit(g.outW)});`,
    `  const ox = p - oy * ${lit(g.outW)};`,
    `  const c = Math.floor(this.thread.x / ${lit(khw)});`,
    `  const q = this.thread.x - c * ${lit(khw)};`,
    `  const ky = Math.floor(q / ${lit(g.kernelW)});`,
    `  const kx = q - ky * ${lit(g.kernelW)};`,
    `  const iy = oy * ${lit(g.stride)} + ky - ${lit(g.pad)};`,
    `  const ix = ox * ${lit(g.stride)} + kx - ${lit(g.pad)};`,
    '  let v = 0;',
    `  if (c < ${lit(g.channels)} && iy >= 0 && iy < ${lit(g.height)} && ix >= 0 && ix < ${lit(g.width)}) {`,
    `    v = x[(((n | 0) * ${lit(g.channels)} + (c | 0)) * ${lit(g.height)} + (iy | 0)) * ${lit(g.width)} + (ix | 0)];`,
    '  }',
    '  return v;',
    '}',
  ].join('\n');
}

/**
 * col2im as a gather: output [width4, batch·channels·height] (width padded to a multiple of 4, the
 * caller drops the padding); each input pixel (n, c, iy, ix) sums the patch entries that cover it,
 * i.e. over (ky, kx) with iy + pad − ky = oy·stride, 0 ≤ oy < outH, and the same along x.
 */
export function col2imSource(g: ConvShape): string {
  const ckk = g.channels * g.kernelH * g.kernelW;
  const s = g.stride;
  const oyExpr = s === 1 ? 'ty' : `Math.floor(ty / ${lit(s)})`;
  const oxExpr = s === 1 ? 'tx' : `Math.floor(tx / ${lit(s)})`;
  const yHit = s === 1 ? `ty >= 0 && oy < ${lit(g.outH)}` : `ty >= 0 && oy * ${lit(s)} == ty && oy < ${lit(g.outH)}`;
  const xHit = s === 1 ? `tx >= 0 && ox < ${lit(g.outW)}` : `tx >= 0 && ox * ${lit(s)} == tx && ox < ${lit(g.outW)}`;
  return [
    'function(cols) {',
    `  const nc = Math.floor(this.thread.y / ${lit(g.height)});`,
    `  const iy = this.thread.y - nc * ${lit(g.height)};`,
    `  const n = Math.floor(nc / ${lit(g.channels)});`,
    `  const c = nc - n * ${lit(g.channels)};`,
    '  let sum = 0;',
    '  for (let ky = 0; ky < this.constants.KH; ky++) {',
    `    const ty = iy + ${lit(g.pad)} - ky;`,
    `    const oy = ${oyExpr};`,
    `    if (${yHit}) {`,
    '      for (let kx = 0; kx < this.constants.KW; kx++) {',
    `        const tx = this.thread.x + ${lit(g.pad)} - kx;`,
    `        const ox = ${oxExpr};`,
    `        if (${xHit}) {`,
    `          sum += cols[(((n | 0) * ${lit(g.outH)} + (oy | 0)) * ${lit(g.outW)} + (ox | 0)) * ${lit(ckk)} + ((c | 0) * ${lit(g.kernelH)} + (ky | 0)) * ${lit(g.kernelW)} + (kx | 0)];`,
    '        }',
    '      }',
    '    }',
    '  }',
    '  return sum;',
    '}',
  ].join('\n');
}

/** x + v on every row: output [cols, rows]. */
export function addRowVectorSource(cols: number): string {
  return ['function(x, v) {', `  return x[this.thread.y * ${lit(cols)} + this.thread.x] + v[this.thread.x];`, '}'].join('\n');
}

/**
 * Partial column sums: output [cols, chunks]; cell (c, j) sums rows j·chunk .. j·chunk + chunk − 1
 * (clipped to `rows`) of column c. The caller adds the partials in float64, so the float32 error
 * grows with the chunk length only.
 */
export function columnPartialSumsSource(rows: number, cols: number, chunk: number): string {
  return [
    'function(x) {',
    '  let sum = 0;',
    '  for (let t = 0; t < this.constants.CHUNK; t++) {',
    `    if (this.thread.y * ${lit(chunk)} + (t | 0) < ${lit(rows)}) {`,
    `      sum += x[(this.thread.y * ${lit(chunk)} + (t | 0)) * ${lit(cols)} + this.thread.x];`,
    '    }',
    '  }',
    '  return sum;',
    '}',
  ].join('\n');
}
