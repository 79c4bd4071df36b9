// The kernels for AVX-512 (F, BW, DQ, VL): 16 float lanes. bfloat16 matmuls use the AVX512-BF16
// dot products of rnn_avx512bf16.cc where the CPU has them, float32 FMAs on bf16 values
// otherwise. Compiled for these instructions whatever the build machine's default; the FFI
// handlers call it only after checking the CPU (rnn_ffi.cc).
#include "rnn_common.h"

#include <sched.h>  // sched_yield, for threads waiting on a phase

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,fma,avx2")
#include <immintrin.h>

namespace jaxrnn {
namespace avx512bf16 {
typedef unsigned short bf16_t;
void gemm(const bf16_t* A, int64_t lda, int rows, const bf16_t* P, int K2, int ng, float* C,
          int64_t ldc, int accumulate);
int supported();
}  // namespace avx512bf16
namespace amx {
typedef unsigned short bf16_t;
void gemm(const bf16_t* A, int64_t lda, int rows, const bf16_t* P, int K2, int ng, float* C,
          int64_t ldc, int accumulate);
void gemm2(const bf16_t* Ax, int64_t ldx, const bf16_t* Px, int K2x, const bf16_t* Ah,
           int64_t ldh, const bf16_t* Ph, int K2h, int rows, int ng, float* C, int64_t ldc);
void end_thread();
}  // namespace amx

namespace avx512 {

typedef __m512 V;
static constexpr int L = 16;
static constexpr int kMaxAcc = 24;  // of 32 registers: the rest hold weights and a broadcast

static inline __mmask16 lanes(int n) { return (__mmask16)((1u << n) - 1u); }
static inline V vzero() { return _mm512_setzero_ps(); }
static inline V vset1(float x) { return _mm512_set1_ps(x); }
static inline V vload(const float* p) { return _mm512_loadu_ps(p); }
static inline void vstore(float* p, V v) { _mm512_storeu_ps(p, v); }
static inline V vload_n(const float* p, int n) { return _mm512_maskz_loadu_ps(lanes(n), p); }
static inline void vstore_n(float* p, V v, int n) { _mm512_mask_storeu_ps(p, lanes(n), v); }
static inline V vadd(V a, V b) { return _mm512_add_ps(a, b); }
static inline V vsub(V a, V b) { return _mm512_sub_ps(a, b); }
static inline V vmul(V a, V b) { return _mm512_mul_ps(a, b); }
static inline V vfma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
// min and max return b where either is NaN: vmin(limit, x) keeps a NaN x.
static inline V vmin(V a, V b) { return _mm512_min_ps(a, b); }
static inline V vmax(V a, V b) { return _mm512_max_ps(a, b); }

// e^-x, for the logistic function: Cody-Waite reduction by ln 2 and Cephes' degree-6
// polynomial (about 1 ulp), scaled by 2^n with vscalefps, which flushes to zero by itself
// (x > 88). Reduced from x itself, to save a negation: n = round(-x / ln 2) and r = x + n ln 2
// (minus the usual reduced argument), so the polynomial's odd terms change sign. The clamp
// keeps e^-x finite and NaN a NaN (max returns its second operand on NaN).
static inline V vexp_neg(V x) {
  x = _mm512_max_ps(vset1(-88.0f), x);
  V n = _mm512_roundscale_ps(vmul(x, vset1(-1.44269504088896341f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  V r = _mm512_fmadd_ps(n, vset1(0.693359375f), x);  // ln 2 = 0.693359375 - 2.12194440e-4
  r = _mm512_fmadd_ps(n, vset1(-2.12194440e-4f), r);
  V p = vset1(-1.9875691500e-4f);
  p = vfma(p, r, vset1(1.3981999507e-3f));
  p = vfma(p, r, vset1(-8.3334519073e-3f));
  p = vfma(p, r, vset1(4.1665795894e-2f));
  p = vfma(p, r, vset1(-1.6666665459e-1f));
  p = vfma(p, r, vset1(5.0000001201e-1f));
  V y = vfma(vmul(p, r), r, vsub(vset1(1.0f), r));
  return _mm512_scalef_ps(y, n);
}

// 1 / x for positive normal x: the 14-bit estimate and one Newton step, r (2 - x r), good to
// about 1 ulp at a fraction of a division's cost (the gates take a few per unit and step).
static inline V vrecip(V x) {
  V r = _mm512_rcp14_ps(x);
  return vmul(r, _mm512_fnmadd_ps(x, r, vset1(2.0f)));
}

static inline V vsigmoid(V x) { return vrecip(vadd(vset1(1.0f), vexp_neg(x))); }

// Round to the nearest bfloat16, ties to even (what XLA's f32 -> bf16 conversion does).
static inline __m512i bf16_bits(V x) {
  __m512i bits = _mm512_castps_si512(x);
  __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  return _mm512_add_epi32(bits, _mm512_add_epi32(_mm512_set1_epi32(0x7FFF), lsb));
}

static inline V vround_bf16(V x) {
  return _mm512_castsi512_ps(_mm512_and_si512(bf16_bits(x), _mm512_set1_epi32(0xFFFF0000)));
}

static inline void store_bf16_n(unsigned short* p, V x, int n) {
  __m256i h = _mm512_cvtepi32_epi16(_mm512_srli_epi32(bf16_bits(x), 16));
  _mm256_mask_storeu_epi16(p, lanes(n), h);
}

static void (*gemm_bf16_fn)(const unsigned short*, int64_t, int, const unsigned short*, int, int,
                            float*, int64_t, int) = 0;
static void (*gemm_amx_fn)(const unsigned short*, int64_t, int, const unsigned short*, int, int,
                           float*, int64_t, int) = 0;
static void (*gemm_amx2_fn)(const unsigned short*, int64_t, const unsigned short*, int,
                            const unsigned short*, int64_t, const unsigned short*, int, int, int,
                            float*, int64_t) = 0;
static inline void amx_done() { amx::end_thread(); }

#include "rnn_impl.inc"

}  // namespace avx512

static Isa make_avx512() {
  Isa isa;
  isa.name = "avx512";
  isa.lanes = avx512::L;
  isa.workspace_bytes = avx512::workspace_bytes;
  isa.forward = avx512::forward;
  isa.backward = avx512::backward;
  return isa;
}

const Isa* isa_avx512() {
  static Isa isa = make_avx512();
  if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
      !__builtin_cpu_supports("avx512dq") || !__builtin_cpu_supports("avx512vl") ||
      !__builtin_cpu_supports("fma")) {
    return 0;
  }
  return &isa;
}

// Which bf16 matmuls to use: AVX512-BF16 dot products (dot), and AMX tiles for them (amx),
// each where the CPU has it. Tests turn them off to run the other paths on a CPU that has them.
void avx512_use_bf16(int dot, int amx) {
  avx512::gemm_bf16_fn = dot && avx512bf16::supported() ? avx512bf16::gemm : 0;
  avx512::gemm_amx_fn = dot && amx && amx::supported() ? amx::gemm : 0;
  avx512::gemm_amx2_fn = dot && amx && amx::supported() ? amx::gemm2 : 0;
}

}  // namespace jaxrnn
#pragma GCC pop_options

#else
namespace jaxrnn {
const Isa* isa_avx512() { return 0; }
void avx512_use_bf16(int, int) {}
}  // namespace jaxrnn
#endif
