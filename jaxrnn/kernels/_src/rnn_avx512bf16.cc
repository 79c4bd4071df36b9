// The bfloat16 panel GEMM on AVX512-BF16 dot products (vdpbf16ps): each instruction multiplies
// 16 pairs of bf16 values and adds both products to 16 float32 sums, twice the work of a
// float32 FMA. Called only where the CPU has the instructions (rnn_avx512.cc checks).
#include "rnn_common.h"

#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,fma,avx2")
#include <immintrin.h>

namespace jaxrnn {
namespace avx512bf16 {
typedef unsigned short bf16_t;
static constexpr int L = 16;
static constexpr int kMaxAcc = 24;

// C[MR, NG*16] = A[MR, 2*K2] P: A's rows in bf16, P pair-interleaved ([k/2][NG*16][2]).
template <int MR, int NG>
static inline void microkernel(const bf16_t* A, int64_t lda, const bf16_t* P, int K2, float* C,
                               int64_t ldc, int accumulate) {
  __m512 acc[MR][NG];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int g = 0; g < NG; ++g)
      acc[r][g] = accumulate ? _mm512_loadu_ps(C + r * ldc + g * L) : _mm512_setzero_ps();
  for (int k2 = 0; k2 < K2; ++k2) {
    __m512bh b[NG];
#pragma GCC unroll 4
    for (int g = 0; g < NG; ++g)
      b[g] = (__m512bh)_mm512_loadu_si512(P + ((int64_t)k2 * NG + g) * 2 * L);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      int pair;
      __builtin_memcpy(&pair, A + r * lda + 2 * k2, 4);
      __m512bh a = (__m512bh)_mm512_set1_epi32(pair);
#pragma GCC unroll 4
      for (int g = 0; g < NG; ++g) acc[r][g] = _mm512_dpbf16_ps(acc[r][g], a, b[g]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int g = 0; g < NG; ++g) _mm512_storeu_ps(C + r * ldc + g * L, acc[r][g]);
}

template <int NG>
static constexpr int rows_for() {
  return kMaxAcc / NG > 16 ? 16 : kMaxAcc / NG;
}

template <int NG, int MR>
static inline void tail_rows(int rows, const bf16_t* A, int64_t lda, const bf16_t* P, int K2,
                             float* C, int64_t ldc, int acc) {
  if constexpr (MR > 0) {
    if (rows == MR) {
      microkernel<MR, NG>(A, lda, P, K2, C, ldc, acc);
    } else {
      tail_rows<NG, MR - 1>(rows, A, lda, P, K2, C, ldc, acc);
    }
  }
}

template <int NG>
static void gemm_rows(const bf16_t* A, int64_t lda, int rows, const bf16_t* P, int K2, float* C,
                      int64_t ldc, int acc) {
  constexpr int MR = rows_for<NG>();
  for (int r = 0, n = 0; r < rows; r += n) {
    n = block_rows(rows, r, MR);
    tail_rows<NG, MR>(n, A + r * lda, lda, P, K2, C + r * ldc, ldc, acc);
  }
}

// C (+)= A P for all rows; accumulate: add to C's values instead of overwriting them.
void gemm(const bf16_t* A, int64_t lda, int rows, const bf16_t* P, int K2, int ng, float* C,
          int64_t ldc, int accumulate) {
  switch (ng) {
    case 1: gemm_rows<1>(A, lda, rows, P, K2, C, ldc, accumulate); break;
    case 2: gemm_rows<2>(A, lda, rows, P, K2, C, ldc, accumulate); break;
    case 3: gemm_rows<3>(A, lda, rows, P, K2, C, ldc, accumulate); break;
    default: gemm_rows<4>(A, lda, rows, P, K2, C, ldc, accumulate); break;
  }
}

int supported() { return __builtin_cpu_supports("avx512bf16"); }

}  // namespace avx512bf16
}  // namespace jaxrnn
#pragma GCC pop_options

#else
namespace jaxrnn {
namespace avx512bf16 {
typedef unsigned short bf16_t;
void gemm(const bf16_t*, int64_t, int, const bf16_t*, int, int, float*, int64_t, int) {}
int supported() { return 0; }
}  // namespace avx512bf16
}  // namespace jaxrnn
#endif
