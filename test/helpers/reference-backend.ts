/**
 * The reference ComputeBackend: plain TypeScript loops that accumulate in float64. Slow, simple and
 * obviously right; tests use it as the independent implementation that the fast backends (blas, gpu)
 * and the layers are checked against.
 */
import { NotPositiveDefiniteError, convOutputSize, type ComputeBackend, type ConvGeometry, type GemmOptions } from '../../src/compute/backend.js';
import { TYPESCRIPT_ELEMENTWISE } from '../../src/compute/elementwise.js';

function need(arr: { length: number }, n: number, what: string): void {
  if (arr.length < n) throw new RangeError(`reference backend: ${what} holds ${arr.length} values, needs ${n}`);
}

function outBuffer(out: Float32Array | undefined, n: number): Float32Array {
  if (out === undefined) return new Float32Array(n);
  need(out, n, 'out');
  return out;
}

export function createReferenceBackend(): ComputeBackend {
  return {
    name: 'reference',
    description: 'reference (plain TypeScript loops, float64 accumulation)',
    // The layers' element-wise kernels: the plain TypeScript versions the gpu backend uses too
    // (relu and reluBackward are written out below, as simple loops).
    ...TYPESCRIPT_ELEMENTWISE,

    async gemm(m, n, k, a, b, opts: GemmOptions = {}, out) {
      const transA = opts.transA ?? false;
      const transB = opts.transB ?? false;
      const alpha = opts.alpha ?? 1;
      const beta = opts.beta ?? 0;
      if (beta !== 0 && out === undefined) throw new Error('reference gemm: beta != 0 needs out');
      need(a, m * k, 'A');
      need(b, k * n, 'B');
      const c = outBuffer(out, m * n);
      const prod = new Float64Array(m * n);
      for (let i = 0; i < m; i++) {
        for (let j = 0; j < n; j++) {
          let s = 0;
          for (let p = 0; p < k; p++) {
            const aip = transA ? a[p * m + i] : a[i * k + p];
            const bpj = transB ? b[j * k + p] : b[p * n + j];
            s += aip * bpj;
          }
          prod[i * n + j] = s;
        }
      }
      for (let i = 0; i < m * n; i++) c[i] = alpha * prod[i] + (beta === 0 ? 0 : beta * c[i]);
      return c;
    },

    async gram(rows, cols, x, alpha, out) {
      need(x, rows * cols, 'X');
      const s = outBuffer(out, cols * cols);
      for (let i = 0; i < cols; i++) {
        for (let j = i; j < cols; j++) {
          let acc = 0;
          for (let r = 0; r < rows; r++) acc += x[r * cols + i] * x[r * cols + j];
          s[i * cols + j] = alpha * acc;
          s[j * cols + i] = alpha * acc;
        }
      }
      return s;
    },

    async im2col(x, g: ConvGeometry) {
      const { outH, outW } = convOutputSize(g);
      const { batch, channels: C, height: H, width: W, kernelH: KH, kernelW: KW, stride, pad } = g;
      need(x, batch * C * H * W, 'x');
      const K = C * KH * KW;
      const cols = new Float32Array(batch * outH * outW * K);
      for (let n = 0; n < batch; n++) {
        for (let oy = 0; oy < outH; oy++) {
          for (let ox = 0; ox < outW; ox++) {
            const row = (n * outH + oy) * outW + ox;
            for (let c = 0; c < C; c++) {
              for (let ky = 0; ky < KH; ky++) {
                for (let kx = 0; kx < KW; kx++) {
                  const iy = oy * stride - pad + ky;
                  const ix = ox * stride - pad + kx;
                  const col = (c * KH + ky) * KW + kx;
                  cols[row * K + col] = iy >= 0 && iy < H && ix >= 0 && ix < W ? x[((n * C + c) * H + iy) * W + ix] : 0;
                }
              }
            }
          }
        }
      }
      return cols;
    },

    async col2im(cols, g: ConvGeometry, out) {
      const { outH, outW } = convOutputSize(g);
      const { batch, channels: C, height: H, width: W, kernelH: KH, kernelW: KW, stride, pad } = g;
      const K = C * KH * KW;
      need(cols, batch * outH * outW * K, 'cols');
      const acc = new Float64Array(batch * C * H * W);
      for (let n = 0; n < batch; n++) {
        for (let oy = 0; oy < outH; oy++) {
          for (let ox = 0; ox < outW; ox++) {
            const row = (n * outH + oy) * outW + ox;
            for (let c = 0; c < C; c++) {
              for (let ky = 0; ky < KH; ky++) {
                for (let kx = 0; kx < KW; kx++) {
                  const iy = oy * stride - pad + ky;
                  const ix = ox * stride - pad + kx;
                  if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                  acc[((n * C + c) * H + iy) * W + ix] += cols[row * K + (c * KH + ky) * KW + kx];
                }
              }
            }
          }
        }
      }
      const dx = outBuffer(out, acc.length);
      dx.set(acc);
      return dx;
    },

    async add(a, b, out) {
      if (b.length !== a.length) throw new RangeError(`add: 'a' holds ${a.length} values but 'b' holds ${b.length}`);
      const y = outBuffer(out, a.length);
      for (let i = 0; i < a.length; i++) y[i] = a[i] + b[i];
      return y;
    },

    async relu(x, out) {
      const y = outBuffer(out, x.length);
      for (let i = 0; i < x.length; i++) y[i] = Math.max(x[i], 0);
      return y;
    },

    async reluBackward(x, dy, out) {
      need(dy, x.length, 'dy');
      const dx = outBuffer(out, x.length);
      for (let i = 0; i < x.length; i++) dx[i] = x[i] > 0 ? dy[i] : 0;
      return dx;
    },

    async addRowVector(x, rows, cols, v) {
      need(x, rows * cols, 'x');
      need(v, cols, 'v');
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) x[r * cols + c] += v[c];
      return x;
    },

    async columnSums(x, rows, cols, out) {
      need(x, rows * cols, 'x');
      const s = outBuffer(out, cols);
      for (let c = 0; c < cols; c++) {
        let acc = 0;
        for (let r = 0; r < rows; r++) acc += x[r * cols + c];
        s[c] = acc;
      }
      return s;
    },

    async spdInverse(n, m) {
      need(m, n * n, 'M');
      // Cholesky M = L Lᵀ (lower triangle of L, row-major), from the lower triangle of M.
      const L = new Float64Array(n * n);
      for (let j = 0; j < n; j++) {
        let d = m[j * n + j];
        for (let p = 0; p < j; p++) d -= L[j * n + p] * L[j * n + p];
        if (!(d > 0) || !Number.isFinite(d)) throw new NotPositiveDefiniteError(n, j + 1);
        const ljj = Math.sqrt(d);
        L[j * n + j] = ljj;
        for (let i = j + 1; i < n; i++) {
          let s = m[i * n + j];
          for (let p = 0; p < j; p++) s -= L[i * n + p] * L[j * n + p];
          L[i * n + j] = s / ljj;
        }
      }
      // Linv = L⁻¹ (lower triangular) by forward substitution, column by column.
      const Linv = new Float64Array(n * n);
      for (let col = 0; col < n; col++) {
        for (let i = col; i < n; i++) {
          let s = i === col ? 1 : 0;
          for (let p = col; p < i; p++) s -= L[i * n + p] * Linv[p * n + col];
          Linv[i * n + col] = s / L[i * n + i];
        }
      }
      // M⁻¹ = L⁻ᵀ L⁻¹.
      const inv = new Float64Array(n * n);
      for (let i = 0; i < n; i++) {
        for (let j = i; j < n; j++) {
          let s = 0;
          for (let p = j; p < n; p++) s += Linv[p * n + i] * Linv[p * n + j];
          inv[i * n + j] = s;
          inv[j * n + i] = s;
        }
      }
      return inv;
    },

    async dispose() {},
  };
}
