// jaxrnn native kernels: what the FFI handlers (rnn_ffi.cc) and the per-ISA implementations
// (rnn_avx2.cc, rnn_avx512.cc) share. Plain C structs, function pointers and static functions
// only: the ISA translation units are compiled for other instruction sets and must not share
// inline C++ library code with the baseline one (an inline function compiled for AVX-512 could
// be the copy the linker keeps; a static one is each translation unit's own).
#ifndef JAXRNN_KERNELS_RNN_COMMON_H_
#define JAXRNN_KERNELS_RNN_COMMON_H_

#include <sched.h>
#include <stdint.h>

namespace jaxrnn {

// One direction of one layer over a whole sequence, time-major, batch flattened to B.
// Gate blocks along the last axis: LSTM i, f, g, o; GRU r, z, n (as jr.lstm / jr.gru store them).
struct SeqArgs {
  int cell;         // kLstm, kGruAfter (reset_after=True) or kGruBefore (reset_after=False)
  int T, B, H, I;   // steps, flattened batch, hidden size, input size
  int reverse;      // run from t = T - 1 down to 0 (each row from its own last valid step)
  int batch_major;  // sequence arrays are (B, T, ...), else (T, B, ...)
  int bf16;         // the matmuls take bfloat16 operands (uint16 bit patterns), else float32
  int w_f32;        // with bf16: the weights are float32, rounded to bfloat16 (to nearest,
                    // ties to even, as XLA converts) as they are packed; else bf16 too
  int hoist;        // the input projection of all steps as one GEMM before the loop: 0 where
                    // the weights would not stay in cache (rnn_impl.inc), 1 always, 2 never
  const int32_t* lengths;  // (B,) valid steps per row, in [0, T]
  const void* w_ih;   // (I, G*H) input weights, row-major; gate blocks as jr.lstm / jr.gru
  const void* w_hh;   // (H, G*H) recurrent weights
  const float* b;     // LSTM: (4H,) bias; GRU: (3H,) input-side bias b_ih
  const float* b_hh;  // GRU: (3H,) recurrent bias; LSTM: unused
  // forward
  const void* x;    // (T, B, I) inputs (I even when bf16)
  const float* h0;  // (B, H)
  const float* c0;  // (B, H) LSTM only
  float* ys;        // (T, B, H) outputs: h_t at valid steps, 0 past each row's length
  float* hn;        // (B, H) final carry
  float* cn;        // (B, H) LSTM only
  float* acts;      // (T, B, G*H) saved gate activations for the backward pass, or null
  float* cs;        // (T, B, H) saved for the backward pass, or null: LSTM cell states c_t;
                    // GRU reset_after: h_{t-1} W_hn + b_hn; GRU reset_before: unused
  // backward (reads acts, cs, ys of the forward pass, h0, c0; writes over cs or ys, below)
  const float* dys;  // (T, B, H) output cotangents
  const float* dhn;  // (B, H)
  const float* dcn;  // (B, H) LSTM only
  float* dg;         // (T, B, G*H) gate pre-activation cotangents (GRU reset_after: recurrent side)
  float* gru_aux;    // (T, B, H) GRU: with reset_after the candidate pre-activation cotangent;
                     // with the reset gate before the matmul r_t * h_{t-1}, the operand of
                     // dW_hn (0 past each row's length). LSTM: null
  // dg may be acts itself, and with reset_after gru_aux cs itself (the cotangents are written in
  // place of what they are computed from, each element read before it is written). The backward
  // pass also writes the carry h_{t-1} entering each valid step (h0 at a row's first, the operand
  // of dW_hh) over the LSTM's cs or the GRU's ys, as they are read for the last time (past a
  // row's length: zeros, or the LSTM's h_t).
  float* dh0;        // (B, H)
  float* dc0;        // (B, H) LSTM only
};

enum CellKind { kLstm = 0, kGruAfter = 1, kGruBefore = 2 };

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int imax(int a, int b) { return a > b ? a : b; }
static inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// bfloat16 values as uint16 bit patterns: a float32 rounded to the nearest bf16, ties to even,
// as XLA converts (a NaN stays a NaN); and a bf16's float32 value.
static inline unsigned short f32_to_bf16(float x) {
  unsigned int u;
  __builtin_memcpy(&u, &x, 4);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (unsigned short)((u >> 16) | 0x40);
  return (unsigned short)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

static inline float bf16_to_f32(unsigned short h) {
  unsigned int u = (unsigned int)h << 16;
  float x;
  __builtin_memcpy(&x, &u, 4);
  return x;
}

// The rows of the register-tiled GEMMs' block that starts at row r of `rows`, in blocks of at
// most mr: each block streams the packed weights again, so a short last block (under mr / 2
// rows) and the full one before it are split in halves instead (32 rows of 6: 6, 6, 6, 6, 4, 4).
static inline int block_rows(int rows, int r, int mr) {
  int left = rows - r;
  if (left > mr && left < 2 * mr && 2 * (left - mr) < mr) return (left + 1) / 2;
  return left < mr ? left : mr;
}

// Work sharing. Every pass over the units (a step, or a part of one) is a phase of N items
// (panels, or groups of them). Item ranges have a home thread each, in order, so a thread
// keeps its slice of the weights in its cache as long as the threads keep pace; a thread that
// finishes its range takes what is left of the others', and one that starts late (or never)
// costs nothing but its share. A phase ends when all its items are done (one counter for all
// phases); no thread ever waits for another to start, only for claimed items to finish.
static constexpr int kMaxThreads = 64;

struct Sync {
  int64_t done;                       // items finished, over all phases
  char pad[56];
  int64_t next[kMaxThreads * 8];      // range j's claim counter at [j * 8]: one cache line each
};

static inline int64_t range_lo(int64_t n, int j, int nth) { return n * j / nth; }

// An item of phase k for thread tid (its own range first, then the others'), or -1.
static inline int64_t claim(Sync* s, int64_t k, int tid, int nth, int64_t n) {
  for (int d = 0; d < nth; ++d) {
    int j = (tid + d) % nth;
    int64_t lo = range_lo(n, j, nth), r = range_lo(n, j + 1, nth) - lo;
    int64_t* next = &s->next[j * 8];
    int64_t v = __atomic_load_n(next, __ATOMIC_RELAXED);
    while (v < (k + 1) * r) {
      if (__atomic_compare_exchange_n(next, &v, v + 1, false, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
        return lo + v - k * r;
    }
  }
  return -1;
}

static inline void wait_for(Sync* s, int64_t done) {
  for (int spin = 0; __atomic_load_n(&s->done, __ATOMIC_ACQUIRE) < done; ++spin) {
    if (spin < 2000) {
      __builtin_ia32_pause();
    } else {
      sched_yield();
    }
  }
}

// Runs phases [0, phases) of n items each; item(k, i) does item i of phase k.
template <class Item>
static void run_phases(Sync* s, int64_t phases, int64_t n, int tid, int nth, Item&& item) {
  if (nth > kMaxThreads) nth = kMaxThreads;
  for (int64_t k = __atomic_load_n(&s->done, __ATOMIC_ACQUIRE) / n; k < phases; ++k) {
    for (int64_t i; (i = claim(s, k, tid, nth, n)) >= 0;) {
      item(k, (int)i);
      __atomic_fetch_add(&s->done, 1, __ATOMIC_RELEASE);
    }
    wait_for(s, (k + 1) * n);
  }
}

// The bf16 backward pass's matmuls over all steps, on AMX tiles (rnn_amx.cc), with the (T, B)
// axes flattened to R rows; g is rounded to bfloat16 (to nearest, ties to even) as it is
// packed, and the products are summed in float32:
//   kWeightGrad: c (K, N) = a^T g, a (R, K) (h_{t-1} or x_t), g (R, N) (dG_t): dW_hh, dW_ih;
//   kInputGrad:  c (R, K) = g a^T, g (R, N) (dG_t), a (K, N) (W_ih): dx_t.
enum GradKind { kWeightGrad = 0, kInputGrad = 1 };

struct GradArgs {
  int kind;
  int R, K, N;
  const unsigned short* a;  // bfloat16 bit patterns, row-major
  const float* g;
  float* c;
};

namespace amx {
int supported();  // the CPU has AMX-BF16 and Linux granted this process the tile state
// The workspace of grad_matmul (its first *zeroed bytes zero when a call starts), how many
// items (blocks of c) its product has, and what thread tid of nth runs of it (any thread may
// start late or not at all, as long as thread 0 runs).
int64_t grad_workspace_bytes(const GradArgs* t, int64_t* zeroed);
int grad_items(const GradArgs* t);
void grad_matmul(const GradArgs* t, void* ws, int tid, int nth);
}  // namespace amx

// Implementations of one instruction set.
struct Isa {
  const char* name;
  int lanes;  // floats per vector: hidden units per packed panel
  // Bytes of workspace one call needs (packed weights, state buffers), given nthreads; the
  // first *zeroed of them must be zero when the call starts (the rest it writes before reading).
  int64_t (*workspace_bytes)(const SeqArgs* a, int nthreads, int backward, int64_t* zeroed);
  // What thread `tid` of `nthreads` runs; all threads share the zeroed workspace `ws`, and
  // share the work through it (rnn_impl.inc, run_phases): any thread may start late or not at
  // all, as long as thread 0 runs.
  void (*forward)(const SeqArgs* a, void* ws, int tid, int nthreads);
  void (*backward)(const SeqArgs* a, void* ws, int tid, int nthreads);
};

// Null where the compiler or the CPU lacks the instruction set.
const Isa* isa_avx512();  // AVX-512 F/BW/DQ/VL; bf16 dot products where the CPU has AVX512-BF16
const Isa* isa_avx2();    // AVX2 + FMA

}  // namespace jaxrnn

#endif  // JAXRNN_KERNELS_RNN_COMMON_H_
