// The bfloat16 panel GEMM on AMX tiles (Intel Advanced Matrix Extensions, AMX-BF16): one
// TDPBF16PS multiplies a 16 x 32 tile of bf16 rows by a 32 x 16 tile of bf16 weight pairs and
// adds the products to a 16 x 16 float32 tile, eight times the work of a 512-bit AVX512-BF16 dot
// product. Same operands as rnn_avx512bf16.cc's gemm, with two more conditions the callers
// (rnn_impl.inc) meet by padding their buffers with zeros: rows is a multiple of 16 and K2 (pairs
// of the contraction) a multiple of 16. Called only where the CPU has AMX and Linux granted this
// process the tile state (supported() asks for it).
#include "rnn_common.h"

#if defined(__x86_64__) && defined(__GNUC__) && __GNUC__ >= 11
#include <sys/syscall.h>
#include <unistd.h>

#pragma GCC push_options
#pragma GCC target("amx-tile,amx-bf16,avx512f,avx512bw,avx512bf16")
#include <immintrin.h>

namespace jaxrnn {
namespace amx {
typedef unsigned short bf16_t;

// All eight tiles are 16 rows of 64 bytes: float32 sums (16 x 16), rows of A (16 x 32 bf16),
// or weights (16 pairs x 16 lanes x 2 bf16); gemm_tiles says which is which.
struct alignas(64) TileConfig {
  unsigned char palette, start_row, reserved[14];
  unsigned short colsb[16];
  unsigned char rows[16];
};

static TileConfig make_config() {
  TileConfig c;
  __builtin_memset(&c, 0, sizeof(c));
  c.palette = 1;
  for (int t = 0; t < 8; ++t) {
    c.colsb[t] = 64;
    c.rows[t] = 16;
  }
  return c;
}

// The tile configuration belongs to the thread, and other code on it (oneDNN's AMX kernels in
// XLA's threads) loads its own: a thread loads ours at its first GEMM of a kernel call and
// releases the tiles when its share of the call is done (end_thread).
static thread_local int t_configured = 0;

void end_thread() {
  if (t_configured) {
    _tile_release();
    t_configured = 0;
  }
}

static inline void configure() {
  if (!t_configured) {
    static const TileConfig cfg = make_config();
    _tile_loadconfig(&cfg);
    t_configured = 1;
  }
}

// AddressSanitizer does not see inside tile loads and stores: in a sanitized build each one
// first touches both ends of every row it covers, so that a buffer too small for its padding
// is reported there.
#if defined(__SANITIZE_ADDRESS__)
static void touch_rows(const void* p, int64_t stride) {
  for (int r = 0; r < 16; ++r) {
    const volatile char* row = (const volatile char*)p + r * stride;
    (void)row[0];
    (void)row[63];
  }
}
#define JAXRNN_TOUCH(p, stride) touch_rows(p, stride)
#else
#define JAXRNN_TOUCH(p, stride) ((void)0)
#endif

// Tile registers (the macros name them; the instructions take them as immediates).
#define C00 0
#define C01 1
#define C10 2
#define C11 3
#define A0 4
#define A1 5
#define B0 6
#define B1 7

// One or two products summed into the same tiles: C (+)= A[0] P[0] (+ A[1] P[1]), each A
// (rows, 2 K2[i]) with rows lda[i] apart and its P packed for the same ng gate blocks (the
// LSTM's x_t W_ih + h_{t-1} W_hh without storing and reloading the sums in between).
struct Sources {
  const bf16_t* A[2];
  int64_t lda[2];
  const bf16_t* P[2];
  int K2[2];
  int n;
};

// C (+)= sum of A P for 32 rows (two row blocks) and the gate blocks [g, g + NG2), NG2 = 1
// or 2: each weight tile loaded serves both row blocks, each row tile both gates.
template <int NG2>
static inline void block32(const Sources& src, int r, int g, int ng, float* C, int64_t ldc,
                           int accumulate) {
  const int64_t c_stride = ldc * 4, p_stride = (int64_t)ng * 64;
  float* c0 = C + (int64_t)r * ldc + 16 * g;
  float* c1 = c0 + 16 * ldc;
  JAXRNN_TOUCH(c0, c_stride);
  JAXRNN_TOUCH(c1, c_stride);
  if (NG2 > 1) {
    JAXRNN_TOUCH(c0 + 16, c_stride);
    JAXRNN_TOUCH(c1 + 16, c_stride);
  }
  if (accumulate) {
    _tile_loadd(C00, c0, c_stride);
    _tile_loadd(C10, c1, c_stride);
    if (NG2 > 1) {
      _tile_loadd(C01, c0 + 16, c_stride);
      _tile_loadd(C11, c1 + 16, c_stride);
    }
  } else {
    _tile_zero(C00);
    _tile_zero(C10);
    if (NG2 > 1) {
      _tile_zero(C01);
      _tile_zero(C11);
    }
  }
  for (int i = 0; i < src.n; ++i) {
    const int64_t lda = src.lda[i], a_stride = lda * 2;
    const bf16_t* A = src.A[i] + (int64_t)r * lda;
    const bf16_t* P = src.P[i] + 32 * g;
    for (int k2 = 0; k2 < src.K2[i]; k2 += 16) {
      const bf16_t* p = P + (int64_t)k2 * ng * 32;  // 16 lanes x 2 values per gate and pair
      const bf16_t* a = A + 2 * k2;
      JAXRNN_TOUCH(a, a_stride);
      JAXRNN_TOUCH(a + 16 * lda, a_stride);
      JAXRNN_TOUCH(p, p_stride);
      if (NG2 > 1) JAXRNN_TOUCH(p + 32, p_stride);
      _tile_loadd(B0, p, p_stride);
      _tile_loadd(A0, a, a_stride);
      _tile_dpbf16ps(C00, A0, B0);
      _tile_loadd(A1, a + 16 * lda, a_stride);
      _tile_dpbf16ps(C10, A1, B0);
      if (NG2 > 1) {
        _tile_loadd(B1, p + 32, p_stride);
        _tile_dpbf16ps(C01, A0, B1);
        _tile_dpbf16ps(C11, A1, B1);
      }
    }
  }
  _tile_stored(C00, c0, c_stride);
  _tile_stored(C10, c1, c_stride);
  if (NG2 > 1) {
    _tile_stored(C01, c0 + 16, c_stride);
    _tile_stored(C11, c1 + 16, c_stride);
  }
}

// The same for 16 rows (one row block) and all ng = NG gate blocks (1 to 4).
template <int NG>
static inline void block16(const Sources& src, int r, float* C, int64_t ldc, int accumulate) {
  const int64_t c_stride = ldc * 4, p_stride = (int64_t)NG * 64;
  float* c = C + (int64_t)r * ldc;
  for (int g = 0; g < NG; ++g) JAXRNN_TOUCH(c + 16 * g, c_stride);
  if (accumulate) {
    _tile_loadd(C00, c, c_stride);
    if (NG > 1) _tile_loadd(C01, c + 16, c_stride);
    if (NG > 2) _tile_loadd(C10, c + 32, c_stride);
    if (NG > 3) _tile_loadd(C11, c + 48, c_stride);
  } else {
    _tile_zero(C00);
    if (NG > 1) _tile_zero(C01);
    if (NG > 2) _tile_zero(C10);
    if (NG > 3) _tile_zero(C11);
  }
  for (int i = 0; i < src.n; ++i) {
    const int64_t a_stride = src.lda[i] * 2;
    const bf16_t* A = src.A[i] + (int64_t)r * src.lda[i];
    for (int k2 = 0; k2 < src.K2[i]; k2 += 16) {
      const bf16_t* p = src.P[i] + (int64_t)k2 * NG * 32;
      JAXRNN_TOUCH(A + 2 * k2, a_stride);
      for (int g = 0; g < NG; ++g) JAXRNN_TOUCH(p + 32 * g, p_stride);
      _tile_loadd(A0, A + 2 * k2, a_stride);
      _tile_loadd(B0, p, p_stride);
      _tile_dpbf16ps(C00, A0, B0);
      if (NG > 1) {
        _tile_loadd(B1, p + 32, p_stride);
        _tile_dpbf16ps(C01, A0, B1);
      }
      if (NG > 2) {
        _tile_loadd(B0, p + 64, p_stride);
        _tile_dpbf16ps(C10, A0, B0);
      }
      if (NG > 3) {
        _tile_loadd(B1, p + 96, p_stride);
        _tile_dpbf16ps(C11, A0, B1);
      }
    }
  }
  _tile_stored(C00, c, c_stride);
  if (NG > 1) _tile_stored(C01, c + 16, c_stride);
  if (NG > 2) _tile_stored(C10, c + 32, c_stride);
  if (NG > 3) _tile_stored(C11, c + 48, c_stride);
}

// C[rows, ng*16] (+)= the sources' products: pairs of row blocks with the gate blocks two at
// a time, then a last row block with all of them.
static void gemm_tiles(const Sources& src, int rows, int ng, float* C, int64_t ldc,
                       int accumulate) {
  configure();
  int r = 0;
  for (; r + 32 <= rows; r += 32) {
    int g = 0;
    for (; g + 2 <= ng; g += 2) block32<2>(src, r, g, ng, C, ldc, accumulate);
    if (g < ng) block32<1>(src, r, g, ng, C, ldc, accumulate);
  }
  if (r < rows) {
    switch (ng) {
      case 1: block16<1>(src, r, C, ldc, accumulate); break;
      case 2: block16<2>(src, r, C, ldc, accumulate); break;
      case 3: block16<3>(src, r, C, ldc, accumulate); break;
      default: block16<4>(src, r, C, ldc, accumulate); break;
    }
  }
}

// C (+)= A P: the panel GEMM of rnn_avx512bf16.cc, with the conditions above.
void gemm(const bf16_t* A, int64_t lda, int rows, const bf16_t* P, int K2, int ng, float* C,
          int64_t ldc, int accumulate) {
  gemm_tiles(Sources{{A, 0}, {lda, 0}, {P, 0}, {K2, 0}, 1}, rows, ng, C, ldc, accumulate);
}

// C = Ax Px + Ah Ph, both products in the same tiles.
void gemm2(const bf16_t* Ax, int64_t ldx, const bf16_t* Px, int K2x, const bf16_t* Ah,
           int64_t ldh, const bf16_t* Ph, int K2h, int rows, int ng, float* C, int64_t ldc) {
  gemm_tiles(Sources{{Ax, Ah}, {ldx, ldh}, {Px, Ph}, {K2x, K2h}, 2}, rows, ng, C, ldc, 0);
}

// ---------------------------------------------------------------------------------------------
// The backward pass's matmuls over all steps (GradArgs, rnn_common.h), as one product
// C[M, P] = sum over q of A[m, q] B[q, p]:
//   kWeightGrad: M = K, P = N, the contraction over the R rows; A = a^T, B = g;
//   kInputGrad:  M = R, P = K, the contraction over N; A = g, B = w^T.
// Both operands are packed into whole tiles first, zero padded to multiples of 32: A as
// [M / 16][Q / 32] tiles of 16 rows x 32 values, B as [P / 16][Q / 32] tiles of 16 pairs x 16
// columns (each pair interleaved, as TDPBF16PS reads its second operand); g is rounded to bf16
// on the way. Then each item of the product owns a block of C and sums over the contraction in
// chunks, so that A's chunk for the item's rows stays in L2, and B's chunk for a pair of column
// blocks in L1 and L2 while the item's rows are swept.
static constexpr int kChunk = 1024;  // contraction per pass over an item's C (A: 512 KiB)
static constexpr int kItem = 256;    // rows and columns of C per item of the product
static constexpr int kPackQ = 64;    // kWeightGrad: rows of a and g per item of the packing

struct GradWs {
  Sync* pack;  // the packing phase's items, then the product's
  Sync* mul;
  bf16_t* ap;  // A's tiles
  bf16_t* bp;  // B's tiles
  float* c;    // the result: GradArgs::c, or (padded sizes) a buffer it is copied from
  int64_t ldc;
  int M, P, Q;     // C's rows and columns, the contraction
  int Mp, Pp, Qp;  // the same, padded to multiples of 32
};


// The workspace's parts, in order (sizes only when base is null); returns its bytes.
static int64_t carve_grad(const GradArgs* t, char* base, GradWs* w, int64_t* zeroed) {
  const int weight = t->kind == kWeightGrad;
  w->M = weight ? t->K : t->R;
  w->P = weight ? t->N : t->K;
  w->Q = weight ? t->R : t->N;
  w->Mp = (int)round_up(w->M, 32);
  w->Pp = (int)round_up(w->P, 32);
  w->Qp = (int)round_up(w->Q, 32);
  const int padded = w->Mp != w->M || w->Pp != w->P;
  int64_t at = 0;
  auto take = [&](int64_t bytes) {
    char* p = base ? base + at : nullptr;
    at = round_up(at + bytes, 64);
    return p;
  };
  w->pack = (Sync*)take(sizeof(Sync));
  w->mul = (Sync*)take(sizeof(Sync));
  *zeroed = at;
  w->ap = (bf16_t*)take((int64_t)w->Mp * w->Qp * 2);
  w->bp = (bf16_t*)take((int64_t)w->Pp * w->Qp * 2);
  w->c = padded ? (float*)take((int64_t)w->Mp * w->Pp * 4) : t->c;
  w->ldc = padded ? w->Pp : w->P;
  return at;
}

int64_t grad_workspace_bytes(const GradArgs* t, int64_t* zeroed) {
  GradWs w;
  return carve_grad(t, nullptr, &w, zeroed);
}

// Pairs (x_i, y_i) of bf16 values from a vector holding x_0..x_15 then y_0..y_15.
static inline __m512i interleave_pairs(__m512i xy) {
  const __m512i order =
      _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                       21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
  return _mm512_permutexvar_epi16(order, xy);
}

// n float32 values from p (0 <= n <= 16; zeros past them).
static inline __m512 load_f32(const float* p, int n) {
  if (n <= 0) return _mm512_setzero_ps();
  return _mm512_maskz_loadu_ps(n >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << n) - 1), p);
}

// A whole tile of rows rows[0 .. 31] (16 values from each), transposed: the rows' pairs of
// values interleaved into 32-bit words (pairs[p][i] = (rows[2p][i], rows[2p + 1][i])), then the
// 16 x 16 words transposed by gathers (tile row i = pairs[0..15][i]).
static inline void transpose_tile(const bf16_t* const* rows, bf16_t* tile) {
  alignas(64) uint32_t pairs[16][16];
  for (int p = 0; p < 16; ++p) {
    __m512i lo = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)rows[2 * p]));
    __m512i hi = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)rows[2 * p + 1]));
    _mm512_store_si512((__m512i*)pairs[p], _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
  }
  const __m512i column = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5,
                                                             4, 3, 2, 1, 0),
                                            _mm512_set1_epi32(16));
  for (int i = 0; i < 16; ++i) {
    __m512i words = _mm512_i32gather_epi32(_mm512_add_epi32(column, _mm512_set1_epi32(i)),
                                           (const void*)pairs, 4);
    _mm512_store_si512((__m512i*)(tile + i * 32), words);
  }
}

// kWeightGrad, A's tile (mb, qb): a's rows q0 .. q0 + 31, columns m0 .. m0 + 15, transposed.
static void pack_a_transposed(const GradArgs* t, bf16_t* tile, int m0, int q0) {
  const int nq = imin(t->R - q0, 32), nm = imin(t->K - m0, 16);
  if (nq == 32 && nm == 16) {
    const bf16_t* rows[32];
    for (int j = 0; j < 32; ++j) rows[j] = t->a + (int64_t)(q0 + j) * t->K + m0;
    transpose_tile(rows, tile);
    return;
  }
  __builtin_memset(tile, 0, 1024);
  for (int j = 0; j < nq; ++j) {
    const bf16_t* row = t->a + (int64_t)(q0 + j) * t->K + m0;
    for (int i = 0; i < nm; ++i) tile[i * 32 + j] = row[i];
  }
}

// kWeightGrad, B's tile (pb, qb): g's rows q0 .. q0 + 31 in pairs, columns p0 .. p0 + 15.
static void pack_b_rows(const GradArgs* t, bf16_t* tile, int p0, int q0) {
  for (int i = 0; i < 16; ++i) {
    const int q = q0 + 2 * i;
    const float* g = t->g + (int64_t)q * t->N + p0;
    __m512 x = q < t->R ? load_f32(g, t->N - p0) : _mm512_setzero_ps();
    __m512 y = q + 1 < t->R ? load_f32(g + t->N, t->N - p0) : _mm512_setzero_ps();
    __m512i xy = (__m512i)_mm512_cvtne2ps_pbh(y, x);  // x's 16 values, then y's
    _mm512_store_si512((__m512i*)(tile + i * 32), interleave_pairs(xy));
  }
}

// kInputGrad, A's tile (mb, qb): g's rows m0 .. m0 + 15, columns q0 .. q0 + 31.
static void pack_a_rows(const GradArgs* t, bf16_t* tile, int m0, int q0) {
  for (int i = 0; i < 16; ++i) {
    const float* g = t->g + (int64_t)(m0 + i) * t->N + q0;
    const int live = m0 + i < t->R;
    __m512 x = live ? load_f32(g, t->N - q0) : _mm512_setzero_ps();
    __m512 y = live ? load_f32(g + 16, t->N - q0 - 16) : _mm512_setzero_ps();
    _mm512_store_si512((__m512i*)(tile + i * 32), (__m512i)_mm512_cvtne2ps_pbh(y, x));
  }
}

// kInputGrad, B's tile (pb, qb): w's rows p0 .. p0 + 15 (columns of C), its columns
// q0 .. q0 + 31 in pairs. A whole tile is a 16 x 16 transpose of 32-bit pairs: tile row i
// gathers pair i of each of the 16 rows.
static void pack_b_transposed(const GradArgs* t, bf16_t* tile, int p0, int q0) {
  const int np = imin(t->K - p0, 16), nq = imin(t->N - q0, 32);
  if (np == 16 && nq == 32) {
    const bf16_t* w = t->a + (int64_t)p0 * t->N + q0;
    const __m512i rows = _mm512_mullo_epi32(
        _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
        _mm512_set1_epi32(2 * t->N));  // byte offsets of the rows
    for (int i = 0; i < 16; ++i) {
      __m512i pairs = _mm512_i32gather_epi32(rows, (const void*)(w + 2 * i), 1);
      _mm512_store_si512((__m512i*)(tile + i * 32), pairs);
    }
    return;
  }
  __builtin_memset(tile, 0, 1024);
  for (int j = 0; j < np; ++j) {
    const bf16_t* row = t->a + (int64_t)(p0 + j) * t->N + q0;
    for (int q = 0; q < nq; ++q) tile[(q >> 1) * 32 + 2 * j + (q & 1)] = row[q];
  }
}

// Items of the packing phase, each reading whole rows of its operand in order: kWeightGrad,
// the tiles of both operands over kPackQ rows of a and g; kInputGrad, all tiles of 16 rows of
// g, or of 16 rows of w.
static int pack_items(const GradArgs* t, const GradWs& w) {
  if (t->kind == kWeightGrad) return (w.Qp + kPackQ - 1) / kPackQ;
  return w.Mp / 16 + w.Pp / 16;
}

static void pack_item(const GradArgs* t, const GradWs& w, int i) {
  const int QB = w.Qp / 32;
  if (t->kind == kWeightGrad) {
    for (int qb = i * kPackQ / 32; qb < QB && qb < (i + 1) * kPackQ / 32; ++qb) {
      for (int mb = 0; mb < w.Mp / 16; ++mb)
        pack_a_transposed(t, w.ap + ((int64_t)mb * QB + qb) * 512, mb * 16, qb * 32);
      for (int pb = 0; pb < w.Pp / 16; ++pb)
        pack_b_rows(t, w.bp + ((int64_t)pb * QB + qb) * 512, pb * 16, qb * 32);
    }
  } else if (i < w.Mp / 16) {
    for (int qb = 0; qb < QB; ++qb) pack_a_rows(t, w.ap + ((int64_t)i * QB + qb) * 512, i * 16, qb * 32);
  } else {
    const int pb = i - w.Mp / 16;
    for (int qb = 0; qb < QB; ++qb)
      pack_b_transposed(t, w.bp + ((int64_t)pb * QB + qb) * 512, pb * 16, qb * 32);
  }
}

// C's 32 x 32 block at row block mb and column block pb (+)= the product over contraction
// blocks [qb0, qb1): 2 x 2 sum tiles, each A tile loaded serving two column blocks, each B
// tile two row blocks.
static inline void grad_block(const GradWs& w, int mb, int pb, int qb0, int qb1) {
  const int QB = w.Qp / 32;
  const int64_t stride = w.ldc * 4;
  float* c0 = w.c + (int64_t)mb * 16 * w.ldc + pb * 16;
  float* c1 = c0 + 16 * w.ldc;
  JAXRNN_TOUCH(c0, stride);
  JAXRNN_TOUCH(c0 + 16, stride);
  JAXRNN_TOUCH(c1, stride);
  JAXRNN_TOUCH(c1 + 16, stride);
  if (qb0 == 0) {
    _tile_zero(C00);
    _tile_zero(C01);
    _tile_zero(C10);
    _tile_zero(C11);
  } else {
    _tile_loadd(C00, c0, stride);
    _tile_loadd(C01, c0 + 16, stride);
    _tile_loadd(C10, c1, stride);
    _tile_loadd(C11, c1 + 16, stride);
  }
  const bf16_t* a0 = w.ap + (int64_t)mb * QB * 512;
  const bf16_t* a1 = a0 + (int64_t)QB * 512;
  const bf16_t* b0 = w.bp + (int64_t)pb * QB * 512;
  const bf16_t* b1 = b0 + (int64_t)QB * 512;
  for (int qb = qb0; qb < qb1; ++qb) {
    const int64_t at = (int64_t)qb * 512;
    JAXRNN_TOUCH(b0 + at, 64);
    JAXRNN_TOUCH(a0 + at, 64);
    JAXRNN_TOUCH(a1 + at, 64);
    JAXRNN_TOUCH(b1 + at, 64);
    _tile_loadd(B0, b0 + at, 64);
    _tile_loadd(A0, a0 + at, 64);
    _tile_dpbf16ps(C00, A0, B0);
    _tile_loadd(A1, a1 + at, 64);
    _tile_dpbf16ps(C10, A1, B0);
    _tile_loadd(B1, b1 + at, 64);
    _tile_dpbf16ps(C01, A0, B1);
    _tile_dpbf16ps(C11, A1, B1);
  }
  _tile_stored(C00, c0, stride);
  _tile_stored(C01, c0 + 16, stride);
  _tile_stored(C10, c1, stride);
  _tile_stored(C11, c1 + 16, stride);
}

// Item i of the product: C's rows [m0, m1) and columns [p0, p1), over the whole contraction
// in chunks; with padded sizes, then its part of GradArgs::c.
static void grad_item(const GradArgs* t, const GradWs& w, int i) {
  const int rows = (w.Mp + kItem - 1) / kItem, QB = w.Qp / 32;
  const int m0 = (i % rows) * kItem, m1 = imin(m0 + kItem, w.Mp);
  const int p0 = (i / rows) * kItem, p1 = imin(p0 + kItem, w.Pp);
  for (int qb0 = 0; qb0 < QB; qb0 += kChunk / 32) {
    const int qb1 = imin(qb0 + kChunk / 32, QB);
    for (int p = p0; p < p1; p += 32)
      for (int m = m0; m < m1; m += 32) grad_block(w, m / 16, p / 16, qb0, qb1);
  }
  if (w.c == t->c) return;
  const int mend = imin(m1, w.M), pend = imin(p1, w.P);
  for (int m = m0; m < mend && p0 < pend; ++m)
    __builtin_memcpy(t->c + (int64_t)m * w.P + p0, w.c + (int64_t)m * w.ldc + p0,
                     (size_t)(pend - p0) * 4);
}

// Items of the product: blocks of kItem x kItem of C.
static int product_items(const GradWs& w) {
  return (int)(((w.Mp + kItem - 1) / kItem) * ((w.Pp + kItem - 1) / kItem));
}

int grad_items(const GradArgs* t) {
  GradWs w;
  int64_t zeroed;
  carve_grad(t, nullptr, &w, &zeroed);
  return product_items(w);
}

void grad_matmul(const GradArgs* t, void* ws, int tid, int nth) {
  GradWs w;
  int64_t zeroed;
  carve_grad(t, (char*)ws, &w, &zeroed);
  run_phases(w.pack, 1, pack_items(t, w), tid, nth, [&](int64_t, int i) { pack_item(t, w, i); });
  configure();
  run_phases(w.mul, 1, product_items(w), tid, nth, [&](int64_t, int i) { grad_item(t, w, i); });
  end_thread();
}

// Linux hands out the 8 KiB of tile state only to processes that ask for it
// (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)); asking twice is harmless.
static int request_tiles() {
  const long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
}

int supported() {
  static const int ok = __builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-bf16") &&
                        __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                        __builtin_cpu_supports("avx512bf16") && request_tiles();
  return ok;
}

}  // namespace amx
}  // namespace jaxrnn
#pragma GCC pop_options

#else
namespace jaxrnn {
namespace amx {
typedef unsigned short bf16_t;
void end_thread() {}
void gemm(const bf16_t*, int64_t, int, const bf16_t*, int, int, float*, int64_t, int) {}
void gemm2(const bf16_t*, int64_t, const bf16_t*, int, const bf16_t*, int64_t, const bf16_t*, int,
           int, int, float*, int64_t) {}
int supported() { return 0; }
int64_t grad_workspace_bytes(const GradArgs*, int64_t* zeroed) {
  *zeroed = 0;
  return 0;
}
int grad_items(const GradArgs*) { return 1; }
void grad_matmul(const GradArgs*, void*, int, int) {}
}  // namespace amx
}  // namespace jaxrnn
#endif
