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

// Tile registers: 0-3 the float32 sums of up to four gate blocks (16 rows x 16 lanes), 4 the
// rows of A (16 x 32 bf16), 5-7 weight tiles (16 pairs x 16 lanes x 2), used in turn.
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

// C[16 rows, NG*16] (+)= A[16 rows, 2 K2] P, for all row blocks; P as in rnn_avx512bf16.cc.
template <int NG>
static void gemm_ng(const bf16_t* A, int64_t lda, int rows, const bf16_t* P, int K2, float* C,
                    int64_t ldc, int accumulate) {
  const int64_t a_stride = lda * 2, c_stride = ldc * 4, p_stride = (int64_t)NG * 64;
  for (int r = 0; r < rows; r += 16) {
    float* c = C + (int64_t)r * ldc;
    for (int g = 0; g < NG; ++g) JAXRNN_TOUCH(c + 16 * g, c_stride);
    if (accumulate) {
      _tile_loadd(0, c, c_stride);
      if (NG > 1) _tile_loadd(1, c + 16, c_stride);
      if (NG > 2) _tile_loadd(2, c + 32, c_stride);
      if (NG > 3) _tile_loadd(3, c + 48, c_stride);
    } else {
      _tile_zero(0);
      if (NG > 1) _tile_zero(1);
      if (NG > 2) _tile_zero(2);
      if (NG > 3) _tile_zero(3);
    }
    const bf16_t* a = A + (int64_t)r * lda;
    for (int k2 = 0; k2 < K2; k2 += 16) {
      const bf16_t* p = P + (int64_t)k2 * NG * 32;  // 16 lanes x 2 values per gate and pair
      JAXRNN_TOUCH(a + 2 * k2, a_stride);
      for (int g = 0; g < NG; ++g) JAXRNN_TOUCH(p + 32 * g, p_stride);
      _tile_loadd(4, a + 2 * k2, a_stride);
      _tile_loadd(5, p, p_stride);
      _tile_dpbf16ps(0, 4, 5);
      if (NG > 1) {
        _tile_loadd(6, p + 32, p_stride);
        _tile_dpbf16ps(1, 4, 6);
      }
      if (NG > 2) {
        _tile_loadd(7, p + 64, p_stride);
        _tile_dpbf16ps(2, 4, 7);
      }
      if (NG > 3) {
        _tile_loadd(5, p + 96, p_stride);
        _tile_dpbf16ps(3, 4, 5);
      }
    }
    _tile_stored(0, c, c_stride);
    if (NG > 1) _tile_stored(1, c + 16, c_stride);
    if (NG > 2) _tile_stored(2, c + 32, c_stride);
    if (NG > 3) _tile_stored(3, c + 48, c_stride);
  }
}

void gemm(const bf16_t* A, int64_t lda, int rows, const bf16_t* P, int K2, int ng, float* C,
          int64_t ldc, int accumulate) {
  configure();
  switch (ng) {
    case 1: gemm_ng<1>(A, lda, rows, P, K2, C, ldc, accumulate); break;
    case 2: gemm_ng<2>(A, lda, rows, P, K2, C, ldc, accumulate); break;
    case 3: gemm_ng<3>(A, lda, rows, P, K2, C, ldc, accumulate); break;
    default: gemm_ng<4>(A, lda, rows, P, K2, C, ldc, accumulate); break;
  }
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
