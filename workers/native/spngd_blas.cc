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
constexpr int kAbiVersion = 1;
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
  const int64_t H = static_cast<int64_t>(g.height), W = static_cast<int64_t>(g.width);
  const int64_t kw = static_cast<int64_t>(g.kw);
  const size_t plane = g.height * g.width;
  const float* row = cols.data;
  for (uint64_t nb = 0; nb < g.batch; ++nb) {
    float* xn = out.data + nb * g.channels * plane;
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
