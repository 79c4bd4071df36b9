// Drives the native kernels (jaxrnn/kernels/_src) through every configuration, forward and
// backward, over buffers of exactly the sizes the FFI handlers pass, with 1 to 3 threads:
// built with -fsanitize=address,undefined by tests/test_kernels.py, any out-of-bounds access,
// use of freed memory or undefined behaviour in the kernels stops it with a report.
// Configurations: both instruction sets, bf16 dot products off, on, and on AMX tiles, five sizes (hidden sizes
// that are and are not multiples of the vector widths, B = T = H = 1), the three cells, f32 and
// bf16 (with bf16 and with float32 weights), both directions, both layouts, random lengths in [0, T] (zero included), the input
// projection hoisted and not. Then, where the CPU has AMX, the GEMMs of the weight gradients
// and of dx on the tiles (amx::grad_matmul), at sizes that are and are not multiples of their
// tiles, against a plain loop.
#include "rnn_common.h"
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>
using namespace jaxrnn;
namespace jaxrnn { void avx512_use_bf16(int dot, int amx); }
template <class T> static std::vector<T>* buf(size_t n, T v) { return new std::vector<T>(n, v); }
static unsigned short tobf(float f) { unsigned u; memcpy(&u, &f, 4); return (unsigned short)((u + 0x7fff + ((u >> 16) & 1)) >> 16); }
static float frombf(unsigned short h) { unsigned u = (unsigned)h << 16; float f; memcpy(&f, &u, 4); return f; }
// The backward GEMM of kind on the tiles with nth threads over exactly sized buffers, against
// a plain loop: c (K, N) = a^T g with a (R, K), or c (R, K) = g a^T with a (K, N).
static bool check_grad(int kind, int R, int K, int N, int nth) {
  bool weight = kind == kWeightGrad;
  std::vector<unsigned short> A((size_t)(weight ? R : N) * K); std::vector<float> G((size_t)R * N), C((size_t)K * (weight ? N : R));
  for (auto& v : A) v = tobf(rand() / (float)RAND_MAX - 0.5f);
  for (auto& v : G) v = rand() / (float)RAND_MAX - 0.5f;
  GradArgs t{kind, R, K, N, A.data(), G.data(), C.data()};
  int64_t zeroed = 0, bytes = amx::grad_workspace_bytes(&t, &zeroed);
  std::vector<char> ws(bytes + 64); char* base = ws.data() + ((64 - (uintptr_t)ws.data() % 64) % 64);
  memset(base, 0, (size_t)zeroed);
  memset(base + zeroed, 0xff, (size_t)(bytes - zeroed));  // NaNs: written before they are read
  std::vector<std::thread> th;
  for (int i = 1; i < nth; ++i) th.emplace_back([&, i] { amx::grad_matmul(&t, base, i, nth); });
  amx::grad_matmul(&t, base, 0, nth);
  for (auto& x : th) x.join();
  int rows = weight ? K : R, cols = weight ? N : K, inner = weight ? R : N;
  for (int i = 0; i < rows; ++i) for (int j = 0; j < cols; ++j) {
    double want = 0;
    for (int q = 0; q < inner; ++q) {
      float g = frombf(tobf(weight ? G[(size_t)q * N + j] : G[(size_t)i * N + q]));
      want += (double)g * frombf(weight ? A[(size_t)q * K + i] : A[(size_t)j * N + q]);
    }
    if (!(std::fabs(C[(size_t)i * cols + j] - want) <= 1e-5 * (1 + std::fabs(want)) * inner)) {
      printf("grad_matmul kind %d, %dx%dx%d, %d threads: c[%d, %d] = %g, expected %g\n", kind, R, K, N, nth, i, j, C[(size_t)i * cols + j], want);
      return false;
    }
  }
  return true;
}
int main() {
  int sizes[][4] = {{1, 1, 2, 1}, {3, 5, 4, 37}, {2, 4, 6, 16}, {5, 3, 2, 17}, {4, 6, 8, 33}};
  int runs = 0;
  for (int isa_i = 0; isa_i < 2; ++isa_i)
  for (int dot = 0; dot < 3; ++dot)
  for (auto& sz : sizes) for (int cell = 0; cell < 3; ++cell) for (int bf16 = 0; bf16 < 2; ++bf16)
  for (int rev = 0; rev < 2; ++rev) for (int bm = 0; bm < 2; ++bm) for (int nth = 1; nth <= 3; ++nth) {
    const Isa* isa = isa_i ? isa_avx2() : isa_avx512();
    if (!isa) continue;
    avx512_use_bf16(dot > 0, dot > 1);
    int B = sz[0], T = sz[1], I = sz[2], H = sz[3], G = cell == 0 ? 4 : 3;
    std::vector<float> wf((size_t)H * G * H), wif((size_t)I * G * H), x((size_t)T * B * I), b(G * H, 0.1f), bhh(3 * H, 0.2f);
    for (auto& v : wf) v = rand() / (float)RAND_MAX - 0.5f;
    for (auto& v : wif) v = rand() / (float)RAND_MAX - 0.5f;
    for (auto& v : x) v = rand() / (float)RAND_MAX - 0.5f;
    std::vector<unsigned short> wb(wf.size()), wib(wif.size()), xb(x.size());
    for (size_t i = 0; i < wf.size(); ++i) wb[i] = tobf(wf[i]);
    for (size_t i = 0; i < wif.size(); ++i) wib[i] = tobf(wif[i]);
    for (size_t i = 0; i < x.size(); ++i) xb[i] = tobf(x[i]);
    if (bf16 && I % 2) continue;
    std::vector<int> len(B); for (auto& l : len) l = rand() % (T + 1);
    std::vector<float> h0((size_t)B * H, 0.3f), c0((size_t)B * H, -0.2f), ys((size_t)T * B * H), hn((size_t)B * H), cn((size_t)B * H);
    std::vector<float> acts((size_t)T * B * G * H), cs((size_t)T * B * H), dys((size_t)T * B * H, 0.1f), dg((size_t)T * B * G * H), aux((size_t)T * B * H), dh0((size_t)B * H), dc0((size_t)B * H), dhn((size_t)B * H, 0.5f), dcn((size_t)B * H, 0.5f);
    SeqArgs a{}; a.cell = cell; a.T = T; a.B = B; a.H = H; a.I = I; a.reverse = rev; a.batch_major = bm; a.bf16 = bf16;
    a.hoist = 1 + runs % 2;  // the input projection hoisted before the loop, or fused into it
    a.w_f32 = bf16 && runs % 3 == 1;  // bf16 matmuls over float32 weights, rounded as packed
    bool wb16 = bf16 && !a.w_f32;
    a.lengths = len.data(); a.w_ih = wb16 ? (void*)wib.data() : (void*)wif.data(); a.w_hh = wb16 ? (void*)wb.data() : (void*)wf.data();
    a.b = b.data(); a.b_hh = cell ? bhh.data() : nullptr; a.x = bf16 ? (void*)xb.data() : (void*)x.data();
    a.h0 = h0.data(); a.c0 = cell ? nullptr : c0.data(); a.ys = ys.data(); a.hn = hn.data(); a.cn = cell ? nullptr : cn.data();
    a.acts = acts.data(); a.cs = cell == 2 ? nullptr : cs.data();
    // every other run, the cotangents overwrite the saved activations as jaxrnn's calls do
    bool in_place = runs % 2;
    for (int pass = 0; pass < 2; ++pass) {
      if (pass) { a.dys = dys.data(); a.dhn = dhn.data(); a.dcn = cell ? nullptr : dcn.data(); a.dg = in_place ? acts.data() : dg.data(); a.gru_aux = cell == 0 ? nullptr : (cell == 1 && in_place ? cs.data() : aux.data()); a.dh0 = dh0.data(); a.dc0 = cell ? nullptr : dc0.data(); }
      int panels = (H + isa->lanes - 1) / isa->lanes, n = nth < panels ? nth : panels;
      int64_t zeroed = 0, bytes = isa->workspace_bytes(&a, n, pass, &zeroed);
      std::vector<char> ws(bytes); char* base = ws.data() + ((64 - (uintptr_t)ws.data() % 64) % 64);
      // the workspace includes 64 bytes of slack for the alignment above; past its zeroed part
      // it holds NaNs, which must be written before they are read (the outputs stay finite)
      memset(base + zeroed, 0xff, (size_t)(bytes - 64 - zeroed));
      std::vector<std::thread> th;
      for (int t = 1; t < n; ++t) th.emplace_back([&, t] { (pass ? isa->backward : isa->forward)(&a, base, t, n); });
      (pass ? isa->backward : isa->forward)(&a, base, 0, n);
      for (auto& t : th) t.join();
      for (float v : ys) if (!(v == v)) { printf("NaN in ys: the kernel read workspace it had not written\n"); return 1; }
      if (pass) for (float v : dh0) if (!(v == v)) { printf("NaN in dh0\n"); return 1; }
    }
    ++runs;
  }
  if (amx::supported()) {
    int gemm_sizes[][3] = {{1, 1, 1}, {33, 17, 5}, {64, 32, 32}, {70, 40, 300}, {40, 260, 20}, {300, 20, 1100}, {1100, 48, 64}};
    for (int kind = 0; kind < 2; ++kind) for (auto& sz : gemm_sizes) for (int nth = 1; nth <= 3; ++nth) {
      if (!check_grad(kind, sz[0], sz[1], sz[2], nth)) return 1;
      ++runs;
    }
  }
  printf("asan driver: %d configurations, forward and backward, no error\n", runs);
}
