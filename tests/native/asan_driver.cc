// Drives the native kernels (jaxrnn/kernels/_src) through every configuration, forward and
// backward, over buffers of exactly the sizes the FFI handlers pass, with 1 to 3 threads:
// built with -fsanitize=address,undefined by tests/test_kernels.py, any out-of-bounds access,
// use of freed memory or undefined behaviour in the kernels stops it with a report.
// Configurations: both instruction sets, bf16 dot products off, on, and on AMX tiles, five sizes (hidden sizes
// that are and are not multiples of the vector widths, B = T = H = 1), the three cells, f32 and
// bf16, both directions, both layouts, random lengths in [0, T] (zero included), the input
// projection hoisted and not.
#include "rnn_common.h"
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>
using namespace jaxrnn;
namespace jaxrnn { void avx512_use_bf16(int dot, int amx); }
template <class T> static std::vector<T>* buf(size_t n, T v) { return new std::vector<T>(n, v); }
static unsigned short tobf(float f) { unsigned u; memcpy(&u, &f, 4); return (unsigned short)((u + 0x7fff + ((u >> 16) & 1)) >> 16); }
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
    a.lengths = len.data(); a.w_ih = bf16 ? (void*)wib.data() : (void*)wif.data(); a.w_hh = bf16 ? (void*)wb.data() : (void*)wf.data();
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
  printf("asan driver: %d configurations, forward and backward, no error\n", runs);
}
