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

// C (+)= A P for 32 rows (two row blocks) and the gate blocks [g, g + NG2), NG2 = 1 or 2: each
// weight tile loaded serves both row blocks, each row tile both gates.
template <int NG2>
static inline void block32(const bf16_t* A, int64_t lda, const bf16_t* P, int ng, int K2,
                           float* C, int64_t ldc, int accumulate) {
  const int64_t a_stride = lda * 2, c_stride = ldc * 4, p_stride = (int64_t)ng * 64;
  float* c0 = C;
  float* c1 = C + 16 * ldc;
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
  for (int k2 = 0; k2 < K2; k2 += 16) {
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
  _tile_stored(C00, c0, c_stride);
  _tile_stored(C10, c1, c_stride);
  if (NG2 > 1) {
    _tile_stored(C01, c0 + 16, c_stride);
    _tile_stored(C11, c1 + 16, c_stride);
  }
}

// The same for 16 rows (one row block) and gate blocks [g, g + NG2), NG2 = 1 to 4.
template <int NG2>
static inline void block16(const bf16_t* A, int64_t lda, const bf16_t* P, int ng, int K2,
                           float* C, int64_t ldc, int accumulate) {
  const int64_t a_stride = lda * 2, c_stride = ldc * 4, p_stride = (int64_t)ng * 64;
  for (int g = 0; g < NG2; ++g) JAXRNN_TOUCH(C + 16 * g, c_stride);
  if (accumulate) {
    _tile_loadd(C00, C, c_stride);
    if (NG2 > 1) _tile_loadd(C01, C + 16, c_stride);
    if (NG2 > 2) _tile_loadd(C10, C + 32, c_stride);
    if (NG2 > 3) _tile_loadd(C11, C + 48, c_stride);
  } else {
    _tile_zero(C00);
    if (NG2 > 1) _tile_zero(C01);
    if (NG2 > 2) _tile_zero(C10);
    if (NG2 > 3) _tile_zero(C11);
  }
  for (int k2 = 0; k2 < K2; k2 += 16) {
    const bf16_t* p = P + (int64_t)k2 * ng * 32;
    JAXRNN_TOUCH(A + 2 * k2, a_stride);
    for (int g = 0; g < NG2; ++g) JAXRNN_TOUCH(p + 32 * g, p_stride);
    _tile_loadd(A0, A + 2 * k2, a_stride);
    _tile_loadd(B0, p, p_stride);
    _tile_dpbf16ps(C00, A0, B0);
    if (NG2 > 1) {
      _tile_loadd(B1, p + 32, p_stride);
      _tile_dpbf16ps(C01, A0, B1);
    }
    if (NG2 > 2) {
      _tile_loadd(B0, p + 64, p_stride);
      _tile_dpbf16ps(C10, A0, B0);
    }
    if (NG2 > 3) {
      _tile_loadd(B1, p + 96, p_stride);
      _tile_dpbf16ps(C11, A0, B1);
    }
  }
  _tile_stored(C00, C, c_stride);
  if (NG2 > 1) _tile_stored(C01, C + 16, c_stride);
  if (NG2 > 2) _tile_stored(C10, C + 32, c_stride);
  if (NG2 > 3) _tile_stored(C11, C + 48, c_stride);
}

// C[rows, ng*16] (+)= A[rows, 2 K2] P, P as in rnn_avx512bf16.cc: pairs of row blocks with the
// gate blocks two at a time, then a last row block with all of them.
static void gemm_tiles(const bf16_t* A, int64_t lda, int rows, const bf16_t* P, int K2, int ng,
                       float* C, int64_t ldc, int accumulate) {
  int r = 0;
  for (; r + 32 <= rows; r += 32) {
    const bf16_t* a = A + (int64_t)r * lda;
    float* c = C + (int64_t)r * ldc;
    int g = 0;
    for (; g + 2 <= ng; g += 2) block32<2>(a, lda, P + 32 * g, ng, K2, c + 16 * g, ldc, accumulate);
    if (g < ng) block32<1>(a, lda, P + 32 * g, ng, K2, c + 16 * g, ldc, accumulate);
  }
  if (r < rows) {
    const bf16_t* a = A + (int64_t)r * lda;
    float* c = C + (int64_t)r * ldc;
    switch (ng) {
      case 1: block16<1>(a, lda, P, ng, K2, c, ldc, accumulate); break;
      case 2: block16<2>(a, lda, P, ng, K2, c, ldc, accumulate); break;
      case 3: block16<3>(a, lda, P, ng, K2, c, ldc, accumulate); break;
      default: block16<4>(a, lda, P, ng, K2, c, ldc, accumulate); break;
    }
  }
}

void gemm(const bf16_t* A, int64_t lda, int rows, const bf16_t* P, int K2, int ng, float* C,
          int64_t ldc, int accumulate) {
  configure();
  gemm_tiles(A, lda, rows, P, K2, ng, C, ldc, accumulate);
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
int supported() { return 0; }
}  // namespace amx
}  // namespace jaxrnn
#endif
