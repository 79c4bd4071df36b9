// XLA FFI handlers of the jaxrnn sequence kernels (typed FFI, CPU platform), the thread team
// that runs them, and the choice of instruction set. Built at `pip install` (setup.py) against
// the FFI headers vendored next to this file (those of the oldest jaxlib jaxrnn supports; the
// FFI's C ABI is versioned and newer runtimes accept handlers built against older headers).
//
// One call runs one direction of one layer over the whole sequence: threads have home slices
// of the hidden units for all steps and share each step's work through counters in the
// workspace (rnn_impl.inc). The team is this library's own (the caller plus persistent
// workers), sized by the CPUs this process may run on.
#define PY_SSIZE_T_CLEAN
#include <Python.h>  // first, as Python asks; only for PyInit__rnn at the end
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "rnn_common.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace jaxrnn {

void avx512_use_bf16(int dot, int amx);

namespace {

// ---------------------------------------------------------------------------------------------
// Configuration (tests switch instruction sets and thread counts through jaxrnn_configure).

std::atomic<int> g_isa_choice{0};   // 0 best available, 1 AVX-512, 2 AVX2
std::atomic<int> g_threads{0};      // 0: the CPUs this process may run on
std::atomic<int> g_bf16_dot{1};     // use AVX512-BF16 dot products where the CPU has them
std::atomic<int> g_amx{1};          // and AMX tiles for them where it has those
std::atomic<int> g_hoist{0};        // SeqArgs::hoist: 0 where it pays, 1 always, 2 never

const Isa* chosen_isa() {
  int choice = g_isa_choice.load();
  const Isa* isa = nullptr;
  if (choice == 0 || choice == 1) isa = isa_avx512();
  if (isa) {
    avx512_use_bf16(g_bf16_dot.load(), g_amx.load());
    return isa;
  }
  if (choice == 1) return nullptr;
  return isa_avx2();
}

int usable_cpus() {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  unsigned n = std::thread::hardware_concurrency();
  return n ? (int)n : 1;
}

int team_size() {
  int n = g_threads.load();
  return n > 0 ? n : usable_cpus();
}

// ---------------------------------------------------------------------------------------------
// The team: the calling thread is member 0; workers 1..n-1 wait for jobs.

// Pause loops (about 0.1 ms) before a waiting thread yields its core: longer than one step's
// work at the sizes the kernels are for, short enough not to hold a core another thread needs.
constexpr int kSpins = 2000;

// What each member runs: fn(args, ws, tid, nth).
typedef void (*JobFn)(const void* args, void* ws, int tid, int nth);

struct Job {
  JobFn fn;
  const void* args;
  void* ws;
  int nth;
};

class Team {
 public:
  explicit Team(int workers) {
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this, i] { Loop(i + 1); });
    for (auto& t : threads_) t.detach();
  }
  int size() const { return (int)threads_.size() + 1; }

  // Runs job on nth <= size() members, the caller included; returns when all are done.
  void Run(const Job& job) {
    job_ = job;
    pending_.store(job.nth - 1, std::memory_order_release);
    {
      std::lock_guard<std::mutex> lock(mu_);
      generation_.fetch_add(1, std::memory_order_acq_rel);
    }
    cv_.notify_all();
    job.fn(job.args, job.ws, 0, job.nth);
    for (int spin = 0; pending_.load(std::memory_order_acquire) != 0; ++spin) {
      if (spin < kSpins) {
        _mm_pause();
      } else {
        sched_yield();
      }
    }
  }

 private:
  void Loop(int tid) {
    uint64_t seen = 0;
    for (;;) {
      for (int spin = 0; generation_.load(std::memory_order_acquire) == seen; ++spin) {
        if (spin < kSpins) {
          _mm_pause();
          continue;
        }
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return generation_.load() != seen; });
      }
      seen = generation_.load(std::memory_order_acquire);
      Job job = job_;
      if (tid < job.nth) {
        job.fn(job.args, job.ws, tid, job.nth);
        pending_.fetch_sub(1, std::memory_order_acq_rel);
      }
    }
  }

  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  Job job_{};
};

// One team per process, rebuilt at its size changes and after fork() (whose child has only the
// forking thread). Leaked on purpose: its workers are detached and live until the process ends.
std::mutex g_team_mu;   // held while a call uses the team
Team* g_team = nullptr;

void forget_team_after_fork() {
  g_team = nullptr;  // the child keeps the parent's workspace (its memory was copied)
  new (&g_team_mu) std::mutex();
}

struct AtFork {
  AtFork() { pthread_atfork(nullptr, nullptr, forget_team_after_fork); }
} g_at_fork;

// The workspace of the call holding g_team_mu: kept between calls and grown as needed, so a
// training loop does not map, fault in and unmap megabytes of fresh pages at every call.
void* g_workspace = nullptr;
size_t g_workspace_bytes = 0;

void* workspace(size_t bytes) {
  if (bytes > g_workspace_bytes) {
    free(g_workspace);
    size_t grown = std::max(bytes, g_workspace_bytes + g_workspace_bytes / 2);
    g_workspace = aligned_alloc(64, (grown + 63) / 64 * 64);
    g_workspace_bytes = g_workspace ? grown : 0;
    if (!g_workspace) throw std::bad_alloc();
  }
  return g_workspace;
}

// Runs fn on nth members of the team (at most its size), with the shared workspace of
// bytes(nth, &zeroed) bytes, the first zeroed of them zero. Calls that XLA runs at the same
// time (e.g. the two directions of a bidirectional layer) take turns: each uses every core,
// and no more threads spin than there are cores.
template <class Bytes>
void run_job(JobFn fn, const void* args, int nth, Bytes&& bytes) {
  std::unique_lock<std::mutex> lock(g_team_mu);
  nth = std::max(1, std::min(team_size(), nth));
  if (nth > 1 && (!g_team || g_team->size() < nth)) g_team = new Team(team_size() - 1);
  if (nth > 1) nth = std::min(nth, g_team->size());
  int64_t zeroed = 0;
  void* ws = workspace((size_t)bytes(nth, &zeroed));
  memset(ws, 0, (size_t)zeroed);
  if (nth == 1) {
    fn(args, ws, 0, 1);
  } else {
    g_team->Run(Job{fn, args, ws, nth});
  }
}

// One direction of a layer: a SeqArgs and the kernel that runs it.
struct SeqJob {
  const SeqArgs* a;
  void (*kernel)(const SeqArgs*, void*, int, int);
};

void run_seq_job(const void* job, void* ws, int tid, int nth) {
  const SeqJob* j = (const SeqJob*)job;
  j->kernel(j->a, ws, tid, nth);
}

// Runs the forward or backward kernel over the team, a member per panel of hidden units at most.
void run_team(const SeqArgs& a, const Isa* isa, int backward) {
  SeqJob job{&a, backward ? isa->backward : isa->forward};
  int panels = (a.H + isa->lanes - 1) / isa->lanes;
  run_job(run_seq_job, &job, panels, [&](int nth, int64_t* zeroed) {
    return isa->workspace_bytes(&a, nth, backward, zeroed);
  });
}

// ---------------------------------------------------------------------------------------------
// Shape checks and handlers.

int64_t dim(const ffi::AnyBuffer& x, int i) { return x.dimensions()[i]; }

ffi::Error bad(const std::string& what) { return ffi::Error::InvalidArgument("jaxrnn kernel: " + what); }

bool has_shape(const ffi::AnyBuffer& x, std::initializer_list<int64_t> shape) {
  auto d = x.dimensions();
  if (d.size() != shape.size()) return false;
  size_t i = 0;
  for (int64_t s : shape)
    if (d[i++] != s) return false;
  return true;
}

bool same_shape(const ffi::AnyBuffer& x, const ffi::AnyBuffer& y) {
  auto a = x.dimensions(), b = y.dimensions();
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
}

// Reads T, B, I from x ((T, B, I), or (B, T, I) batch-major) and H from w_hh (H, G*H), and
// checks the weights' shapes and dtypes: float32 x and weights, or bfloat16 x (the bf16
// matmuls) with bfloat16 weights, or float32 ones that the kernel rounds (SeqArgs::w_f32).
ffi::Error sizes(const ffi::AnyBuffer& x, const ffi::AnyBuffer& w_ih, const ffi::AnyBuffer& w_hh,
                 int G, SeqArgs* a) {
  if (x.dimensions().size() != 3 || w_ih.dimensions().size() != 2 || w_hh.dimensions().size() != 2)
    return bad("expected x (T, B, I), w_ih (I, G*H) and w_hh (H, G*H)");
  a->T = (int)dim(x, a->batch_major ? 1 : 0);
  a->B = (int)dim(x, a->batch_major ? 0 : 1);
  a->I = (int)dim(x, 2);
  a->H = (int)dim(w_hh, 0);
  if (dim(w_hh, 1) != (int64_t)G * a->H || !has_shape(w_ih, {a->I, (int64_t)G * a->H}))
    return bad("w_ih or w_hh disagrees with x's input size or w_hh's hidden size");
  auto type = w_hh.element_type(), x_type = x.element_type();
  if (type != ffi::DataType::BF16 && type != ffi::DataType::F32)
    return bad("the weights must be float32 or bfloat16");
  if (w_ih.element_type() != type) return bad("w_ih and w_hh must have one dtype");
  if (x_type != ffi::DataType::BF16 && x_type != ffi::DataType::F32)
    return bad("x must be float32 or bfloat16");
  if (x_type == ffi::DataType::F32 && type != ffi::DataType::F32)
    return bad("float32 x needs float32 weights");
  a->bf16 = x_type == ffi::DataType::BF16;
  a->w_f32 = a->bf16 && type == ffi::DataType::F32;
  if (a->bf16 && a->I % 2) return bad("bfloat16 x needs an even input size (pad it)");
  return ffi::Error::Success();
}

// T, B from a (T, B, H) sequence array, H from w_hh, for the backward handlers; bf16: whether
// the forward pass's matmuls took bf16 operands (then float32 w_hh is rounded as it is packed).
ffi::Error backward_sizes(const ffi::AnyBuffer& seq, const ffi::AnyBuffer& w_hh, int G,
                          int32_t bf16, SeqArgs* a) {
  if (seq.dimensions().size() != 3 || w_hh.dimensions().size() != 2)
    return bad("expected a (T, B, H) sequence array and w_hh (H, G*H)");
  a->T = (int)dim(seq, a->batch_major ? 1 : 0);
  a->B = (int)dim(seq, a->batch_major ? 0 : 1);
  a->H = (int)dim(w_hh, 0);
  if (dim(w_hh, 1) != (int64_t)G * a->H) return bad("w_hh is not (H, G*H)");
  auto type = w_hh.element_type();
  if (type != ffi::DataType::BF16 && type != ffi::DataType::F32)
    return bad("w_hh must be float32 or bfloat16");
  if (type == ffi::DataType::BF16 && !bf16) return bad("bfloat16 w_hh needs bf16=1");
  a->bf16 = bf16 != 0;
  a->w_f32 = a->bf16 && type == ffi::DataType::F32;
  return ffi::Error::Success();
}

template <class B>
float* f32(B& x) {
  return reinterpret_cast<float*>(x.untyped_data());
}

// Checks each carry is (B, H) and lengths (B,) within [0, T], and points a->lengths at it.
ffi::Error check_state(SeqArgs* a, std::initializer_list<const ffi::AnyBuffer*> states,
                       const ffi::AnyBuffer& lengths) {
  for (const ffi::AnyBuffer* s : states)
    if (!has_shape(*s, {a->B, a->H})) return bad("a carry is not (B, H)");
  if (!has_shape(lengths, {a->B})) return bad("lengths is not (B,)");
  const int32_t* len = reinterpret_cast<const int32_t*>(lengths.untyped_data());
  for (int b = 0; b < a->B; ++b)
    if (len[b] < 0 || len[b] > a->T) return bad("lengths outside [0, T]");
  a->lengths = len;
  return ffi::Error::Success();
}

// The fields every handler sets first: the cell, the direction and the layout.
SeqArgs header(int cell, int32_t reverse, int32_t batch_major) {
  SeqArgs a{};
  a.cell = cell;
  a.reverse = reverse;
  a.batch_major = batch_major;
  a.hoist = g_hoist.load();
  return a;
}

// The buffer of a result that XLA aliases to an operand (input_output_aliases), which the
// kernel reads and then writes over: XLA passes the operand's own buffer; were it another, the
// operand is copied into it first.
float* in_place(ffi::AnyBuffer& in, ffi::Result<ffi::AnyBuffer>& out) {
  float* o = f32(*out);
  if (o != f32(in)) memcpy(o, in.untyped_data(), in.size_bytes());
  return o;
}

// An empty sequence or batch: each (B, H) carry, or its cotangent, passes through unchanged.
void pass_through(const SeqArgs& a, std::initializer_list<std::pair<float*, const float*>> pairs) {
  if (a.T != 0 && a.B != 0) return;
  for (const auto& [to, from] : pairs) memcpy(to, from, sizeof(float) * a.B * a.H);
}

ffi::Error run(const SeqArgs& a, int backward) {
  const Isa* isa = chosen_isa();
  if (!isa) return ffi::Error::Internal("jaxrnn kernel: this CPU has neither AVX2+FMA nor AVX-512");
  if (a.T == 0 || a.B == 0) return ffi::Error::Success();
  try {
    run_team(a, isa, backward);
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("jaxrnn kernel: ") + e.what());
  }
  return ffi::Error::Success();
}

ffi::Error LstmForward(ffi::AnyBuffer x, ffi::AnyBuffer w_ih, ffi::AnyBuffer w_hh,
                       ffi::AnyBuffer b, ffi::AnyBuffer h0, ffi::AnyBuffer c0,
                       ffi::AnyBuffer lengths, int32_t reverse, int32_t train,
                       int32_t batch_major, ffi::Result<ffi::AnyBuffer> ys,
                       ffi::Result<ffi::AnyBuffer> hn, ffi::Result<ffi::AnyBuffer> cn,
                       ffi::Result<ffi::AnyBuffer> acts, ffi::Result<ffi::AnyBuffer> cs) {
  SeqArgs a = header(kLstm, reverse, batch_major);
  if (auto e = sizes(x, w_ih, w_hh, 4, &a); e.failure()) return e;
  if (auto e = check_state(&a, {&h0, &c0}, lengths); e.failure()) return e;
  if (!has_shape(b, {4 * (int64_t)a.H})) return bad("b is not (4H,)");
  a.x = x.untyped_data();
  a.w_ih = w_ih.untyped_data();
  a.w_hh = w_hh.untyped_data();
  a.b = f32(b);
  a.h0 = f32(h0);
  a.c0 = f32(c0);
  a.ys = f32(*ys);
  a.hn = f32(*hn);
  a.cn = f32(*cn);
  a.acts = train ? f32(*acts) : nullptr;
  a.cs = train ? f32(*cs) : nullptr;
  pass_through(a, {{a.hn, a.h0}, {a.cn, a.c0}});
  return run(a, 0);
}

ffi::Error LstmBackward(ffi::AnyBuffer acts, ffi::AnyBuffer cs, ffi::AnyBuffer h0,
                        ffi::AnyBuffer c0, ffi::AnyBuffer w_hh, ffi::AnyBuffer lengths,
                        ffi::AnyBuffer dys, ffi::AnyBuffer dhn, ffi::AnyBuffer dcn,
                        int32_t reverse, int32_t batch_major, int32_t bf16,
                        ffi::Result<ffi::AnyBuffer> dg, ffi::Result<ffi::AnyBuffer> hprev,
                        ffi::Result<ffi::AnyBuffer> dh0, ffi::Result<ffi::AnyBuffer> dc0) {
  SeqArgs a = header(kLstm, reverse, batch_major);
  if (auto e = backward_sizes(cs, w_hh, 4, bf16, &a); e.failure()) return e;
  if (auto e = check_state(&a, {&h0, &c0, &dhn, &dcn}, lengths); e.failure()) return e;
  if (!same_shape(*hprev, cs)) return bad("hprev is not shaped as cs");
  a.w_hh = w_hh.untyped_data();
  a.acts = f32(acts);
  a.cs = in_place(cs, hprev);  // h_{t-1} of each step is written over the cell states
  a.h0 = f32(h0);
  a.c0 = f32(c0);
  a.dys = f32(dys);
  a.dhn = f32(dhn);
  a.dcn = f32(dcn);
  a.dg = f32(*dg);
  a.dh0 = f32(*dh0);
  a.dc0 = f32(*dc0);
  pass_through(a, {{a.dh0, a.dhn}, {a.dc0, a.dcn}});
  return run(a, 1);
}

ffi::Error GruForward(ffi::AnyBuffer x, ffi::AnyBuffer w_ih, ffi::AnyBuffer w_hh,
                      ffi::AnyBuffer b_ih, ffi::AnyBuffer b_hh, ffi::AnyBuffer h0,
                      ffi::AnyBuffer lengths, int32_t reverse, int32_t reset_after,
                      int32_t train, int32_t batch_major, ffi::Result<ffi::AnyBuffer> ys,
                      ffi::Result<ffi::AnyBuffer> hn, ffi::Result<ffi::AnyBuffer> acts,
                      ffi::Result<ffi::AnyBuffer> hns) {
  SeqArgs a = header(reset_after ? kGruAfter : kGruBefore, reverse, batch_major);
  if (auto e = sizes(x, w_ih, w_hh, 3, &a); e.failure()) return e;
  if (auto e = check_state(&a, {&h0}, lengths); e.failure()) return e;
  if (!has_shape(b_ih, {3 * (int64_t)a.H}) || !has_shape(b_hh, {3 * (int64_t)a.H}))
    return bad("b_ih or b_hh is not (3H,)");
  a.x = x.untyped_data();
  a.w_ih = w_ih.untyped_data();
  a.w_hh = w_hh.untyped_data();
  a.b = f32(b_ih);
  a.b_hh = f32(b_hh);
  a.h0 = f32(h0);
  a.ys = f32(*ys);
  a.hn = f32(*hn);
  a.acts = train ? f32(*acts) : nullptr;
  a.cs = train && reset_after ? f32(*hns) : nullptr;
  pass_through(a, {{a.hn, a.h0}});
  return run(a, 0);
}

ffi::Error GruBackward(ffi::AnyBuffer acts, ffi::AnyBuffer hns, ffi::AnyBuffer ys,
                       ffi::AnyBuffer h0, ffi::AnyBuffer w_hh, ffi::AnyBuffer lengths,
                       ffi::AnyBuffer dys, ffi::AnyBuffer dhn, int32_t reverse,
                       int32_t reset_after, int32_t batch_major, int32_t bf16,
                       ffi::Result<ffi::AnyBuffer> dg, ffi::Result<ffi::AnyBuffer> aux,
                       ffi::Result<ffi::AnyBuffer> hprev, ffi::Result<ffi::AnyBuffer> dh0) {
  SeqArgs a = header(reset_after ? kGruAfter : kGruBefore, reverse, batch_major);
  if (auto e = backward_sizes(ys, w_hh, 3, bf16, &a); e.failure()) return e;
  if (auto e = check_state(&a, {&h0, &dhn}, lengths); e.failure()) return e;
  if (!same_shape(*hprev, ys)) return bad("hprev is not shaped as ys");
  a.w_hh = w_hh.untyped_data();
  a.acts = f32(acts);
  a.cs = reset_after ? f32(hns) : nullptr;
  a.ys = in_place(ys, hprev);  // h_{t-1} of each step is written over the outputs
  a.h0 = f32(h0);
  a.dys = f32(dys);
  a.dhn = f32(dhn);
  a.dg = f32(*dg);
  a.gru_aux = f32(*aux);  // dpn (reset_after) or r * h
  a.dh0 = f32(*dh0);
  pass_through(a, {{a.dh0, a.dhn}});
  return run(a, 1);
}

// Whether bf16 matmuls run on AMX tiles here and now (jaxrnn_kernel_configure may turn them off).
int amx_on() {
  const Isa* isa = chosen_isa();
  return isa && isa->lanes == 16 && g_bf16_dot.load() && g_amx.load() && amx::supported();
}

// The products without the tiles, for a call traced while they were on and run after a test
// turned them off (jaxrnn_kernel_configure): the same products, row by row, slowly.
void grad_without_tiles(const GradArgs& t) {
  std::vector<float> g(t.N);
  if (t.kind == kWeightGrad) {  // c (K, N) = a^T g
    memset(t.c, 0, sizeof(float) * t.K * t.N);
    for (int r = 0; r < t.R; ++r) {
      for (int n = 0; n < t.N; ++n) g[n] = bf16_to_f32(f32_to_bf16(t.g[(int64_t)r * t.N + n]));
      for (int k = 0; k < t.K; ++k) {
        const float a = bf16_to_f32(t.a[(int64_t)r * t.K + k]);
        float* c = t.c + (int64_t)k * t.N;
        for (int n = 0; n < t.N; ++n) c[n] += a * g[n];
      }
    }
    return;
  }
  for (int r = 0; r < t.R; ++r) {  // c (R, K) = g a^T
    for (int n = 0; n < t.N; ++n) g[n] = bf16_to_f32(f32_to_bf16(t.g[(int64_t)r * t.N + n]));
    for (int k = 0; k < t.K; ++k) {
      float sum = 0;
      for (int n = 0; n < t.N; ++n) sum += g[n] * bf16_to_f32(t.a[(int64_t)k * t.N + n]);
      t.c[(int64_t)r * t.K + k] = sum;
    }
  }
}

void run_grad_job(const void* t, void* ws, int tid, int nth) {
  amx::grad_matmul((const GradArgs*)t, ws, tid, nth);
}

ffi::Error grad_matmul(const GradArgs& t) {
  if ((int64_t)t.K * (t.kind == kWeightGrad ? t.N : t.R) == 0) return ffi::Error::Success();
  if ((t.kind == kWeightGrad ? t.R : t.N) == 0 || !amx_on()) {
    grad_without_tiles(t);
    return ffi::Error::Success();
  }
  try {  // as many members as the product has items (blocks of c), at most the team
    run_job(run_grad_job, &t, amx::grad_items(&t), [&](int, int64_t* zeroed) {
      return amx::grad_workspace_bytes(&t, zeroed);
    });
  } catch (const std::exception& e) {
    return ffi::Error::Internal(std::string("jaxrnn kernel: ") + e.what());
  }
  return ffi::Error::Success();
}

bool bf16_and_f32(const ffi::AnyBuffer& a, const ffi::AnyBuffer& g) {
  return a.element_type() == ffi::DataType::BF16 && g.element_type() == ffi::DataType::F32 &&
         a.dimensions().size() == 2 && g.dimensions().size() == 2;
}

// c = a^T g: a (R, K) bfloat16, g (R, N) float32 (rounded to bf16), c (K, N) float32.
ffi::Error TnMatmul(ffi::AnyBuffer a, ffi::AnyBuffer g, ffi::Result<ffi::AnyBuffer> c) {
  if (!bf16_and_f32(a, g) || dim(a, 0) != dim(g, 0))
    return bad("expected a (R, K) bfloat16 and g (R, N) float32");
  if (!has_shape(*c, {dim(a, 1), dim(g, 1)})) return bad("the result is not (K, N)");
  return grad_matmul(GradArgs{kWeightGrad, (int)dim(a, 0), (int)dim(a, 1), (int)dim(g, 1),
                              reinterpret_cast<const unsigned short*>(a.untyped_data()), f32(g),
                              f32(*c)});
}

// c = g a^T: g (R, N) float32 (rounded to bf16), a (K, N) bfloat16, c (R, K) float32.
ffi::Error NtMatmul(ffi::AnyBuffer g, ffi::AnyBuffer a, ffi::Result<ffi::AnyBuffer> c) {
  if (!bf16_and_f32(a, g) || dim(a, 1) != dim(g, 1))
    return bad("expected g (R, N) float32 and a (K, N) bfloat16");
  if (!has_shape(*c, {dim(g, 0), dim(a, 0)})) return bad("the result is not (R, K)");
  return grad_matmul(GradArgs{kInputGrad, (int)dim(g, 0), (int)dim(a, 0), (int)dim(g, 1),
                              reinterpret_cast<const unsigned short*>(a.untyped_data()), f32(g),
                              f32(*c)});
}

}  // namespace
}  // namespace jaxrnn

#define EXPORT extern "C" __attribute__((visibility("default")))

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxrnn_lstm_forward, jaxrnn::LstmForward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Attr<int32_t>("reverse")
                                  .Attr<int32_t>("train")
                                  .Attr<int32_t>("batch_major")
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxrnn_lstm_backward, jaxrnn::LstmBackward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Attr<int32_t>("reverse")
                                  .Attr<int32_t>("batch_major")
                                  .Attr<int32_t>("bf16")
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxrnn_gru_forward, jaxrnn::GruForward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Attr<int32_t>("reverse")
                                  .Attr<int32_t>("reset_after")
                                  .Attr<int32_t>("train")
                                  .Attr<int32_t>("batch_major")
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxrnn_gru_backward, jaxrnn::GruBackward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Attr<int32_t>("reverse")
                                  .Attr<int32_t>("reset_after")
                                  .Attr<int32_t>("batch_major")
                                  .Attr<int32_t>("bf16")
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxrnn_tn_matmul, jaxrnn::TnMatmul,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxrnn_nt_matmul, jaxrnn::NtMatmul,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>());

// Introspection and test switches, called through ctypes.
// The targets' calling convention; _library.py's ABI must equal it (2: the GRU saves
// h W_hn + b_hn apart from r, z, n, and its backward takes them as a second operand; 3: the
// GRU backward returns r * h too; 4: AMX tiles, jaxrnn_kernel_amx and the amx switch of
// jaxrnn_kernel_configure, the GRU backward's dpn and r * h are one result, and the hoist
// switch; 5: jaxrnn_tn_matmul and jaxrnn_nt_matmul; 6: float32 weights with bf16 x, rounded
// by the kernels, and the backward handlers' bf16 attribute; 7: the backward handlers return
// h_{t-1} of every step, written over the LSTM's cell states or the GRU's outputs, and the
// LSTM's takes h0).
EXPORT int jaxrnn_kernel_abi() { return 7; }

EXPORT const char* jaxrnn_kernel_isa() {
  const jaxrnn::Isa* isa = jaxrnn::chosen_isa();
  return isa ? isa->name : "";
}

EXPORT int jaxrnn_kernel_bf16_dot() {
  const jaxrnn::Isa* isa = jaxrnn::chosen_isa();
  return isa && isa->lanes == 16 && __builtin_cpu_supports("avx512bf16") && jaxrnn::g_bf16_dot.load();
}

EXPORT int jaxrnn_kernel_amx() { return jaxrnn::amx_on(); }

EXPORT int jaxrnn_kernel_threads() { return jaxrnn::team_size(); }

// isa: 0 best, 1 AVX-512, 2 AVX2; bf16_dot, amx: 0/1; hoist: 0 where it pays, 1 always,
// 2 never; threads: 0 for the usable CPUs.
EXPORT void jaxrnn_kernel_configure(int isa, int bf16_dot, int amx, int hoist, int threads) {
  jaxrnn::g_isa_choice.store(isa);
  jaxrnn::g_hoist.store(hoist);
  jaxrnn::g_bf16_dot.store(bf16_dot);
  jaxrnn::g_amx.store(amx);
  jaxrnn::g_threads.store(threads);
}

// The library is built as an extension module so that setuptools compiles it, and tools that
// import every module of the package (pkgutil, documentation builders) find one: importing it
// gives an empty module. jaxrnn itself loads the library with ctypes.
static PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_rnn",
                              "jaxrnn's native kernels, loaded with ctypes by jaxrnn.kernels.",
                              -1, nullptr, nullptr, nullptr, nullptr, nullptr};

EXPORT PyObject* PyInit__rnn(void) { return PyModule_Create(&kModule); }
