// spngd_blas: a small N-API addon over OpenBLAS (cblas + the LAPACK it bundles).
//
// Everything is synchronous and writes into caller-provided typed arrays. Every argument is
// checked before any memory is touched: the data may have come from the network, so a wrong
// length or type is a TypeError/RangeError, never an out-of-bounds read or write.
//
// Conventions: matrices are dense row-major. Symmetric results are written in full.

#include <napi.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>

#include <cblas.h>
#include <dlfcn.h>
#include <strings.h>
#include <cstdlib>

extern "C" {
// LAPACK (Fortran ABI). The trailing size_t is the hidden length of the character argument that
// gfortran-compiled routines expect; C implementations ignore it.
void dpotrf_(const char* uplo, const blasint* n, double* a, const blasint* lda, blasint* info, size_t uplo_len);
void dpotri_(const char* uplo, const blasint* n, double* a, const blasint* lda, blasint* info, size_t uplo_len);
}

namespace {

// Bumped whenever the exported functions change shape, so that the TS loader can reject a stale
// build instead of calling it with the wrong arguments.
constexpr int kAbiVersion = 4;
constexpr uint64_t kMaxDim = 0x7fffffffULL;  // blasint is 32-bit in Debian's OpenBLAS

// ---------------------------------------------------------------------------------------------
// Argument checking

[[noreturn]] void ThrowType(Napi::Env env, const std::string& msg) { throw Napi::TypeError::New(env, msg); }
[[noreturn]] void ThrowRange(Napi::Env env, const std::string& msg) { throw Napi::RangeError::New(env, msg); }

std::string ArgName(const char* fn, const char* name) { return std::string(fn) + ": '" + name + "'"; }

/** A non-negative integer that fits a 32-bit BLAS int, at least `min`. */
uint64_t Dim(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name, uint64_t min = 0) {
  Napi::Env env = info.Env();
  if (i >= info.Length() || !info[i].IsNumber()) ThrowType(env, ArgName(fn, name) + " must be a number");
  double v = info[i].As<Napi::Number>().DoubleValue();
  if (!std::isfinite(v) || v != std::floor(v) || v < static_cast<double>(min) || v > static_cast<double>(kMaxDim)) {
    ThrowRange(env, ArgName(fn, name) + " must be an integer in [" + std::to_string(min) + ", 2^31-1], got " +
                        std::to_string(v));
  }
  return static_cast<uint64_t>(v);
}

double Scalar(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name) {
  if (i >= info.Length() || !info[i].IsNumber()) ThrowType(info.Env(), ArgName(fn, name) + " must be a number");
  return info[i].As<Napi::Number>().DoubleValue();
}

bool Flag(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name) {
  if (i >= info.Length() || !info[i].IsBoolean()) ThrowType(info.Env(), ArgName(fn, name) + " must be a boolean");
  return info[i].As<Napi::Boolean>().Value();
}

template <typename T>
struct View {
  T* data;
  size_t length;
  const char* name;
};

template <typename T>
constexpr napi_typedarray_type TypeOf();
template <>
constexpr napi_typedarray_type TypeOf<float>() { return napi_float32_array; }
template <>
constexpr napi_typedarray_type TypeOf<double>() { return napi_float64_array; }

template <typename T>
View<T> Array(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name) {
  const char* want = TypeOf<T>() == napi_float32_array ? "Float32Array" : "Float64Array";
  if (i >= info.Length() || !info[i].IsTypedArray()) ThrowType(info.Env(), ArgName(fn, name) + " must be a " + want);
  Napi::TypedArray ta = info[i].As<Napi::TypedArray>();
  if (ta.TypedArrayType() != TypeOf<T>()) ThrowType(info.Env(), ArgName(fn, name) + " must be a " + want);
  Napi::TypedArrayOf<T> arr = info[i].As<Napi::TypedArrayOf<T>>();
  return View<T>{arr.Data(), arr.ElementLength(), name};
}

/** Product of dimensions; RangeError on (absurd) 64-bit overflow. */
uint64_t Mul(Napi::Env env, const char* fn, std::initializer_list<uint64_t> xs) {
  uint64_t p = 1;
  for (uint64_t x : xs) {
    if (__builtin_mul_overflow(p, x, &p)) ThrowRange(env, std::string(fn) + ": sizes overflow");
  }
  return p;
}

template <typename T>
void Need(Napi::Env env, const char* fn, const View<T>& v, uint64_t need, const char* what) {
  if (static_cast<uint64_t>(v.length) < need) {
    ThrowRange(env, ArgName(fn, v.name) + " holds " + std::to_string(v.length) + " values but " + what + " = " +
                        std::to_string(need) + " are needed");
  }
}

/** Outputs may not share memory with inputs (BLAS would read values it has already overwritten). */
template <typename T, typename U>
void Disjoint(Napi::Env env, const char* fn, const View<T>& out, uint64_t outN, const View<U>& in, uint64_t inN) {
  auto o0 = reinterpret_cast<uintptr_t>(out.data), o1 = o0 + outN * sizeof(T);
  auto i0 = reinterpret_cast<uintptr_t>(in.data), i1 = i0 + inN * sizeof(U);
  if (outN > 0 && inN > 0 && o0 < i1 && i0 < o1) {
    ThrowRange(env, ArgName(fn, out.name) + " must not overlap '" + in.name + "'");
  }
}

/** Like Disjoint, but `out` may also be exactly `in` (element-wise maps that read each value before writing it). */
template <typename T, typename U>
void DisjointOrSame(Napi::Env env, const char* fn, const View<T>& out, uint64_t outN, const View<U>& in, uint64_t inN) {
  if (static_cast<const void*>(out.data) == static_cast<const void*>(in.data) && sizeof(T) == sizeof(U)) return;
  Disjoint(env, fn, out, outN, in, inN);
}

View<int32_t> Int32Array(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name) {
  if (i >= info.Length() || !info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    ThrowType(info.Env(), ArgName(fn, name) + " must be an Int32Array");
  }
  Napi::Int32Array arr = info[i].As<Napi::Int32Array>();
  return View<int32_t>{arr.Data(), arr.ElementLength(), name};
}

/** A Float32Array argument that may be undefined or null (then data is nullptr). */
View<float> OptionalArray(const Napi::CallbackInfo& info, size_t i, const char* fn, const char* name) {
  if (i < info.Length() && (info[i].IsUndefined() || info[i].IsNull())) return View<float>{nullptr, 0, name};
  return Array<float>(info, i, fn, name);
}

// ---------------------------------------------------------------------------------------------
// Helpers

/** Copies the upper triangle of a row-major n×n matrix onto its lower triangle, in cache blocks. */
template <typename T>
void MirrorUpperToLower(T* a, size_t n) {
  constexpr size_t B = 64;
  for (size_t ib = 0; ib < n; ib += B) {
    const size_t ie = std::min(n, ib + B);
    for (size_t jb = 0; jb <= ib; jb += B) {
      const size_t je = std::min(n, jb + B);
      // block rows i in [ib, ie), columns j in [jb, je) with j < i: a[i][j] = a[j][i]
      for (size_t i = ib; i < ie; ++i) {
        const size_t jEnd = std::min(je, i);
        T* row = a + i * n;
        for (size_t j = jb; j < jEnd; ++j) row[j] = a[j * n + i];
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// sgemm(transA, transB, m, n, k, alpha, a, b, beta, c): C = alpha·op(A)·op(B) + beta·C, row-major.
// op(A) is m×k (A stored k×m when transA), op(B) is k×n (B stored n×k when transB), C is m×n.
// beta = 0 means C is not read (NaNs in it do not propagate).

Napi::Value Sgemm(const Napi::CallbackInfo& info) {
  static const char* fn = "sgemm";
  Napi::Env env = info.Env();
  const bool ta = Flag(info, 0, fn, "transA");
  const bool tb = Flag(info, 1, fn, "transB");
  const uint64_t m = Dim(info, 2, fn, "m"), n = Dim(info, 3, fn, "n"), k = Dim(info, 4, fn, "k");
  const double alpha = Scalar(info, 5, fn, "alpha");
  View<float> a = Array<float>(info, 6, fn, "a");
  View<float> b = Array<float>(info, 7, fn, "b");
  const double beta = Scalar(info, 8, fn, "beta");
  View<float> c = Array<float>(info, 9, fn, "c");
  const uint64_t mk = Mul(env, fn, {m, k}), kn = Mul(env, fn, {k, n}), mn = Mul(env, fn, {m, n});
  Need(env, fn, a, mk, "m·k");
  Need(env, fn, b, kn, "k·n");
  Need(env, fn, c, mn, "m·n");
  Disjoint(env, fn, c, mn, a, mk);
  Disjoint(env, fn, c, mn, b, kn);
  if (mn == 0) return env.Undefined();
  if (k == 0 || alpha == 0.0) {
    if (beta == 0.0) {
      std::memset(c.data, 0, mn * sizeof(float));
    } else if (beta != 1.0) {
      const float fb = static_cast<float>(beta);
      for (uint64_t i = 0; i < mn; ++i) c.data[i] *= fb;
    }
    return env.Undefined();
  }
  const blasint lda = static_cast<blasint>(std::max<uint64_t>(1, ta ? m : k));
  const blasint ldb = static_cast<blasint>(std::max<uint64_t>(1, tb ? k : n));
  const blasint ldc = static_cast<blasint>(std::max<uint64_t>(1, n));
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, static_cast<blasint>(m),
              static_cast<blasint>(n), static_cast<blasint>(k), static_cast<float>(alpha), a.data, lda, b.data, ldb,
              static_cast<float>(beta), c.data, ldc);
  return env.Undefined();
}

// gram(rows, cols, alpha, x, out): out (cols×cols) = alpha·XᵀX for row-major X (rows×cols), by ssyrk
// on the upper triangle, then mirrored so that the full symmetric matrix is written.

Napi::Value Gram(const Napi::CallbackInfo& info) {
  static const char* fn = "gram";
  Napi::Env env = info.Env();
  const uint64_t rows = Dim(info, 0, fn, "rows"), cols = Dim(info, 1, fn, "cols");
  const double alpha = Scalar(info, 2, fn, "alpha");
  View<float> x = Array<float>(info, 3, fn, "x");
  View<float> out = Array<float>(info, 4, fn, "out");
  const uint64_t rc = Mul(env, fn, {rows, cols}), cc = Mul(env, fn, {cols, cols});
  Need(env, fn, x, rc, "rows·cols");
  Need(env, fn, out, cc, "cols·cols");
  Disjoint(env, fn, out, cc, x, rc);
  if (cc == 0) return env.Undefined();
  if (rows == 0 || alpha == 0.0) {
    std::memset(out.data, 0, cc * sizeof(float));
    return env.Undefined();
  }
  const blasint nn = static_cast<blasint>(cols);
  cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, nn, static_cast<blasint>(rows), static_cast<float>(alpha), x.data,
              nn, 0.0f, out.data, nn);
  MirrorUpperToLower(out.data, cols);
  return env.Undefined();
}

// spdInverse(n, m, out): out = inv(M) for a symmetric positive-definite n×n float64 matrix, by
// LAPACK dpotrf + dpotri. Reads M's upper triangle (row-major) only; writes the full inverse into
// `out` (which may be `m` itself, for an in-place inverse). Returns LAPACK's info: 0 on success,
// i > 0 when the leading minor of order i is not positive definite (then `out` is garbage).
// Throws RangeError if M holds NaN or ±Infinity in the triangle that is read.

Napi::Value SpdInverse(const Napi::CallbackInfo& info) {
  static const char* fn = "spdInverse";
  Napi::Env env = info.Env();
  const uint64_t n = Dim(info, 0, fn, "n");
  View<double> m = Array<double>(info, 1, fn, "m");
  View<double> out = Array<double>(info, 2, fn, "out");
  const uint64_t nn = Mul(env, fn, {n, n});
  Need(env, fn, m, nn, "n·n");
  Need(env, fn, out, nn, "n·n");
  if (nn == 0) return Napi::Number::New(env, 0);
  if (out.data != m.data) {
    Disjoint(env, fn, out, nn, m, nn);
    std::memcpy(out.data, m.data, nn * sizeof(double));
  }
  for (uint64_t i = 0; i < n; ++i) {
    const double* row = out.data + i * n;
    for (uint64_t j = i; j < n; ++j) {
      if (!std::isfinite(row[j])) {
        ThrowRange(env, std::string(fn) + ": matrix element (" + std::to_string(i) + ", " + std::to_string(j) +
                            ") is not finite");
      }
    }
  }
  // Column-major 'L' on a row-major buffer is the row-major upper triangle.
  const char uplo = 'L';
  const blasint bn = static_cast<blasint>(n);
  blasint info_ = 0;
  dpotrf_(&uplo, &bn, out.data, &bn, &info_, 1);
  if (info_ < 0) ThrowRange(env, std::string(fn) + ": dpotrf rejected argument " + std::to_string(-info_));
  if (info_ > 0) return Napi::Number::New(env, static_cast<double>(info_));
  dpotri_(&uplo, &bn, out.data, &bn, &info_, 1);
  if (info_ < 0) ThrowRange(env, std::string(fn) + ": dpotri rejected argument " + std::to_string(-info_));
  if (info_ > 0) return Napi::Number::New(env, static_cast<double>(info_));
  MirrorUpperToLower(out.data, n);
  return Napi::Number::New(env, 0);
}

// ---------------------------------------------------------------------------------------------
// im2col / col2im over NCHW input. Patch matrix rows are (n, oy, ox), columns (c, ky, kx).

struct Geometry {
  uint64_t batch, channels, height, width, kh, kw, stride, pad, outH, outW;
  uint64_t inputSize, colsSize, patch;
};

Geometry ReadGeometry(const Napi::CallbackInfo& info, size_t at, const char* fn) {
  Napi::Env env = info.Env();
  Geometry g{};
  g.batch = Dim(info, at + 0, fn, "batch");
  g.channels = Dim(info, at + 1, fn, "channels");
  g.height = Dim(info, at + 2, fn, "height");
  g.width = Dim(info, at + 3, fn, "width");
  g.kh = Dim(info, at + 4, fn, "kernelH", 1);
  g.kw = Dim(info, at + 5, fn, "kernelW", 1);
  g.stride = Dim(info, at + 6, fn, "stride", 1);
  g.pad = Dim(info, at + 7, fn, "pad");
  const uint64_t ph = g.height + 2 * g.pad, pw = g.width + 2 * g.pad;
  if (ph < g.kh || pw < g.kw) {
    ThrowRange(env, std::string(fn) + ": kernel " + std::to_string(g.kh) + "x" + std::to_string(g.kw) +
                        " does not fit the padded input " + std::to_string(ph) + "x" + std::to_string(pw));
  }
  g.outH = (ph - g.kh) / g.stride + 1;
  g.outW = (pw - g.kw) / g.stride + 1;
  g.patch = Mul(env, fn, {g.channels, g.kh, g.kw});
  g.inputSize = Mul(env, fn, {g.batch, g.channels, g.height, g.width});
  g.colsSize = Mul(env, fn, {g.batch, g.outH, g.outW, g.patch});
  return g;
}

Napi::Value Im2col(const Napi::CallbackInfo& info) {
  static const char* fn = "im2col";
  Napi::Env env = info.Env();
  View<float> x = Array<float>(info, 0, fn, "x");
  View<float> out = Array<float>(info, 1, fn, "out");
  const Geometry g = ReadGeometry(info, 2, fn);
  Need(env, fn, x, g.inputSize, "batch·channels·height·width");
  Need(env, fn, out, g.colsSize, "batch·outH·outW·channels·kernelH·kernelW");
  Disjoint(env, fn, out, g.colsSize, x, g.inputSize);
  const int64_t H = static_cast<int64_t>(g.height), W = static_cast<int64_t>(g.width);
  const int64_t kw = static_cast<int64_t>(g.kw);
  const size_t plane = g.height * g.width;
  float* row = out.data;
  for (uint64_t nb = 0; nb < g.batch; ++nb) {
    const float* xn = x.data + nb * g.channels * plane;
    for (uint64_t oy = 0; oy < g.outH; ++oy) {
      const int64_t iy0 = static_cast<int64_t>(oy * g.stride) - static_cast<int64_t>(g.pad);
      for (uint64_t ox = 0; ox < g.outW; ++ox) {
        const int64_t ix0 = static_cast<int64_t>(ox * g.stride) - static_cast<int64_t>(g.pad);
        const bool inside = ix0 >= 0 && ix0 + kw <= W;
        for (uint64_t c = 0; c < g.channels; ++c) {
          const float* xc = xn + c * plane;
          for (uint64_t ky = 0; ky < g.kh; ++ky, row += kw) {
            const int64_t iy = iy0 + static_cast<int64_t>(ky);
            if (iy < 0 || iy >= H) {
              for (int64_t kx = 0; kx < kw; ++kx) row[kx] = 0.0f;
              continue;
            }
            const float* xr = xc + iy * W;
            if (inside) {
              for (int64_t kx = 0; kx < kw; ++kx) row[kx] = xr[ix0 + kx];
            } else {
              for (int64_t kx = 0; kx < kw; ++kx) {
                const int64_t ix = ix0 + kx;
                row[kx] = (ix >= 0 && ix < W) ? xr[ix] : 0.0f;
              }
            }
          }
        }
      }
    }
  }
  return env.Undefined();
}

/**
 * Sums the patch rows `row` of samples [0, g.batch) into the zeroed NCHW `out`; kernel width KW (0:
 * g.kw). The sums run in the same order for every KW, so the specialised widths give the same bits.
 */
template <int KW>
void Col2imRows(const float* __restrict row, float* __restrict out, const Geometry& g) {
  const int64_t H = static_cast<int64_t>(g.height), W = static_cast<int64_t>(g.width);
  const int64_t kw = KW > 0 ? KW : static_cast<int64_t>(g.kw);
  const size_t plane = g.height * g.width;
  for (uint64_t nb = 0; nb < g.batch; ++nb) {
    float* xn = out + nb * g.channels * plane;
    for (uint64_t oy = 0; oy < g.outH; ++oy) {
      const int64_t iy0 = static_cast<int64_t>(oy * g.stride) - static_cast<int64_t>(g.pad);
      for (uint64_t ox = 0; ox < g.outW; ++ox) {
        const int64_t ix0 = static_cast<int64_t>(ox * g.stride) - static_cast<int64_t>(g.pad);
        const bool inside = ix0 >= 0 && ix0 + kw <= W;
        for (uint64_t c = 0; c < g.channels; ++c) {
          float* xc = xn + c * plane;
          for (uint64_t ky = 0; ky < g.kh; ++ky, row += kw) {
            const int64_t iy = iy0 + static_cast<int64_t>(ky);
            if (iy < 0 || iy >= H) continue;
            float* xr = xc + iy * W;
            if (inside) {
              for (int64_t kx = 0; kx < kw; ++kx) xr[ix0 + kx] += row[kx];
            } else {
              for (int64_t kx = 0; kx < kw; ++kx) {
                const int64_t ix = ix0 + kx;
                if (ix >= 0 && ix < W) xr[ix] += row[kx];
              }
            }
          }
        }
      }
    }
  }
}

Napi::Value Col2im(const Napi::CallbackInfo& info) {
  static const char* fn = "col2im";
  Napi::Env env = info.Env();
  View<float> cols = Array<float>(info, 0, fn, "cols");
  View<float> out = Array<float>(info, 1, fn, "out");
  const Geometry g = ReadGeometry(info, 2, fn);
  Need(env, fn, cols, g.colsSize, "batch·outH·outW·channels·kernelH·kernelW");
  Need(env, fn, out, g.inputSize, "batch·channels·height·width");
  Disjoint(env, fn, out, g.inputSize, cols, g.colsSize);
  std::memset(out.data, 0, g.inputSize * sizeof(float));
  // The common 3-wide kernel with a compile-time width: three straight adds per kernel row.
  if (g.kw == 3) {
    Col2imRows<3>(cols.data, out.data, g);
  } else {
    Col2imRows<0>(cols.data, out.data, g);
  }
  return env.Undefined();
}

// ---------------------------------------------------------------------------------------------
// Element-wise layer kernels (ReLU, max pooling, batch norm). Single-threaded plain loops that the
// compiler vectorises; they compute exactly what src/compute/elementwise.ts computes: the same
// float64 sums in the same order, the same roundings (the build disables FMA contraction), so the
// blas and the JS paths give identical results.

// add(a, b, out): out = a + b over a's values, float32 sums (what JavaScript's float64 sum of two
// float32 values rounds to). `out` may be `a` or `b`.
Napi::Value Add(const Napi::CallbackInfo& info) {
  static const char* fn = "add";
  Napi::Env env = info.Env();
  View<float> a = Array<float>(info, 0, fn, "a");
  View<float> b = Array<float>(info, 1, fn, "b");
  View<float> out = Array<float>(info, 2, fn, "out");
  const uint64_t n = a.length;
  Need(env, fn, b, n, "a.length");
  Need(env, fn, out, n, "a.length");
  DisjointOrSame(env, fn, out, n, a, n);
  DisjointOrSame(env, fn, out, n, b, n);
  const float* as = a.data;
  const float* bs = b.data;
  float* os = out.data;
  for (uint64_t i = 0; i < n; ++i) os[i] = as[i] + bs[i];
  return env.Undefined();
}

// relu(x, out): out = x > 0 ? x : 0 over x's values (−0 and NaN give +0). `out` may be `x`.
Napi::Value Relu(const Napi::CallbackInfo& info) {
  static const char* fn = "relu";
  Napi::Env env = info.Env();
  View<float> x = Array<float>(info, 0, fn, "x");
  View<float> out = Array<float>(info, 1, fn, "out");
  const uint64_t n = x.length;
  Need(env, fn, out, n, "x.length");
  DisjointOrSame(env, fn, out, n, x, n);
  const float* __restrict xs = x.data;
  float* __restrict ys = out.data;
  for (uint64_t i = 0; i < n; ++i) {
    const float v = xs[i];
    ys[i] = v > 0.0f ? v : 0.0f;
  }
  return env.Undefined();
}

// reluBackward(x, dy, out): out = x > 0 ? dy : 0 over x's values. `out` may be `dy`.
Napi::Value ReluBackward(const Napi::CallbackInfo& info) {
  static const char* fn = "reluBackward";
  Napi::Env env = info.Env();
  View<float> x = Array<float>(info, 0, fn, "x");
  View<float> dy = Array<float>(info, 1, fn, "dy");
  View<float> out = Array<float>(info, 2, fn, "out");
  const uint64_t n = x.length;
  Need(env, fn, dy, n, "x.length");
  Need(env, fn, out, n, "x.length");
  Disjoint(env, fn, out, n, x, n);
  DisjointOrSame(env, fn, out, n, dy, n);
  const float* __restrict xs = x.data;
  const float* ds = dy.data;
  float* os = out.data;
  // dy is loaded unconditionally so that the select needs no branch and vectorises.
  for (uint64_t i = 0; i < n; ++i) {
    const float d = ds[i];
    os[i] = xs[i] > 0.0f ? d : 0.0f;
  }
  return env.Undefined();
}

/**
 * One output row of 2×2 windows: `top` and `bottom` are the window rows' input rows, `i0` the flat
 * index of top[0]. The stride is a template argument when it is 2 (the common case: contiguous
 * loads and shuffles instead of element-by-element gathers), else 0 and `stride` is used. Float
 * compares `v > best` (false for NaN; −0 equals +0) with selects that the compiler vectorises (the
 * comparisons are coin flips on activations, so branches would mispredict); the value is tracked
 * with the index, so there is no gather at the end.
 */
template <int32_t kStride>
void Pool2x2Row(const float* __restrict top, const float* __restrict bottom, float* __restrict y, int32_t* __restrict argmax,
                uint64_t outW, int32_t i0, int32_t W, int32_t stride) {
  const int32_t S = kStride > 0 ? kStride : stride;
  const float ninf = -std::numeric_limits<float>::infinity();
  for (uint64_t ox = 0; ox < outW; ++ox) {
    const int32_t j = static_cast<int32_t>(ox) * S;
    const int32_t a = i0 + j;
    const float v0 = top[j], v1 = top[j + 1], v2 = bottom[j], v3 = bottom[j + 1];
    float best = v0 == v0 ? v0 : ninf;
    float val = v0;
    int32_t bi = a;
    bool g = v1 > best;
    best = g ? v1 : best;
    val = g ? v1 : val;
    bi = g ? a + 1 : bi;
    g = v2 > best;
    best = g ? v2 : best;
    val = g ? v2 : val;
    bi = g ? a + W : bi;
    g = v3 > best;
    val = g ? v3 : val;
    bi = g ? a + W + 1 : bi;
    y[ox] = val;
    argmax[ox] = bi;
  }
}

// maxPool(x, out, argmax, batch, channels, height, width, kernelH, kernelW, stride): NCHW, no
// padding. out = each window's maximum, argmax = flat index into x of its first maximum, compared
// as v > best from best = x[first] (−Infinity when that is NaN): NaN never wins, −0 equals +0.
Napi::Value MaxPool(const Napi::CallbackInfo& info) {
  static const char* fn = "maxPool";
  Napi::Env env = info.Env();
  View<float> x = Array<float>(info, 0, fn, "x");
  View<float> out = Array<float>(info, 1, fn, "out");
  View<int32_t> argmax = Int32Array(info, 2, fn, "argmax");
  const uint64_t batch = Dim(info, 3, fn, "batch"), channels = Dim(info, 4, fn, "channels");
  const uint64_t H = Dim(info, 5, fn, "height"), W = Dim(info, 6, fn, "width");
  const uint64_t kh = Dim(info, 7, fn, "kernelH", 1), kw = Dim(info, 8, fn, "kernelW", 1);
  const uint64_t S = Dim(info, 9, fn, "stride", 1);
  if (H < kh || W < kw) {
    ThrowRange(env, std::string(fn) + ": window " + std::to_string(kh) + "x" + std::to_string(kw) + " does not fit a " +
                        std::to_string(H) + "x" + std::to_string(W) + " input");
  }
  const uint64_t outH = (H - kh) / S + 1, outW = (W - kw) / S + 1;
  const uint64_t planes = Mul(env, fn, {batch, channels});
  const uint64_t inSize = Mul(env, fn, {planes, H, W}), outSize = Mul(env, fn, {planes, outH, outW});
  // argmax holds flat input indices as int32.
  if (inSize > 0x7fffffffULL) ThrowRange(env, std::string(fn) + ": the input must hold fewer than 2^31 values");
  Need(env, fn, x, inSize, "batch·channels·height·width");
  Need(env, fn, out, outSize, "batch·channels·outH·outW");
  Need(env, fn, argmax, outSize, "batch·channels·outH·outW");
  Disjoint(env, fn, out, outSize, x, inSize);
  Disjoint(env, fn, argmax, outSize, x, inSize);
  Disjoint(env, fn, argmax, outSize, out, outSize);
  const float* xs = x.data;
  float* ys = out.data;
  int32_t* as = argmax.data;
  const float ninf = -std::numeric_limits<float>::infinity();
  uint64_t o = 0;
  for (uint64_t pl = 0; pl < planes; ++pl) {
    const int32_t inBase = static_cast<int32_t>(pl * H * W);
    for (uint64_t oy = 0; oy < outH; ++oy) {
      const int32_t r0 = inBase + static_cast<int32_t>(oy * S * W);
      if (kh == 2 && kw == 2) {
        if (S == 2) {
          Pool2x2Row<2>(xs + r0, xs + r0 + W, ys + o, as + o, outW, r0, static_cast<int32_t>(W), 2);
        } else {
          Pool2x2Row<0>(xs + r0, xs + r0 + W, ys + o, as + o, outW, r0, static_cast<int32_t>(W), static_cast<int32_t>(S));
        }
        o += outW;
      } else {
        for (uint64_t ox = 0; ox < outW; ++ox, ++o) {
          const int32_t i0 = r0 + static_cast<int32_t>(ox * S);
          float best = xs[i0] == xs[i0] ? xs[i0] : ninf;
          int32_t bi = i0;
          for (uint64_t ky = 0; ky < kh; ++ky) {
            const int32_t row = i0 + static_cast<int32_t>(ky * W);
            for (uint64_t kx = 0; kx < kw; ++kx) {
              const int32_t i = row + static_cast<int32_t>(kx);
              const float v = xs[i];
              const bool g = v > best;
              best = g ? v : best;
              bi = g ? i : bi;
            }
          }
          ys[o] = xs[bi];
          as[o] = bi;
        }
      }
    }
  }
  return env.Undefined();
}

// maxPoolBackward(dy, argmax, dx): zeroes dx (dx.length values), then dx[argmax[o]] += dy[o] for o
// over dy's values in order. Every index is checked before dx is written.
Napi::Value MaxPoolBackward(const Napi::CallbackInfo& info) {
  static const char* fn = "maxPoolBackward";
  Napi::Env env = info.Env();
  View<float> dy = Array<float>(info, 0, fn, "dy");
  View<int32_t> argmax = Int32Array(info, 1, fn, "argmax");
  View<float> dx = Array<float>(info, 2, fn, "dx");
  const uint64_t count = dy.length, size = dx.length;
  Need(env, fn, argmax, count, "dy.length");
  Disjoint(env, fn, dx, size, dy, count);
  Disjoint(env, fn, dx, size, argmax, count);
  const int32_t* as = argmax.data;
  for (uint64_t o = 0; o < count; ++o) {
    if (as[o] < 0 || static_cast<uint64_t>(as[o]) >= size) {
      ThrowRange(env, std::string(fn) + ": argmax[" + std::to_string(o) + "] = " + std::to_string(as[o]) + " is outside [0, " +
                          std::to_string(size) + ")");
    }
  }
  float* d = dx.data;
  const float* g = dy.data;
  if (size > 0) std::memset(d, 0, size * sizeof(float));
  for (uint64_t o = 0; o < count; ++o) d[as[o]] += g[o];
  return env.Undefined();
}

/** n, channels, t of a batch-norm call at info[at..at+2], and n·channels·t. */
struct BnShape {
  uint64_t n, C, t, size;
};

BnShape ReadBnShape(const Napi::CallbackInfo& info, size_t at, const char* fn) {
  BnShape s{};
  s.n = Dim(info, at, fn, "n");
  s.C = Dim(info, at + 1, fn, "channels");
  s.t = Dim(info, at + 2, fn, "t");
  s.size = Mul(info.Env(), fn, {s.n, s.C, s.t});
  return s;
}

/*
 * Float64 sums that must keep their order (each a sequential chain, as in the JS versions) are
 * computed G at a time as independent chains: the additions' latency overlaps instead of adding up.
 */

/** mean[c..c+G) of channels c..c+G−1 (values at b·stride + (c+g)·t + i), in (b, i) order. */
template <int G>
void ChannelMeans(const float* xs, uint64_t n, uint64_t t, uint64_t stride, uint64_t c, double m, double* mean) {
  double s[G] = {};
  for (uint64_t b = 0; b < n; ++b) {
    const float* p = xs + b * stride + c * t;
    for (uint64_t i = 0; i < t; ++i) {
      for (int g = 0; g < G; ++g) s[g] += p[i + g * t];
    }
  }
  for (int g = 0; g < G; ++g) mean[c + g] = s[g] / m;
}

/** sqDev[c..c+G) = Σ (x − mean)², in (b, i) order. */
template <int G>
void ChannelSqDevs(const float* xs, uint64_t n, uint64_t t, uint64_t stride, uint64_t c, const double* mean, double* sq) {
  double s[G] = {};
  double mu[G];
  for (int g = 0; g < G; ++g) mu[g] = mean[c + g];
  for (uint64_t b = 0; b < n; ++b) {
    const float* p = xs + b * stride + c * t;
    for (uint64_t i = 0; i < t; ++i) {
      for (int g = 0; g < G; ++g) {
        const double d = p[i + g * t] - mu[g];
        s[g] += d * d;
      }
    }
  }
  for (int g = 0; g < G; ++g) sq[c + g] = s[g];
}

// channelMoments(x, mean, sqDev, n, channels, t): per channel of NCHW x (n × channels × t),
// mean[c] = Σ x / (n·t) and sqDev[c] = Σ (x − mean[c])², float64 sums in (sample, position) order.
Napi::Value ChannelMoments(const Napi::CallbackInfo& info) {
  static const char* fn = "channelMoments";
  Napi::Env env = info.Env();
  View<float> x = Array<float>(info, 0, fn, "x");
  View<double> mean = Array<double>(info, 1, fn, "mean");
  View<double> sq = Array<double>(info, 2, fn, "sqDev");
  const BnShape s = ReadBnShape(info, 3, fn);
  Need(env, fn, x, s.size, "n·channels·t");
  Need(env, fn, mean, s.C, "channels");
  Need(env, fn, sq, s.C, "channels");
  Disjoint(env, fn, sq, s.C, mean, s.C);
  const uint64_t C = s.C, t = s.t, n = s.n, stride = C * t;
  const double m = static_cast<double>(n * t);
  uint64_t c = 0;
  for (; c + 8 <= C; c += 8) ChannelMeans<8>(x.data, n, t, stride, c, m, mean.data);
  for (; c < C; ++c) ChannelMeans<1>(x.data, n, t, stride, c, m, mean.data);
  for (c = 0; c + 8 <= C; c += 8) ChannelSqDevs<8>(x.data, n, t, stride, c, mean.data, sq.data);
  for (; c < C; ++c) ChannelSqDevs<1>(x.data, n, t, stride, c, mean.data, sq.data);
  return env.Undefined();
}

// batchNormForward(x, y, xhat, mean, invStd, gamma, beta, n, channels, t): xhat = (x − mean)·invStd
// in float64 (stored as float32 unless xhat is null/undefined), y = gamma·xhat + beta from the
// unrounded xhat.
Napi::Value BatchNormForward(const Napi::CallbackInfo& info) {
  static const char* fn = "batchNormForward";
  Napi::Env env = info.Env();
  View<float> x = Array<float>(info, 0, fn, "x");
  View<float> y = Array<float>(info, 1, fn, "y");
  View<float> xhat = OptionalArray(info, 2, fn, "xhat");
  View<double> mean = Array<double>(info, 3, fn, "mean");
  View<double> invStd = Array<double>(info, 4, fn, "invStd");
  View<float> gamma = Array<float>(info, 5, fn, "gamma");
  View<float> beta = Array<float>(info, 6, fn, "beta");
  const BnShape s = ReadBnShape(info, 7, fn);
  Need(env, fn, x, s.size, "n·channels·t");
  Need(env, fn, y, s.size, "n·channels·t");
  for (const View<double>* v : {&mean, &invStd}) Need(env, fn, *v, s.C, "channels");
  for (const View<float>* v : {&gamma, &beta}) Need(env, fn, *v, s.C, "channels");
  Disjoint(env, fn, y, s.size, x, s.size);
  if (xhat.data != nullptr) {
    Need(env, fn, xhat, s.size, "n·channels·t");
    Disjoint(env, fn, xhat, s.size, x, s.size);
    Disjoint(env, fn, xhat, s.size, y, s.size);
  }
  const uint64_t t = s.t;
  const float* __restrict xs = x.data;
  float* __restrict ys = y.data;
  float* __restrict hs = xhat.data;
  uint64_t base = 0;
  for (uint64_t b = 0; b < s.n; ++b) {
    for (uint64_t c = 0; c < s.C; ++c, base += t) {
      const double mu = mean.data[c], is = invStd.data[c], g = gamma.data[c], bt = beta.data[c];
      if (hs != nullptr) {
        for (uint64_t i = base; i < base + t; ++i) {
          const double h = (static_cast<double>(xs[i]) - mu) * is;
          hs[i] = static_cast<float>(h);
          ys[i] = static_cast<float>(g * h + bt);
        }
      } else {
        for (uint64_t i = base; i < base + t; ++i) ys[i] = static_cast<float>(g * ((static_cast<double>(xs[i]) - mu) * is) + bt);
      }
    }
  }
  return env.Undefined();
}

/** Σ_p dy and Σ_p dy·xhat of channels c..c+G−1 of one sample (d, h at the sample's start), in p order. */
template <int G>
void SampleSums(const float* d, const float* h, uint64_t t, uint64_t c, double* sd, double* sdx) {
  double a[G] = {}, x[G] = {};
  d += c * t;
  h += c * t;
  for (uint64_t p = 0; p < t; ++p) {
    for (int g = 0; g < G; ++g) {
      const double v = d[p + g * t];
      a[g] += v;
      x[g] += v * static_cast<double>(h[p + g * t]);
    }
  }
  for (int g = 0; g < G; ++g) {
    sd[c + g] = a[g];
    sdx[c + g] = x[g];
  }
}

// batchNormSums(dy, xhat, sumDy, sumDyXhat, n, channels, t): per (sample b, channel c),
// sumDy[b·C + c] = Σ_p dy and sumDyXhat[b·C + c] = Σ_p dy·xhat, float64 in p order (dy·xhat of two
// floats is exact in float64).
Napi::Value BatchNormSums(const Napi::CallbackInfo& info) {
  static const char* fn = "batchNormSums";
  Napi::Env env = info.Env();
  View<float> dy = Array<float>(info, 0, fn, "dy");
  View<float> xhat = Array<float>(info, 1, fn, "xhat");
  View<double> sd = Array<double>(info, 2, fn, "sumDy");
  View<double> sdx = Array<double>(info, 3, fn, "sumDyXhat");
  const BnShape s = ReadBnShape(info, 4, fn);
  const uint64_t nc = Mul(env, fn, {s.n, s.C});
  Need(env, fn, dy, s.size, "n·channels·t");
  Need(env, fn, xhat, s.size, "n·channels·t");
  Need(env, fn, sd, nc, "n·channels");
  Need(env, fn, sdx, nc, "n·channels");
  Disjoint(env, fn, sd, nc, sdx, nc);
  const uint64_t C = s.C, t = s.t;
  for (uint64_t b = 0; b < s.n; ++b) {
    const float* d = dy.data + b * C * t;
    const float* h = xhat.data + b * C * t;
    double* od = sd.data + b * C;
    double* ox = sdx.data + b * C;
    uint64_t c = 0;
    for (; c + 4 <= C; c += 4) SampleSums<4>(d, h, t, c, od, ox);
    for (; c < C; ++c) SampleSums<1>(d, h, t, c, od, ox);
  }
  return env.Undefined();
}

// batchNormInputGrad(dy, xhat, dx, scale, meanDy, meanDyXhat, n, channels, t):
// dx = scale·(dy − meanDy − xhat·meanDyXhat) in float64, stored as float32.
Napi::Value BatchNormInputGrad(const Napi::CallbackInfo& info) {
  static const char* fn = "batchNormInputGrad";
  Napi::Env env = info.Env();
  View<float> dy = Array<float>(info, 0, fn, "dy");
  View<float> xhat = Array<float>(info, 1, fn, "xhat");
  View<float> dx = Array<float>(info, 2, fn, "dx");
  View<double> scale = Array<double>(info, 3, fn, "scale");
  View<double> meanDy = Array<double>(info, 4, fn, "meanDy");
  View<double> meanDyXhat = Array<double>(info, 5, fn, "meanDyXhat");
  const BnShape s = ReadBnShape(info, 6, fn);
  Need(env, fn, dy, s.size, "n·channels·t");
  Need(env, fn, xhat, s.size, "n·channels·t");
  Need(env, fn, dx, s.size, "n·channels·t");
  for (const View<double>* v : {&scale, &meanDy, &meanDyXhat}) Need(env, fn, *v, s.C, "channels");
  Disjoint(env, fn, dx, s.size, dy, s.size);
  Disjoint(env, fn, dx, s.size, xhat, s.size);
  const uint64_t t = s.t;
  const float* __restrict ds = dy.data;
  const float* __restrict hs = xhat.data;
  float* __restrict os = dx.data;
  uint64_t base = 0;
  for (uint64_t b = 0; b < s.n; ++b) {
    for (uint64_t c = 0; c < s.C; ++c, base += t) {
      const double g = scale.data[c], md = meanDy.data[c], mdx = meanDyXhat.data[c];
      for (uint64_t i = base; i < base + t; ++i) {
        os[i] = static_cast<float>(g * ((static_cast<double>(ds[i]) - md) - static_cast<double>(hs[i]) * mdx));
      }
    }
  }
  return env.Undefined();
}

/** Rows [patch; 1] of samples [first, first + count) from `row` on; kernel width KW (0: g.kw). */
template <int KW>
void Im2colOnesRows(const float* __restrict x, float* __restrict row, const Geometry& g, uint64_t first, uint64_t count) {
  const int64_t H = static_cast<int64_t>(g.height), W = static_cast<int64_t>(g.width);
  const int64_t kw = KW > 0 ? KW : static_cast<int64_t>(g.kw);
  const uint64_t ld = g.patch + 1;
  const size_t plane = g.height * g.width;
  for (uint64_t nb = first; nb < first + count; ++nb) {
    const float* xn = x + nb * g.channels * plane;
    for (uint64_t oy = 0; oy < g.outH; ++oy) {
      const int64_t iy0 = static_cast<int64_t>(oy * g.stride) - static_cast<int64_t>(g.pad);
      for (uint64_t ox = 0; ox < g.outW; ++ox, row += ld) {
        const int64_t ix0 = static_cast<int64_t>(ox * g.stride) - static_cast<int64_t>(g.pad);
        const bool inside = ix0 >= 0 && ix0 + kw <= W;
        float* o = row;
        for (uint64_t c = 0; c < g.channels; ++c) {
          const float* xc = xn + c * plane;
          for (uint64_t ky = 0; ky < g.kh; ++ky, o += kw) {
            const int64_t iy = iy0 + static_cast<int64_t>(ky);
            if (iy < 0 || iy >= H) {
              for (int64_t kx = 0; kx < kw; ++kx) o[kx] = 0.0f;
              continue;
            }
            const float* xr = xc + iy * W + ix0;
            if (inside) {
              for (int64_t kx = 0; kx < kw; ++kx) o[kx] = xr[kx];
            } else {
              for (int64_t kx = 0; kx < kw; ++kx) {
                const int64_t ix = ix0 + kx;
                o[kx] = (ix >= 0 && ix < W) ? xr[kx] : 0.0f;
              }
            }
          }
        }
        row[g.patch] = 1.0f;
      }
    }
  }
}

// im2colOnes(x, out, at, first, count, batch, channels, height, width, kernelH, kernelW, stride,
// pad): K-FAC's rows [patch; 1] of samples [first, first + count) of NCHW x, written into `out`
// from index `at` with row stride channels·kernelH·kernelW + 1. The same values as Im2col.
Napi::Value Im2colOnes(const Napi::CallbackInfo& info) {
  static const char* fn = "im2colOnes";
  Napi::Env env = info.Env();
  View<float> x = Array<float>(info, 0, fn, "x");
  View<float> out = Array<float>(info, 1, fn, "out");
  const uint64_t at = Dim(info, 2, fn, "at");
  const uint64_t first = Dim(info, 3, fn, "first"), count = Dim(info, 4, fn, "count");
  const Geometry g = ReadGeometry(info, 5, fn);
  if (first + count > g.batch) ThrowRange(env, std::string(fn) + ": samples outside the batch");
  const uint64_t ld = g.patch + 1;
  const uint64_t rows = Mul(env, fn, {count, g.outH, g.outW});
  const uint64_t need = at + Mul(env, fn, {rows, ld});
  Need(env, fn, x, g.inputSize, "batch·channels·height·width");
  Need(env, fn, out, need, "at + count·outH·outW·(channels·kernelH·kernelW + 1)");
  Disjoint(env, fn, out, need, x, g.inputSize);
  float* row = out.data + at;
  // The common 3-wide kernel with a compile-time width: its rows are three straight copies.
  if (g.kw == 3) {
    Im2colOnesRows<3>(x.data, row, g, first, count);
  } else {
    Im2colOnesRows<0>(x.data, row, g, first, count);
  }
  return env.Undefined();
}

/** Channels c..c+G−1 of one sample (x at the sample's start) into `out` (channel-major), with their sums. */
template <int G>
void ChannelMajorGroup(const float* x, uint64_t t, uint64_t rows, uint64_t c, float* out, double* sums) {
  double s[G];
  for (int g = 0; g < G; ++g) s[g] = sums[c + g];
  const float* src = x + c * t;
  float* dst = out + c * rows;
  for (uint64_t p = 0; p < t; ++p) {
    for (int g = 0; g < G; ++g) {
      const float v = src[g * t + p];
      dst[g * rows + p] = v;
      s[g] += v;
    }
  }
  for (int g = 0; g < G; ++g) sums[c + g] = s[g];
}

// channelMajor(x, out, sums, n, channels, t): x (n × C × t, NCHW) → out (C × n·t) and
// sums[c] = Σ x[·, c, ·] in float64 in (sample, position) order.
Napi::Value ChannelMajor(const Napi::CallbackInfo& info) {
  static const char* fn = "channelMajor";
  Napi::Env env = info.Env();
  View<float> x = Array<float>(info, 0, fn, "x");
  View<float> out = Array<float>(info, 1, fn, "out");
  View<double> sums = Array<double>(info, 2, fn, "sums");
  const BnShape s = ReadBnShape(info, 3, fn);
  Need(env, fn, x, s.size, "n·channels·t");
  Need(env, fn, out, s.size, "n·channels·t");
  Need(env, fn, sums, s.C, "channels");
  Disjoint(env, fn, out, s.size, x, s.size);
  const uint64_t C = s.C, t = s.t, rows = s.n * t;
  std::fill(sums.data, sums.data + C, 0.0);
  for (uint64_t b = 0; b < s.n; ++b) {
    const float* xb = x.data + b * C * t;
    float* ob = out.data + b * t;
    uint64_t c = 0;
    for (; c + 4 <= C; c += 4) ChannelMajorGroup<4>(xb, t, rows, c, ob, sums.data);
    for (; c < C; ++c) ChannelMajorGroup<1>(xb, t, rows, c, ob, sums.data);
  }
  return env.Undefined();
}

// rowsScaled(x, out, scale, n, channels, t): out (n·t × C, rows (b, p)) = float32(scale·x) for
// NCHW x (n × C × t), the product in float64 as in JavaScript.
Napi::Value RowsScaled(const Napi::CallbackInfo& info) {
  static const char* fn = "rowsScaled";
  Napi::Env env = info.Env();
  View<float> x = Array<float>(info, 0, fn, "x");
  View<float> out = Array<float>(info, 1, fn, "out");
  const double scale = Scalar(info, 2, fn, "scale");
  const BnShape s = ReadBnShape(info, 3, fn);
  Need(env, fn, x, s.size, "n·channels·t");
  Need(env, fn, out, s.size, "n·channels·t");
  Disjoint(env, fn, out, s.size, x, s.size);
  const uint64_t C = s.C, t = s.t;
  for (uint64_t b = 0; b < s.n; ++b) {
    const float* __restrict xb = x.data + b * C * t;
    float* __restrict ob = out.data + b * C * t;
    for (uint64_t c = 0; c < C; ++c) {
      const float* src = xb + c * t;
      for (uint64_t p = 0; p < t; ++p) ob[p * C + c] = static_cast<float>(scale * static_cast<double>(src[p]));
    }
  }
  return env.Undefined();
}

// ---------------------------------------------------------------------------------------------
// OpenBLAS configuration

// OpenBLAS built with DYNAMIC_ARCH picks its kernels from the CPU model at load time and falls back
// to the generic "Prescott" (SSE3) kernels for models it does not know, e.g. Debian 12's 0.3.21 on
// Emerald Rapids: ~30 instead of ~300 GFLOP/s sgemm on 2 cores. When that happened, the user did not
// choose a core with OPENBLAS_CORETYPE, and the CPU (and OS) support AVX2/AVX-512, re-run OpenBLAS's
// own core selection with OPENBLAS_CORETYPE set. Done once per process, at the first load of this
// addon, before any BLAS call of ours; the symbols are looked up so that a library without them
// still loads (then nothing changes).
std::string g_coreBefore;
bool g_coreReselected = false;

void MaybeReselectCore(bool allowed) {
  static bool done = false;
  if (done) return;
  done = true;
  const char* core = openblas_get_corename();
  g_coreBefore = core != nullptr ? core : "";
  if (!allowed || std::getenv("OPENBLAS_CORETYPE") != nullptr || strcasecmp(g_coreBefore.c_str(), "Prescott") != 0) return;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  const char* want = nullptr;
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512cd")) {
    want = "SkylakeX";
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    want = "Haswell";
  } else if (__builtin_cpu_supports("avx")) {
    want = "Sandybridge";
  }
  if (want == nullptr) return;
  auto quit = reinterpret_cast<void (*)()>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit"));
  auto init = reinterpret_cast<void (*)()>(dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init"));
  if (quit == nullptr || init == nullptr) return;
  setenv("OPENBLAS_CORETYPE", want, 0);
  quit();
  init();
  unsetenv("OPENBLAS_CORETYPE");
  const char* after = openblas_get_corename();
  g_coreReselected = after != nullptr && g_coreBefore != after;
#endif
}

Napi::Value CoreSelection(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("detected", Napi::String::New(info.Env(), g_coreBefore));
  const char* now = openblas_get_corename();
  o.Set("used", Napi::String::New(info.Env(), now != nullptr ? now : ""));
  o.Set("reselected", Napi::Boolean::New(info.Env(), g_coreReselected));
  return o;
}

Napi::Value Config(const Napi::CallbackInfo& info) {
  const char* s = openblas_get_config();
  return Napi::String::New(info.Env(), s != nullptr ? s : "");
}

Napi::Value Corename(const Napi::CallbackInfo& info) {
  const char* s = openblas_get_corename();
  return Napi::String::New(info.Env(), s != nullptr ? s : "");
}

Napi::Value GetNumThreads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), openblas_get_num_threads());
}

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  const uint64_t n = Dim(info, 0, "setNumThreads", "threads", 1);
  if (n > 1024) ThrowRange(info.Env(), "setNumThreads: 'threads' must be at most 1024");
  openblas_set_num_threads(static_cast<int>(n));
  return Napi::Number::New(info.Env(), openblas_get_num_threads());
}

Napi::Value Parallel(const Napi::CallbackInfo& info) {
  // 0 sequential, 1 pthreads, 2 OpenMP
  return Napi::Number::New(info.Env(), openblas_get_parallel());
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // SPNGD_BLAS_KEEP_CORE=1 keeps whatever OpenBLAS chose.
  MaybeReselectCore(std::getenv("SPNGD_BLAS_KEEP_CORE") == nullptr);
  exports.Set("abiVersion", Napi::Number::New(env, kAbiVersion));
  exports.Set("sgemm", Napi::Function::New(env, Sgemm, "sgemm"));
  exports.Set("gram", Napi::Function::New(env, Gram, "gram"));
  exports.Set("spdInverse", Napi::Function::New(env, SpdInverse, "spdInverse"));
  exports.Set("im2col", Napi::Function::New(env, Im2col, "im2col"));
  exports.Set("col2im", Napi::Function::New(env, Col2im, "col2im"));
  exports.Set("add", Napi::Function::New(env, Add, "add"));
  exports.Set("relu", Napi::Function::New(env, Relu, "relu"));
  exports.Set("reluBackward", Napi::Function::New(env, ReluBackward, "reluBackward"));
  exports.Set("maxPool", Napi::Function::New(env, MaxPool, "maxPool"));
  exports.Set("maxPoolBackward", Napi::Function::New(env, MaxPoolBackward, "maxPoolBackward"));
  exports.Set("channelMoments", Napi::Function::New(env, ChannelMoments, "channelMoments"));
  exports.Set("batchNormForward", Napi::Function::New(env, BatchNormForward, "batchNormForward"));
  exports.Set("batchNormSums", Napi::Function::New(env, BatchNormSums, "batchNormSums"));
  exports.Set("batchNormInputGrad", Napi::Function::New(env, BatchNormInputGrad, "batchNormInputGrad"));
  exports.Set("im2colOnes", Napi::Function::New(env, Im2colOnes, "im2colOnes"));
  exports.Set("channelMajor", Napi::Function::New(env, ChannelMajor, "channelMajor"));
  exports.Set("rowsScaled", Napi::Function::New(env, RowsScaled, "rowsScaled"));
  exports.Set("config", Napi::Function::New(env, Config, "config"));
  exports.Set("corename", Napi::Function::New(env, Corename, "corename"));
  exports.Set("getNumThreads", Napi::Function::New(env, GetNumThreads, "getNumThreads"));
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads, "setNumThreads"));
  exports.Set("parallel", Napi::Function::New(env, Parallel, "parallel"));
  exports.Set("coreSelection", Napi::Function::New(env, CoreSelection, "coreSelection"));
  return exports;
}

}  // namespace

NODE_API_MODULE(spngd_blas, Init)
