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
#pragma GCC target("amx-tile,amx-bf16,avx512f")
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

// Linux hands out the 8 KiB of tile state only to processes that ask for it
// (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)); asking twice is harmless.
static int request_tiles() {
  const long kReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureXtiledata) == 0;
}

int supported() {
  static const int ok = __builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-bf16") &&
                        __builtin_cpu_supports("avx512f") && request_tiles();
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
}  // namespace amx
}  // namespace jaxrnn
#endif
