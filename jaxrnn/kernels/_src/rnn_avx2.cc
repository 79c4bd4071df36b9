// The kernels for AVX2 with FMA: 8 float lanes, 16 registers. bfloat16 matmuls run as float32
// FMAs on bf16 values (exact products, float32 sums). Compiled for these instructions whatever
// the build machine's default; the FFI handlers call it only after checking the CPU.
#include "rnn_common.h"

#include <sched.h>  // sched_yield, for threads waiting on a phase

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#include <immintrin.h>

namespace jaxrnn {
namespace avx2 {

typedef __m256 V;
static constexpr int L = 8;
static constexpr int kMaxAcc = 12;  // of 16 registers: the rest hold weights and a broadcast

static inline __m256i lane_mask(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline V vzero() { return _mm256_setzero_ps(); }
static inline V vset1(float x) { return _mm256_set1_ps(x); }
static inline V vload(const float* p) { return _mm256_loadu_ps(p); }
static inline void vstore(float* p, V v) { _mm256_storeu_ps(p, v); }
static inline V vload_n(const float* p, int n) { return _mm256_maskload_ps(p, lane_mask(n)); }
static inline void vstore_n(float* p, V v, int n) { _mm256_maskstore_ps(p, lane_mask(n), v); }
static inline V vadd(V a, V b) { return _mm256_add_ps(a, b); }
static inline V vsub(V a, V b) { return _mm256_sub_ps(a, b); }
static inline V vmul(V a, V b) { return _mm256_mul_ps(a, b); }
static inline V vfma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
// min and max return b where either is NaN: vmin(limit, x) keeps a NaN x.
static inline V vmin(V a, V b) { return _mm256_min_ps(a, b); }
static inline V vmax(V a, V b) { return _mm256_max_ps(a, b); }

// e^-x as in rnn_avx512.cc; 2^n is built in the exponent field (n in [-127, 127] after the
// clamp; 2^-127 flushes to zero, where e^-x < 1e-38 anyway).
static inline V vexp_neg(V x) {
  x = _mm256_min_ps(vset1(88.0f), _mm256_max_ps(vset1(-88.0f), x));
  V n = _mm256_round_ps(vmul(x, vset1(-1.44269504088896341f)),
                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  V r = _mm256_fmadd_ps(n, vset1(0.693359375f), x);
  r = _mm256_fmadd_ps(n, vset1(-2.12194440e-4f), r);
  V p = vset1(-1.9875691500e-4f);
  p = vfma(p, r, vset1(1.3981999507e-3f));
  p = vfma(p, r, vset1(-8.3334519073e-3f));
  p = vfma(p, r, vset1(4.1665795894e-2f));
  p = vfma(p, r, vset1(-1.6666665459e-1f));
  p = vfma(p, r, vset1(5.0000001201e-1f));
  V y = vfma(vmul(p, r), r, vsub(vset1(1.0f), r));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return vmul(y, _mm256_castsi256_ps(e));
}

// 1 / x for positive normal x: the 12-bit estimate and one Newton step, r (2 - x r), good to
// a few ulp at a fraction of a division's cost (the gates take a few per unit and step).
static inline V vrecip(V x) {
  V r = _mm256_rcp_ps(x);
  return vmul(r, _mm256_fnmadd_ps(x, r, vset1(2.0f)));
}

static inline V vsigmoid(V x) { return vrecip(vadd(vset1(1.0f), vexp_neg(x))); }

static inline __m256i bf16_bits(V x) {
  __m256i bits = _mm256_castps_si256(x);
  __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  return _mm256_add_epi32(bits, _mm256_add_epi32(_mm256_set1_epi32(0x7FFF), lsb));
}

static inline V vround_bf16(V x) {
  return _mm256_castsi256_ps(_mm256_and_si256(bf16_bits(x), _mm256_set1_epi32(0xFFFF0000)));
}

// Unused here (no bf16 dot products on this path); defined for the shared code.
static inline void store_bf16_n(unsigned short* p, V x, int n) {
  alignas(32) unsigned int bits[8];
  _mm256_store_si256((__m256i*)bits, _mm256_srli_epi32(bf16_bits(x), 16));
  for (int i = 0; i < n; ++i) p[i] = (unsigned short)bits[i];
}

static void (*const gemm_bf16_fn)(const unsigned short*, int64_t, int, const unsigned short*,
                                  int, int, float*, int64_t, int) = 0;
static void (*const gemm_amx_fn)(const unsigned short*, int64_t, int, const unsigned short*,
                                 int, int, float*, int64_t, int) = 0;
static void (*const gemm_amx2_fn)(const unsigned short*, int64_t, const unsigned short*, int,
                                  const unsigned short*, int64_t, const unsigned short*, int, int,
                                  int, float*, int64_t) = 0;
static inline void amx_done() {}

#include "rnn_impl.inc"

}  // namespace avx2

static Isa make_avx2() {
  Isa isa;
  isa.name = "avx2";
  isa.lanes = avx2::L;
  isa.workspace_bytes = avx2::workspace_bytes;
  isa.forward = avx2::forward;
  isa.backward = avx2::backward;
  return isa;
}

const Isa* isa_avx2() {
  static Isa isa = make_avx2();
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return 0;
  return &isa;
}

}  // namespace jaxrnn
#pragma GCC pop_options

#else
namespace jaxrnn {
const Isa* isa_avx2() { return 0; }
}  // namespace jaxrnn
#endif
