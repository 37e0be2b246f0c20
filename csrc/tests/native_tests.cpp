// Native tests (no Python): the C API on the fixture model against logits
// recorded by Python, 1 vs P threads bitwise, fresh-executor start-up stress,
// corrupt files giving errors, every compiled backend, no leak over 1,000
// load/run/free cycles per backend, tuning, the pure schedule as the executor realises it,
// the int8 conv kernels against the int8 reference, quantised nets against the rule.
// CI also runs it under ASan+UBSan (with LeakSanitizer) and TSan.
// Usage: nasrt_native_tests [DATA_DIR] [STRESS_CYCLES]
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "kernels/registry.h"
#include "nasrt/metadata_keys.h"
#include "nasrt/nasrt.h"
#include "runtime/executor.h"
#include "runtime/model.h"
#include "runtime/schedule.h"
#include "runtime/session.h"
#include "runtime/tune.h"
#include "tools/npy.h"

#ifndef NASRT_TEST_DATA
#define NASRT_TEST_DATA "tests/data"
#endif

static int failures = 0;
#define CHECK(cond, ...)                                          \
  do {                                                            \
    if (!(cond)) {                                                \
      ++failures;                                                 \
      std::fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                          \
      std::fprintf(stderr, "\n");                                 \
    }                                                             \
  } while (0)

// Sanitizer builds replace malloc: ask their allocator (mallinfo2 would see nothing).
// GCC defines __SANITIZE_*__, clang has __has_feature.
#if defined(__SANITIZE_ADDRESS__)
#define NASRT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NASRT_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define NASRT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define NASRT_TSAN 1
#endif
#endif
// The sanitizer runtimes' public interface (GCC ships no <sanitizer/*.h> headers).
#if defined(NASRT_ASAN) || defined(NASRT_TSAN)
extern "C" size_t __sanitizer_get_current_allocated_bytes(void);
#endif
#if defined(NASRT_ASAN)
extern "C" int __lsan_do_recoverable_leak_check(void);
#endif

// Heap bytes in use now (-1: unknown on this libc).
static long long heap_in_use() {
#if defined(NASRT_ASAN) || defined(NASRT_TSAN)
  return static_cast<long long>(__sanitizer_get_current_allocated_bytes());
#elif defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
  const struct mallinfo2 mi = mallinfo2();  // all arenas; mmapped chunks are in hblkhd
  return static_cast<long long>(mi.uordblks + mi.hblkhd);
#else
  return -1;
#endif
}

// Threads of this process (/proc/self/status), -1 if unavailable.
static long long threads_now() {
  std::ifstream f("/proc/self/status");
  for (std::string line; std::getline(f, line);)
    if (line.compare(0, 8, "Threads:") == 0) return std::atoll(line.c_str() + 8);
  return -1;
}

// kB of address space mapped (the sum of /proc/self/maps, -1 if unavailable): VmSize,
// except under qemu-user, which shows the guest's mappings here but its own VmSize.
static long long mapped_kb() {
  std::ifstream f("/proc/self/maps");
  if (!f) return -1;
  unsigned long long total = 0;
  for (std::string line; std::getline(f, line);) {
    unsigned long long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%llx-%llx", &lo, &hi) == 2 && hi > lo) total += hi - lo;
  }
  return static_cast<long long>(total / 1024);
}

static std::vector<std::string> compiled_backends() {
  std::vector<std::string> out;
  std::stringstream ss(nasrt_backends());
  for (std::string b; std::getline(ss, b, ',');) out.push_back(b);
  return out;
}

static std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// --- 9. The int8 executor: random quantised nets against a plain evaluation by the rule.
namespace q8 {

struct Rng {
  uint32_t s;
  uint32_t next() { return s ^= s << 13, s ^= s >> 17, s ^= s << 5; }
  int uniform(int lo, int hi) { return lo + static_cast<int>(next() % static_cast<uint32_t>(hi - lo + 1)); }
  float unit() { return static_cast<float>(next() >> 8) / 16777216.0f; }
};

// A tensor of the plain evaluation: u8 codes and/or float values, NHWC dense (the oracle's _T).
struct T {
  int c = 0, h = 0, w = 0;
  nasrt::ActQuant aq;
  std::vector<uint8_t> q;
  std::vector<float> f;
};

uint8_t quant(float x, const nasrt::ActQuant& a) {
  const float r = std::nearbyint(x / a.scale);
  return static_cast<uint8_t>(std::clamp(static_cast<long>(std::clamp(r, -1000.0f, 1000.0f)) + a.zero_point, 0L, 255L));
}
const std::vector<uint8_t>& Q(T& t) {
  if (t.q.empty())
    for (float v : t.f) t.q.push_back(quant(v, t.aq));
  return t.q;
}
const std::vector<float>& F(T& t) {
  if (t.f.empty())
    for (uint8_t v : t.q) t.f.push_back((static_cast<float>(v) - static_cast<float>(t.aq.zero_point)) * t.aq.scale);
  return t.f;
}
uint8_t requant(int32_t acc, float m, int zy, int lo) {
  return static_cast<uint8_t>(std::clamp(std::lrintf(static_cast<float>(acc) * m) + zy, static_cast<long>(lo), 255L));
}

T conv(const nasrt::ConvSpec& c, T& x) {
  const nasrt::ConvGeom g = nasrt::conv_geom(c, x.h, x.w);
  T y;
  y.c = c.out_c, y.h = g.out_h(), y.w = g.out_w(), y.aq = c.out_q;
  const size_t n = static_cast<size_t>(y.c) * y.h * y.w;
  if (c.precision == nasrt::Precision::Int8) {
    nasrt::Int8Conv q{x.aq.zero_point, c.out_q.zero_point, c.q.bias, std::vector<float>(c.out_c)};
    for (int o = 0; o < c.out_c; ++o) q.m[o] = (x.aq.scale * c.q.weight_scale[o]) / c.out_q.scale;
    const auto w = nasrt::oihw_to_ohwi(c.q.weight.data(), c.in_c / c.groups, c.kernel, 0, c.out_c);
    y.q.resize(n);
    nasrt::ref::conv_int8(g, q, w.data(), Q(x).data(), y.q.data());
  } else {
    const auto w = nasrt::oihw_to_ohwi(c.weight.data(), c.in_c / c.groups, c.kernel, 0, c.out_c);
    y.f.resize(n);
    nasrt::ref::conv(g, w.data(), c.bias.data(), F(x).data(), y.f.data());
  }
  return y;
}

// The residual add by the rule of docs/FORMATS.md section 6, written out: y = clamp(rne(float(qa -
// za) * (sa / sy) + float(qb - zb) * (sb / sy)) + zy, zy, 255). volatile: each product and the sum
// rounded to float32 on their own (no contraction into an FMA, whatever this file is built with).
uint8_t add_rule(uint8_t qa, const nasrt::ActQuant& a, uint8_t qb, const nasrt::ActQuant& b,
                 const nasrt::ActQuant& y) {
  const float ma = a.scale / y.scale, mb = b.scale / y.scale;
  volatile float pa = static_cast<float>(int{qa} - a.zero_point) * ma;
  volatile float pb = static_cast<float>(int{qb} - b.zero_point) * mb;
  volatile float v = pa + pb;
  const long r = std::lrintf(std::clamp(static_cast<float>(v), -1000.0f, 1000.0f));  // ties to even
  return static_cast<uint8_t>(std::clamp(r + y.zero_point, static_cast<long>(y.zero_point), 255L));
}

T residual_add(T& a, T& b, const nasrt::ActQuant& yq) {
  T y;
  y.c = a.c, y.h = a.h, y.w = a.w, y.aq = yq;
  const auto &qa = Q(a), &qb = Q(b);
  for (size_t i = 0; i < qa.size(); ++i) y.q.push_back(add_rule(qa[i], a.aq, qb[i], b.aq, yq));
  return y;
}

// Logits of the quantised net on one NCHW sample.
std::vector<float> evaluate(const nasrt::NetSpec& net, const float* x) {
  T in;
  in.c = net.in_c, in.h = net.in_h, in.w = net.in_w, in.aq = net.input_q;
  const size_t hw = static_cast<size_t>(in.h) * in.w;
  in.f.resize(hw * in.c);
  for (int c = 0; c < in.c; ++c)
    for (size_t p = 0; p < hw; ++p) in.f[p * in.c + c] = x[c * hw + p];
  for (const auto& c : net.stem) in = conv(c, in);
  const size_t P = net.paths.size();
  std::vector<T> cur(P, in);
  size_t s = 0;
  for (size_t l = 0; l < net.paths[0].size(); ++l) {
    for (size_t p = 0; p < P; ++p) {
      const nasrt::BlockSpec& blk = net.paths[p][l];
      T x = cur[p];
      for (const auto& c : blk.convs) cur[p] = conv(c, cur[p]);
      if (blk.residual) {
        T b = blk.shortcut ? conv(*blk.shortcut, x) : x;
        cur[p] = residual_add(cur[p], b, blk.add_q);
      }
    }
    if (s >= net.syncs.size() || net.syncs[s].after != static_cast<int>(l)) continue;
    const nasrt::SyncSpec& sy = net.syncs[s++];
    T m;
    m.c = cur[0].c, m.h = cur[0].h, m.w = cur[0].w;
    const size_t n = static_cast<size_t>(m.c) * m.h * m.w;
    if (sy.concat_conv) {  // the codes of the paths side by side, then the 1x1 conv
      T cat;
      cat.c = static_cast<int>(P) * m.c, cat.h = m.h, cat.w = m.w, cat.aq = cur[0].aq;
      cat.q.resize(n * P);
      for (size_t px = 0; px < n / m.c; ++px)
        for (size_t p = 0; p < P; ++p)
          for (int c = 0; c < m.c; ++c) cat.q[px * cat.c + p * m.c + c] = Q(cur[p])[px * m.c + c];
      m = conv(sy.conv, cat);
    } else {
      m.aq = sy.out_q;
      const float mul = cur[0].aq.scale / sy.out_q.scale;
      for (size_t i = 0; i < n; ++i) {
        int32_t acc = 0;
        for (size_t p = 0; p < P; ++p) acc += int32_t{Q(cur[p])[i]} - cur[0].aq.zero_point;
        m.q.push_back(requant(acc, mul, sy.out_q.zero_point, 0));
      }
    }
    cur.assign(P, m);
  }
  T h;
  h.c = static_cast<int>(P) * cur[0].c, h.h = h.w = 1, h.aq = net.features_q;
  for (size_t p = 0; p < P; ++p) {
    const int n = cur[p].h * cur[p].w;
    const float mul = cur[p].aq.scale / (static_cast<float>(n) * net.features_q.scale);
    for (int c = 0; c < cur[p].c; ++c) {
      int32_t acc = 0;
      for (int i = 0; i < n; ++i) acc += int32_t{Q(cur[p])[static_cast<size_t>(i) * cur[p].c + c]} - cur[p].aq.zero_point;
      h.q.push_back(requant(acc, mul, net.features_q.zero_point, 0));
    }
  }
  for (size_t i = 0; i < net.head.size(); ++i) {
    const nasrt::FcSpec& fc = net.head[i];
    const bool last = i + 1 == net.head.size();
    T y;
    y.c = fc.out, y.h = y.w = 1, y.aq = fc.out_q;
    if (fc.precision == nasrt::Precision::Int8) {
      for (int o = 0; o < fc.out; ++o) {
        int32_t acc = fc.q.bias[o];
        for (int k = 0; k < fc.in; ++k) acc += (int32_t{Q(h)[k]} - h.aq.zero_point) * fc.q.weight[static_cast<size_t>(o) * fc.in + k];
        const float sxw = h.aq.scale * fc.q.weight_scale[o];
        if (last) y.f.push_back(static_cast<float>(acc) * sxw);
        else y.q.push_back(requant(acc, sxw / fc.out_q.scale, fc.out_q.zero_point, fc.relu ? fc.out_q.zero_point : 0));
      }
    } else {
      y.f.resize(fc.out);
      nasrt::ref::fc(fc.in, fc.out, fc.relu, fc.weight.data(), fc.bias.data(), F(h).data(), y.f.data());
    }
    h = y;
  }
  return h.f;
}

// One layer's weights in `prec`: s8 in [-64, 64] (eligible for oneDNN on every ISA) with
// a scale per output, or float. sx: its input's scale, n: taps per output; out_q set so
// that the outputs spread over the codes.
template <typename L>
void weights(L& l, Rng& r, size_t size, int out, int n, float sx, nasrt::Precision prec, bool relu) {
  l.precision = prec;
  const float sw = 0.01f;
  const float spread = sx * sw * 64.0f * 100.0f * std::sqrt(static_cast<float>(n)) / 48.0f;
  l.out_q.scale = spread * (0.2f + r.unit());
  l.out_q.zero_point = relu ? 0 : r.uniform(0, 200);
  if (prec == nasrt::Precision::Int8) {
    for (size_t i = 0; i < size; ++i) l.q.weight.push_back(static_cast<int8_t>(r.uniform(-64, 64)));
    for (int o = 0; o < out; ++o) {
      l.q.weight_scale.push_back(sw * (0.5f + r.unit()));
      l.q.bias.push_back(r.uniform(-3000, 3000));
    }
  } else {
    for (size_t i = 0; i < size; ++i) l.weight.push_back(sw * static_cast<float>(r.uniform(-64, 64)));
    for (int o = 0; o < out; ++o) l.bias.push_back(sx * sw * static_cast<float>(r.uniform(-3000, 3000)));
  }
}

nasrt::ConvSpec conv_spec(Rng& r, const std::string& name, int in_c, int out_c, int k, int s,
                          int groups, float sx, nasrt::Precision prec) {
  nasrt::ConvSpec c;
  c.name = name, c.in_c = in_c, c.out_c = out_c, c.kernel = k, c.stride = s, c.groups = groups;
  c.relu = r.uniform(0, 3) != 0;
  weights(c, r, static_cast<size_t>(out_c) * (in_c / groups) * k * k, out_c, k * k * in_c / groups, sx, prec, c.relu);
  return c;
}

// A random quantised net: stem (fp32 or int8, or none), P paths of L layers of conv /
// sepconv blocks with strides, sum and conv1x1 syncs, hidden FCs int8 or fp32. residual: also
// dconv blocks, and about half the blocks residual (the identity where the shape allows, else a
// projection), their chain's last unit and projection linear with an asymmetric zero point.
// fp32: the same nets in float (not quantised, every layer fp32).
nasrt::NetSpec random_net(uint32_t seed, bool all_int8, bool residual = false, bool fp32 = false) {
  Rng r{seed * 2654435761u + 1};
  using nasrt::Precision;
  auto prec = [&](int fp32_in) {
    const bool i8 = all_int8 || r.uniform(0, fp32_in);
    return i8 && !fp32 ? Precision::Int8 : Precision::Fp32;
  };
  nasrt::NetSpec net;
  net.quantized = !fp32;
  net.in_c = 3, net.in_h = r.uniform(6, 12), net.in_w = r.uniform(6, 12);
  net.input_q = {0.02f + 0.01f * r.unit(), r.uniform(60, 190)};
  float sx = net.input_q.scale;
  int c = 3;
  if (r.uniform(0, 3)) {
    const int oc = r.uniform(4, 12);
    net.stem.push_back(conv_spec(r, "stem", 3, oc, 3, r.uniform(1, 2), 1, sx,
                                 all_int8 && !fp32 ? Precision::Int8 : Precision::Fp32));
    c = oc, sx = net.stem.back().out_q.scale;
  }
  const int P = r.uniform(2, 3), L = r.uniform(2, 3);
  net.paths.resize(P);
  for (int l = 0; l < L; ++l) {
    const int oc = r.uniform(4, 20), stride = r.uniform(0, 3) == 0 ? 2 : 1;
    const bool sync = l == L - 1 ? r.uniform(0, 1) : r.uniform(0, 2) != 0;
    const bool concat = sync && r.uniform(0, 1);
    nasrt::ActQuant merge_in{};  // the producers into a merge share one (scale, zero point)
    float next_sx = sx;
    for (int p = 0; p < P; ++p) {
      nasrt::BlockSpec& blk = net.paths[p].emplace_back();
      auto& chain = blk.convs;
      const std::string name = "paths." + std::to_string(p) + ".blocks." + std::to_string(l);
      float px = sx;
      const int op = r.uniform(0, residual ? 2 : 1);
      if (op == 1) {  // sepconv: depthwise then pointwise
        chain.push_back(conv_spec(r, name + ".dw", c, c, r.uniform(0, 1) ? 3 : 5, stride, c, px, prec(6)));
        px = chain.back().out_q.scale;
        chain.push_back(conv_spec(r, name + ".pw", c, oc, 1, 1, 1, px, prec(6)));
      } else if (op == 2) {  // dconv: two kxk convs
        const int k = r.uniform(0, 1) ? 1 : 3;
        chain.push_back(conv_spec(r, name + ".conv1", c, oc, k, stride, 1, px, prec(6)));
        px = chain.back().out_q.scale;
        chain.push_back(conv_spec(r, name + ".conv2", oc, oc, k, 1, 1, px, prec(6)));
      } else {
        chain.push_back(conv_spec(r, name, c, oc, r.uniform(0, 1) ? 1 : 3, stride, 1, px, prec(6)));
      }
      blk.residual = residual && r.uniform(0, 1);
      if (blk.residual) {
        chain.back().relu = false;
        chain.back().out_q.zero_point = r.uniform(0, 200);
        if (stride != 1 || c != oc) {
          blk.shortcut = conv_spec(r, name + ".shortcut", c, oc, 1, stride, 1, sx, prec(6));
          blk.shortcut->relu = false;
          blk.shortcut->out_q.zero_point = r.uniform(0, 200);
        }
        const float sb = blk.shortcut ? blk.shortcut->out_q.scale : sx;
        blk.add_q = {std::max(chain.back().out_q.scale, sb) * (0.7f + r.unit()), 0};
      }
      nasrt::ActQuant& out_q = blk.residual ? blk.add_q : chain.back().out_q;
      if (sync) {
        if (p == 0) merge_in = out_q;
        out_q = merge_in;
      }
      next_sx = out_q.scale;
    }
    c = oc, sx = next_sx;
    if (sync) {
      nasrt::SyncSpec s;
      s.after = l, s.concat_conv = concat;
      if (concat) {
        s.conv = conv_spec(r, "syncs." + std::to_string(l), P * c, c, 1, 1, 1, sx, prec(4));
        sx = s.conv.out_q.scale;
      } else {
        s.out_q = {sx * (1.0f + r.unit()), r.uniform(0, 30)};
        sx = s.out_q.scale;
      }
      net.syncs.push_back(s);
    }
  }
  net.features_q = {sx * (0.5f + r.unit()), r.uniform(0, 40)};
  sx = net.features_q.scale;
  int width = P * c;
  const int hidden = r.uniform(0, 2);
  for (int i = 0; i <= hidden; ++i) {
    nasrt::FcSpec fc;
    fc.name = "head." + std::to_string(i);
    fc.in = width, fc.out = i == hidden ? r.uniform(3, 10) : r.uniform(6, 24);
    fc.relu = i < hidden;
    weights(fc, r, static_cast<size_t>(fc.in) * fc.out, fc.out, fc.in, sx, prec(3), fc.relu);
    sx = fc.out_q.scale;
    width = fc.out;
    net.head.push_back(fc);
  }
  return net;
}

// Logits of a float net on one NCHW sample: the reference kernels, the residual add and the
// merges written out (float sums in path order, the concat side by side).
std::vector<float> evaluate_f32(const nasrt::NetSpec& net, const float* x) {
  T in;
  in.c = net.in_c, in.h = net.in_h, in.w = net.in_w;
  const size_t hw = static_cast<size_t>(in.h) * in.w;
  in.f.resize(hw * in.c);
  for (int c = 0; c < in.c; ++c)
    for (size_t p = 0; p < hw; ++p) in.f[p * in.c + c] = x[c * hw + p];
  for (const auto& c : net.stem) in = conv(c, in);
  const size_t P = net.paths.size();
  std::vector<T> cur(P, in);
  size_t s = 0;
  for (size_t l = 0; l < net.paths[0].size(); ++l) {
    for (size_t p = 0; p < P; ++p) {
      const nasrt::BlockSpec& blk = net.paths[p][l];
      T x0 = cur[p];
      for (const auto& c : blk.convs) cur[p] = conv(c, cur[p]);
      if (!blk.residual) continue;
      const T b = blk.shortcut ? conv(*blk.shortcut, x0) : x0;
      for (size_t i = 0; i < b.f.size(); ++i) cur[p].f[i] = std::max(cur[p].f[i] + b.f[i], 0.0f);
    }
    if (s >= net.syncs.size() || net.syncs[s].after != static_cast<int>(l)) continue;
    const nasrt::SyncSpec& sy = net.syncs[s++];
    T m = cur[0];
    if (sy.concat_conv) {
      T cat;
      cat.c = static_cast<int>(P) * m.c, cat.h = m.h, cat.w = m.w;
      for (size_t px = 0; px < static_cast<size_t>(m.h) * m.w; ++px)
        for (size_t p = 0; p < P; ++p)
          for (int c = 0; c < m.c; ++c) cat.f.push_back(cur[p].f[px * m.c + c]);
      m = conv(sy.conv, cat);
    } else {
      for (size_t p = 1; p < P; ++p)
        for (size_t i = 0; i < m.f.size(); ++i) m.f[i] += cur[p].f[i];
    }
    cur.assign(P, m);
  }
  std::vector<float> h;
  for (size_t p = 0; p < P; ++p)
    for (int c = 0; c < cur[p].c; ++c) {
      float acc = 0;
      for (int i = 0; i < cur[p].h * cur[p].w; ++i) acc += cur[p].f[static_cast<size_t>(i) * cur[p].c + c];
      h.push_back(acc / static_cast<float>(cur[p].h * cur[p].w));
    }
  for (const nasrt::FcSpec& fc : net.head) {
    std::vector<float> y(fc.out);
    nasrt::ref::fc(fc.in, fc.out, fc.relu, fc.weight.data(), fc.bias.data(), h.data(), y.data());
    h = y;
  }
  return h;
}

int residual_blocks(const nasrt::NetSpec& net, int* projections = nullptr) {
  int n = 0, proj = 0;
  for (const auto& path : net.paths)
    for (const auto& b : path) n += b.residual, proj += b.shortcut.has_value();
  if (projections) *projections = proj;
  return n;
}

}  // namespace q8

// An int8 fallback is said once per process (per backend and reason), not per conv and
// executor: two executors of a net with several convs that oneDNN refuses (output zero point
// != 0) print one line. Runs before anything else loads such a net in this process.
static void test_int8_fallback_said_once() {
  if (!nasrt::backend_compiled(nasrt::Backend::Onednn)) return;
  for (uint32_t seed = 0; seed < 64; ++seed) {
    const nasrt::NetSpec net = q8::random_net(seed, true);
    int refused = 0;
    for (const auto& path : net.paths)
      for (const auto& block : path)
        for (const auto& c : block.convs) refused += c.out_q.zero_point != 0;
    if (refused < 2) continue;
    std::fflush(stderr);
    char name[] = "/tmp/nasrt_said_onceXXXXXX";
    const int fd = mkstemp(name), saved = dup(2);
    dup2(fd, 2);
    for (int i = 0; i < 2; ++i) {
      nasrt::ExecOptions o;
      o.backend = nasrt::Backend::Onednn;
      nasrt::Executor e(net, o);
    }
    std::fflush(stderr);
    dup2(saved, 2);
    close(saved);
    std::ifstream f(name);
    std::string line;
    int said = 0;
    while (std::getline(f, line)) said += line.find("output zero point must be 0") != std::string::npos;
    close(fd);
    unlink(name);
    CHECK(said == 1, "net %u (%d convs with zy != 0, 2 executors): the fallback said %d times",
          seed, refused, said);
    return;
  }
  CHECK(false, "no random net with two convs that oneDNN refuses");
}

// residual: the nets with residual blocks (int8 adds, asymmetric linear outputs, projections).
static int test_int8_executor(bool residual) {
  int checked = 0;
  std::vector<nasrt::Backend> backends;
  for (nasrt::Backend b : nasrt::compiled_backends()) backends.push_back(b);
  int blocks = 0, projections = 0;
  for (uint32_t seed = 0; seed < 24; ++seed) {
    const bool all_int8 = seed % 2 == 0;
    const nasrt::NetSpec net = q8::random_net(seed, all_int8, residual);
    int proj = 0;
    blocks += q8::residual_blocks(net, &proj), projections += proj;
    q8::Rng r{seed + 99};
    const size_t n = static_cast<size_t>(net.in_c) * net.in_h * net.in_w;
    std::vector<float> x(2 * n);
    for (float& v : x) v = (r.unit() - 0.5f) * 6.0f;
    std::vector<float> want;
    for (int i = 0; i < 2; ++i) {
      const std::vector<float> y = q8::evaluate(net, x.data() + i * n);
      want.insert(want.end(), y.begin(), y.end());
    }
    const int P = static_cast<int>(net.paths.size());
    for (nasrt::Backend b : backends) {
      for (int threads = 1; threads <= P; ++threads) {
        for (bool balance : {false, true}) {
          nasrt::ExecOptions o;
          o.threads = threads, o.backend = b, o.balance = balance, o.adapt = false;
          try {
            nasrt::Executor e(net, o);
            std::vector<float> y(want.size());
            e.run(x.data(), 2, y.data());
            // The fp32 layers run on the backend's float kernels: bitwise the plain
            // evaluation (reference float kernels) only on the reference backend or with none.
            if (all_int8 || b == nasrt::Backend::Reference) {
              CHECK(y == want, "int8 net %u %s threads %d balance %d: logits differ from the rule",
                    seed, nasrt::backend_name(b).c_str(), threads, balance);
            } else {
              float worst = 0, scale = 1e-6f;
              for (size_t i = 0; i < y.size(); ++i)
                worst = std::max(worst, std::fabs(y[i] - want[i])), scale = std::max(scale, std::fabs(want[i]));
              CHECK(worst <= 0.1f * scale, "int8 net %u %s threads %d: max |diff| %g vs %g", seed,
                    nasrt::backend_name(b).c_str(), threads, worst, scale);
            }
            bool any_int8 = false;
            for (const auto& k : e.kernels()) any_int8 = any_int8 || k.precision == nasrt::Precision::Int8;
            CHECK(any_int8, "int8 net %u: no conv reported in int8", seed);
            ++checked;
          } catch (const std::exception& ex) {
            CHECK(false, "int8 net %u %s threads %d: %s", seed, nasrt::backend_name(b).c_str(), threads, ex.what());
          }
        }
      }
    }
  }
  CHECK(!residual || (blocks > 10 && projections > 3 && blocks > projections),
        "residual int8 nets: %d residual blocks, %d with a projection", blocks, projections);
  if (residual) return checked;
  // A sum whose inputs differ in (scale, zero point) is refused, naming the sync.
  for (uint32_t seed = 0; seed < 40; ++seed) {
    nasrt::NetSpec net = q8::random_net(seed, true);
    size_t s = 0;
    while (s < net.syncs.size() && net.syncs[s].concat_conv) ++s;
    if (s == net.syncs.size()) continue;
    net.paths[1][net.syncs[s].after].convs.back().out_q.zero_point += 1;
    bool refused = false;
    try {
      nasrt::Executor e(net, nasrt::ExecOptions{});
    } catch (const std::invalid_argument& ex) {
      refused = std::strstr(ex.what(), ("syncs[" + std::to_string(s) + "]").c_str()) != nullptr;
    }
    CHECK(refused, "int8 net %u: a sum over differing parameters was accepted", seed);
    break;
  }
  return checked;
}

// The int8 fixture (tests/data/fuzz/tiny.int8.nasrt, a few inputs and their logits from the x86
// Python runtime on the reference kernels: tools/make_fixtures.py) on every compiled backend with
// int8 kernels, 1 and 2 threads: the board check of the aarch64 cross-build (run under qemu) and
// of every x86 build. Same top-1 on every input, and every logit within what an error of
// kInt8Lsb codes in every input of the last FC can move it: |w[c]|_1 * sw[c] * s_in (the
// int8 convs are within 1 LSB of the rule by their load-time check, and the fp32 stem sums
// in another order per backend and ISA, so a code may move at a rounding boundary). 1 and 2
// threads bitwise equal.
int int8_fixture_check(const std::string& dir) {
  constexpr float kInt8Lsb = 2.0f;
  const std::string model = dir + "/fuzz/tiny.int8.nasrt";
  const std::vector<float> x = nasrt_tools::read_floats(dir + "/tiny_int8_inputs.bin", nullptr);
  const std::vector<float> expect = nasrt_tools::read_floats(dir + "/tiny_int8_logits.bin", nullptr);
  const nasrt::NetSpec net = nasrt::load_model(model).net;
  const nasrt::FcSpec& last = net.head.back();
  if (last.precision != nasrt::Precision::Int8 || last.q.weight.size() != static_cast<size_t>(last.in) * last.out) {
    CHECK(false, "int8 fixture: the last FC is not int8");
    return 0;
  }
  const float s_in = net.head.size() > 1 ? net.head[net.head.size() - 2].out_q.scale : net.features_q.scale;
  const int classes = last.out, in = last.in;
  std::vector<float> bound(classes);
  for (int c = 0; c < classes; ++c) {
    float l1 = 0;
    for (int j = 0; j < in; ++j) l1 += std::fabs(static_cast<float>(last.q.weight[static_cast<size_t>(c) * in + j]));
    bound[c] = kInt8Lsb * l1 * last.q.weight_scale[c] * s_in;
  }
  const size_t per = static_cast<size_t>(net.in_c) * net.in_h * net.in_w;
  const int batch = static_cast<int>(x.size() / per);
  CHECK(batch > 0 && expect.size() == static_cast<size_t>(batch) * classes, "int8 fixture: %d inputs, %zu logits",
        batch, expect.size());
  int ran = 0;
  for (nasrt::Backend b : nasrt::compiled_backends()) {
    if (!nasrt::find_kernels(b, nasrt::Precision::Int8)) continue;
    const std::string bn = nasrt::backend_name(b);
    std::vector<std::vector<float>> outs;
    for (int threads : {1, 2}) {
      nasrt_options o;
      nasrt_options_init(&o);
      o.threads = threads;
      o.backend = bn.c_str();
      char* err = nullptr;
      nasrt_model* m = nasrt_model_load_ex(model.c_str(), &o, &err);
      if (!m) { CHECK(false, "int8 fixture %s: %s", bn.c_str(), err); nasrt_error_free(err); continue; }
      std::vector<float> y(expect.size());
      CHECK(nasrt_model_run(m, x.data(), batch, y.data(), &err) == 0, "int8 fixture %s: run", bn.c_str());
      nasrt_model_free(m);
      int same_top1 = 0;
      float worst = 0;  // in units of the bound
      for (int i = 0; i < batch; ++i) {
        const float* g = y.data() + static_cast<size_t>(i) * classes;
        const float* e = expect.data() + static_cast<size_t>(i) * classes;
        same_top1 += std::max_element(g, g + classes) - g == std::max_element(e, e + classes) - e;
        for (int c = 0; c < classes; ++c) worst = std::max(worst, std::fabs(g[c] - e[c]) / bound[c]);
      }
      std::printf("int8 fixture, %s, %d thread(s): top-1 as x86 on %d of %d inputs, max |logit diff| %.3f "
                  "of the %g-LSB bound\n", bn.c_str(), threads, same_top1, batch, worst, kInt8Lsb);
      CHECK(same_top1 == batch, "int8 fixture %s threads %d: top-1 differs from x86 on %d inputs", bn.c_str(),
            threads, batch - same_top1);
      CHECK(worst <= 1.0f, "int8 fixture %s threads %d: logits %.2fx the bound off the x86 ones", bn.c_str(),
            threads, worst);
      outs.push_back(y);
      ++ran;
    }
    CHECK(outs.size() == 2 && outs[0] == outs[1], "int8 fixture %s: 1 vs 2 threads not bitwise equal", bn.c_str());
  }
  return ran;
}

// The pure schedule of `net` is the one the executor realises on the reference kernels (every
// conv may be split), on 1..P threads with and without balancing, and covers every op's rows
// exactly once.
static void check_schedule(const nasrt::NetSpec& net, const char* what) {
  const int P = static_cast<int>(net.paths.size());
  for (int t = 1; t <= P; ++t) {
    for (bool balance : {false, true}) {
      const nasrt::Schedule s = nasrt::compile_schedule(net, t, balance);
      nasrt::ExecOptions o;
      o.threads = t;
      o.backend = nasrt::Backend::Reference;
      o.balance = balance;
      const nasrt::Executor e(net, o);
      bool same = s.size() == e.schedule().size();
      for (size_t i = 0; same && i < s.size(); ++i)
        for (size_t k = 0; same && k < s[i].size(); ++k) {
          same = s[i][k].size() == e.schedule()[i][k].size();
          for (size_t j = 0; same && j < s[i][k].size(); ++j) {
            const nasrt::OpTag &a = s[i][k][j], &b = e.schedule()[i][k][j];
            same = a.kind == b.kind && a.path == b.path && a.layer == b.layer && a.conv == b.conv &&
                   a.first == b.first && a.rows == b.rows && a.total_rows == b.total_rows;
          }
        }
      CHECK(same, "%s threads %d balance %d: compile_schedule differs from Executor::schedule", what, t,
            balance);
      std::map<std::array<int, 4>, int> next;  // each part's rows: contiguous, then all of them
      bool covered = e.phases() == static_cast<int>(s.size());
      for (const auto& phase : s)
        for (const auto& share : phase)
          for (const nasrt::OpTag& op : share) {
            int& at = next[{op.kind, op.path, op.layer, op.conv}];
            covered = covered && op.first == at && op.rows > 0;
            at += op.rows;
          }
      for (const auto& phase : s)
        for (const auto& share : phase)
          for (const nasrt::OpTag& op : share)
            covered = covered && next[{op.kind, op.path, op.layer, op.conv}] == op.total_rows;
      CHECK(covered, "%s threads %d balance %d: schedule does not cover each op once", what, t, balance);
    }
  }
}

// Random float nets with residual blocks on every backend, 1..P threads, balance on and off:
// the plain evaluation within float tolerance, 1 vs P threads bitwise; their schedules.
static void test_residual_f32() {
  int ran = 0, blocks = 0, projections = 0;
  for (uint32_t seed = 0; seed < 16; ++seed) {
    const nasrt::NetSpec net = q8::random_net(seed, false, true, true);
    int proj = 0;
    blocks += q8::residual_blocks(net, &proj), projections += proj;
    q8::Rng r{seed + 7};
    const size_t n = static_cast<size_t>(net.in_c) * net.in_h * net.in_w;
    std::vector<float> x(2 * n);
    for (float& v : x) v = (r.unit() - 0.5f) * 6.0f;
    std::vector<float> want;
    for (int i = 0; i < 2; ++i) {
      const std::vector<float> y = q8::evaluate_f32(net, x.data() + i * n);
      want.insert(want.end(), y.begin(), y.end());
    }
    float scale = 1e-6f;
    for (float v : want) scale = std::max(scale, std::fabs(v));
    const int P = static_cast<int>(net.paths.size());
    for (nasrt::Backend b : nasrt::compiled_backends()) {
      std::vector<float> one;
      for (int threads = 1; threads <= P; ++threads) {
        for (bool balance : {false, true}) {
          nasrt::ExecOptions o;
          o.threads = threads, o.backend = b, o.balance = balance, o.adapt = false;
          try {
            nasrt::Executor e(net, o);
            std::vector<float> y(want.size());
            e.run(x.data(), 2, y.data());
            float worst = 0;
            for (size_t i = 0; i < y.size(); ++i) worst = std::max(worst, std::fabs(y[i] - want[i]));
            CHECK(worst <= 1e-4f * scale, "residual f32 net %u %s threads %d balance %d: max |diff| %g vs %g",
                  seed, nasrt::backend_name(b).c_str(), threads, balance, worst, scale);
            if (one.empty()) one = y;
            CHECK(y == one, "residual f32 net %u %s: threads %d balance %d not bitwise 1 thread's", seed,
                  nasrt::backend_name(b).c_str(), threads, balance);
            ++ran;
          } catch (const std::exception& ex) {
            CHECK(false, "residual f32 net %u %s threads %d: %s", seed, nasrt::backend_name(b).c_str(),
                  threads, ex.what());
          }
        }
      }
    }
    if (seed < 4) check_schedule(net, ("residual f32 net " + std::to_string(seed)).c_str());
  }
  CHECK(ran > 0 && blocks > 8 && projections > 2 && blocks > projections,
        "residual f32 nets: %d runs, %d residual blocks, %d with a projection", ran, blocks, projections);

  // A hand-built NetSpec with a malformed residual block: the walk names the part.
  nasrt::NetSpec base = q8::random_net(3, false, false, true);
  nasrt::BlockSpec& b0 = base.paths[0][0];
  const nasrt::ConvSpec& c0 = b0.convs.back();
  const bool keeps = c0.stride == 1 && c0.out_c == b0.convs.front().in_c;
  struct Case { std::function<void(nasrt::BlockSpec&)> edit; const char* want; };
  const std::vector<Case> cases = {
      {[](nasrt::BlockSpec& b) { b.residual = true; b.convs.back().relu = true; },
       "the last unit of a residual chain has no ReLU"},
      {[&](nasrt::BlockSpec& b) {
         b.residual = true, b.convs.back().relu = false;
         if (keeps) {  // a projection of the wrong kernel
           nasrt::ConvSpec s = b.convs.back();
           s.kernel = 3, s.relu = false, s.name = "sc";
           s.in_c = b.convs.front().in_c, s.groups = 1;
           s.weight.assign(static_cast<size_t>(s.out_c) * s.in_c * 9, 0.0f);
           b.shortcut = s;
         }  // else: the identity where the shape changes
       },
       keeps ? "paths[0][0].shortcut: must be a 1x1 conv without ReLU" : "paths[0][0].shortcut: the identity needs"},
      {[&](nasrt::BlockSpec& b) { b.shortcut = b.convs.front(); }, "paths[0][0].shortcut: only a residual block"},
  };
  for (const Case& c : cases) {
    nasrt::NetSpec net = base;
    c.edit(net.paths[0][0]);
    std::string err;
    try {
      nasrt::Executor e(net, nasrt::ExecOptions{});
    } catch (const std::invalid_argument& ex) {
      err = ex.what();
    }
    CHECK(err.find(c.want) != std::string::npos, "malformed residual NetSpec: got \"%s\", expected \"%s\"",
          err.c_str(), c.want);
  }
}

// The int8 add alone against codes computed by hand (docs/FORMATS.md section 6), on dense and on
// strided pixels (a concat's slice), every ISA clone this host picks.
static void test_residual_add_int8_values() {
  struct Case { uint8_t a, b; int want; const char* what; };
  // za 10, ma 0.5; zb 3, mb 0.25; zy 4 (an asymmetric output, to show the lower clamp is zy).
  const Case cases[] = {
      {10, 3, 4, "zero: rne(0) + zy"},
      {13, 3, 6, "a tie, 1.5, rounds to 2 (even)"},
      {15, 3, 6, "a tie, 2.5, rounds to 2 (even)"},
      {11, 5, 5, "0.5 + 0.5 = 1: one rounding of the sum (rounding each would give 0)"},
      {12, 4, 5, "1.0 + 0.25 = 1.25 -> 1"},
      {14, 5, 6, "2.0 + 0.5 = 2.5, a tie of the sum -> 2"},
      {0, 3, 4, "-5 + zy = -1 clamps to zy (not to 0)"},
      {9, 0, 4, "-0.5 - 0.75 = -1.25 -> -1, + zy = 3 clamps to zy"},
      {255, 255, 190, "122.5 + 63 = 185.5, a tie -> 186, + zy"},
      {200, 3, 99, "95 + zy"},
  };
  const int n = static_cast<int>(sizeof cases / sizeof cases[0]);
  for (int stride : {1, 3}) {
    std::vector<uint8_t> a(static_cast<size_t>(n) * stride, 0x11), b(a.size(), 0x22), y(a.size(), 0xab);
    for (int i = 0; i < n; ++i) a[static_cast<size_t>(i) * stride] = cases[i].a, b[static_cast<size_t>(i) * stride] = cases[i].b;
    nasrt::make_residual_add_int8(a.data(), stride, 10, 0.5f, b.data(), stride, 3, 0.25f, y.data(), stride, 4,
                                  1, 0, n)->run();
    for (int i = 0; i < n; ++i) {
      const int want = cases[i].want;
      CHECK(y[static_cast<size_t>(i) * stride] == want, "int8 add (%u, %u), stride %d: %d, expected %d (%s)",
            cases[i].a, cases[i].b, stride, y[static_cast<size_t>(i) * stride], want, cases[i].what);
      for (int k = 1; k < stride; ++k)
        CHECK(y[static_cast<size_t>(i) * stride + k] == 0xab, "int8 add wrote past its channels");
    }
  }
  // Saturation at the top: ma = 2 (a tensor of a wider scale than the output).
  std::vector<uint8_t> a{200, 140}, b{0, 0}, y(2);
  nasrt::make_residual_add_int8(a.data(), 1, 0, 2.0f, b.data(), 1, 0, 1.0f, y.data(), 1, 0, 1, 0, 2)->run();
  CHECK(y[0] == 255 && y[1] == 255, "int8 add: 400 and 280 must saturate at 255, got %d %d", y[0], y[1]);
  // Many values on a dense run (the vectorised path) against add_rule.
  q8::Rng r{4242};
  const nasrt::ActQuant qa{0.031f, 117}, qb{0.0173f, 3}, qy{0.029f, 0};
  std::vector<uint8_t> va(1037), vb(1037), vy(1037, 0xab);
  for (size_t i = 0; i < va.size(); ++i) va[i] = static_cast<uint8_t>(r.next() >> 24), vb[i] = static_cast<uint8_t>(r.next() >> 24);
  nasrt::make_residual_add_int8(va.data(), 13, qa.zero_point, qa.scale / qy.scale, vb.data(), 13, qb.zero_point,
                                qb.scale / qy.scale, vy.data(), 13, 0, 13, 0, 1037 / 13)->run();
  int wrong = 0;
  for (size_t i = 0; i < 1037 / 13 * 13; ++i) wrong += vy[i] != q8::add_rule(va[i], qa, vb[i], qb, qy);
  CHECK(wrong == 0, "int8 add: %d of %d codes differ from the rule", wrong, 1037 / 13 * 13);
}

// --- Hand-written model files (safetensors) with residual blocks, for the loader.
namespace mf {

uint32_t crc32(const std::string& d) {
  uint32_t c = 0xFFFFFFFFu;
  for (unsigned char ch : d) {
    c ^= ch;
    for (int k = 0; k < 8; ++k) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
  }
  return c ^ 0xFFFFFFFFu;
}

std::string quoted(const std::string& s) {  // a JSON string
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') out += '\\';
    out += ch;
  }
  return out + "\"";
}

struct Tensor {
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

template <typename V>
Tensor tensor(const char* dtype, std::vector<int64_t> shape, const std::vector<V>& v) {
  return {dtype, std::move(shape), std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(V))};
}

// The file's bytes: the tensors (in name order) and the metadata, checksum included.
std::string file(const std::map<std::string, Tensor>& tensors, std::map<std::string, std::string> meta) {
  std::string data, header = "{";
  for (const auto& [name, t] : tensors) {
    header += quoted(name) + ":{\"dtype\":" + quoted(t.dtype) + ",\"shape\":[";
    for (size_t i = 0; i < t.shape.size(); ++i) header += (i ? "," : "") + std::to_string(t.shape[i]);
    header += "],\"data_offsets\":[" + std::to_string(data.size()) + "," +
              std::to_string(data.size() + t.bytes.size()) + "]},";
    data += t.bytes;
  }
  char crc[9];
  std::snprintf(crc, sizeof crc, "%08x", crc32(data));
  meta[NASRT_KEY_DATA_CRC32] = crc;
  meta[NASRT_KEY_FORMAT] = "nasrt.model";
  header += "\"__metadata__\":{";
  bool first = true;
  for (const auto& [k, v] : meta) header += (first ? "" : ",") + quoted(k) + ":" + quoted(v), first = false;
  header += "}}";
  std::string out(8, '\0');
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + header + data;
}

struct Unit {
  std::string name;
  int in, out, k, s, g;
  bool relu;
  std::string json() const {
    return "{\"name\":" + quoted(name) + ",\"in\":" + std::to_string(in) + ",\"out\":" + std::to_string(out) +
           ",\"kernel\":" + std::to_string(k) + ",\"stride\":" + std::to_string(s) + ",\"groups\":" +
           std::to_string(g) + ",\"relu\":" + (relu ? "true" : "false") + "}";
  }
};

// The residual fixture: input 4x6x6, two paths of two layers. Layer 0 (stride 1, 4 channels),
// then a conv1x1 merge: path 0 a residual conv3x3, path 1 a residual dconv3x3, both the
// identity, their adds writing the concat. Layer 1 (stride 2, 8 channels), then a sum:
// path 0 a residual conv3x3 with its projection, path 1 a plain sepconv3x3. One FC.
struct Fixture {
  std::vector<Unit> units = {
      {"paths.0.blocks.0", 4, 4, 3, 1, 1, false},
      {"paths.1.blocks.0.conv1", 4, 4, 3, 1, 1, true},
      {"paths.1.blocks.0.conv2", 4, 4, 3, 1, 1, false},
      {"syncs.0", 8, 4, 1, 1, 1, true},
      {"paths.0.blocks.1", 4, 8, 3, 2, 1, false},
      {"paths.0.blocks.1.shortcut", 4, 8, 1, 2, 1, false},
      {"paths.1.blocks.1.dw", 4, 4, 3, 2, 4, true},
      {"paths.1.blocks.1.pw", 4, 8, 1, 1, 1, true},
  };
  // The graph's layers as text, each replaceable by a malformed one.
  std::string l00, l10, l01, l11;
  Fixture() {
    auto& u = units;
    l00 = "{\"convs\":[" + u[0].json() + "],\"shortcut\":null}";
    l10 = "{\"convs\":[" + u[1].json() + "," + u[2].json() + "],\"shortcut\":null}";
    l01 = "{\"convs\":[" + u[4].json() + "],\"shortcut\":" + u[5].json() + "}";
    l11 = "[" + u[6].json() + "," + u[7].json() + "]";
  }
  std::string graph() const {
    return "{\"input\":[4,6,6],\"stem\":[],\"paths\":[[" + l00 + "," + l01 + "],[" + l10 + "," + l11 +
           "]],\"syncs\":[{\"after\":0,\"merge\":\"conv1x1\",\"conv\":" + units[3].json() +
           "},{\"after\":1,\"merge\":\"sum\"}],\"head\":[{\"name\":\"head.0\",\"in\":16,\"out\":3,\"relu\":false}]}";
  }
  // Float tensors of every unit and the FC, deterministic.
  std::map<std::string, Tensor> f32() const {
    q8::Rng r{77};
    auto vals = [&](size_t n, float a) {
      std::vector<float> v(n);
      for (float& x : v) x = (r.unit() - 0.5f) * a;
      return v;
    };
    std::map<std::string, Tensor> t;
    for (const Unit& u : units) {
      const int64_t per = u.in / u.g;
      t[u.name + ".weight"] = tensor("F32", {u.out, per, u.k, u.k}, vals(static_cast<size_t>(u.out) * per * u.k * u.k, 0.8f));
      t[u.name + ".bias"] = tensor("F32", {u.out}, vals(u.out, 0.4f));
    }
    t["head.0.weight"] = tensor("F32", {3, 16}, vals(48, 0.8f));
    t["head.0.bias"] = tensor("F32", {3}, vals(3, 0.4f));
    return t;
  }
  // int8 tensors of every layer but those in fp32 (kept float).
  std::map<std::string, Tensor> int8(const std::set<std::string>& fp32) const {
    std::map<std::string, Tensor> t = f32();
    q8::Rng r{78};
    auto make = [&](const std::string& name, std::vector<int64_t> shape) {
      if (fp32.count(name)) return;
      size_t n = 1;
      for (int64_t d : shape) n *= static_cast<size_t>(d);
      std::vector<int8_t> w(n);
      for (int8_t& v : w) v = static_cast<int8_t>(r.uniform(-64, 64));
      std::vector<float> sw(shape[0]);
      std::vector<int32_t> b(shape[0]);
      for (float& v : sw) v = 0.01f * (0.5f + r.unit());
      for (int32_t& v : b) v = r.uniform(-2000, 2000);
      t[name + ".weight"] = tensor("I8", shape, w);
      t[name + ".weight_scale"] = tensor("F32", {shape[0]}, sw);
      t[name + ".bias"] = tensor("I32", {shape[0]}, b);
    };
    for (const Unit& u : units) make(u.name, {u.out, u.in / u.g, u.k, u.k});
    make("head.0", {3, 16});
    return t;
  }
};

std::string act(float s, int zp) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "{\"scale\":%.9g,\"zero_point\":%d}", static_cast<double>(s), zp);
  return buf;
}

// nasrt.quant of the int8 fixture: every activation of section 6, the residual adds' included
// (zp 0 after their ReLU), the chains' last units and the projection linear (zp != 0).
std::map<std::string, std::string> activations() {
  return {{"input", act(0.0235f, 128)},
          {"paths.0.blocks.0", act(0.05f, 121)},
          {"paths.0.blocks.0.add", act(0.04f, 0)},
          {"paths.1.blocks.0.conv1", act(0.03f, 0)},
          {"paths.1.blocks.0.conv2", act(0.045f, 117)},
          {"paths.1.blocks.0.add", act(0.04f, 0)},
          {"syncs.0.concat", act(0.04f, 0)},
          {"syncs.0", act(0.03f, 0)},
          {"paths.0.blocks.1", act(0.05f, 130)},
          {"paths.0.blocks.1.shortcut", act(0.02f, 125)},
          {"paths.0.blocks.1.add", act(0.035f, 0)},
          {"paths.1.blocks.1.dw", act(0.03f, 0)},
          {"paths.1.blocks.1.pw", act(0.035f, 0)},
          {"syncs.1", act(0.05f, 0)},
          {"features", act(0.02f, 3)}};
}

std::string quant_json(const std::map<std::string, std::string>& acts, const std::string& fp32) {
  std::string a = "{";
  for (const auto& [k, v] : acts) a += (a.size() > 1 ? "," : "") + quoted(k) + ":" + v;
  return "{\"activations\":" + a + "},\"fp32\":[" + fp32 + "],\"method\":\"fixed\",\"weight_bits\":8}";
}

// The error parse_model gives for the bytes ("" if none).
std::string load_error(const std::string& bytes, const char* source) {
  try {
    nasrt::parse_model(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), source);
  } catch (const nasrt::ModelError& e) {
    return e.what();
  }
  return "";
}

}  // namespace mf

// Model files with residual blocks: the loader's NetSpec, runs against the plain evaluation
// (float) and bitwise the rule (int8, a projection kept fp32), the tuning names; malformed
// residual entries and int8 parameters refused with one line naming the file and the field.
static void test_residual_model_files() {
  const mf::Fixture fx;
  const std::string good = mf::file(fx.f32(), {{NASRT_KEY_VERSION, "2"}, {NASRT_KEY_GRAPH, fx.graph()}});
  nasrt::LoadedModel lm;
  try {
    lm = nasrt::parse_model(reinterpret_cast<const uint8_t*>(good.data()), good.size(), "r.nasrt");
  } catch (const std::exception& e) {
    CHECK(false, "residual fixture: %s", e.what());
    return;
  }
  const auto& P = lm.net.paths;
  CHECK(P[0][0].residual && !P[0][0].shortcut && P[1][0].residual && P[1][0].convs.size() == 2 &&
            P[0][1].residual && P[0][1].shortcut && P[0][1].shortcut->name == "paths.0.blocks.1.shortcut" &&
            P[0][1].shortcut->stride == 2 && !P[1][1].residual && P[1][1].convs.size() == 2,
        "residual fixture: the loader's blocks");
  std::vector<std::string> convs;
  nasrt::for_each_conv(lm.net, [&](const nasrt::ConvSpec& c, int, int) { convs.push_back(c.name); });
  CHECK(std::count(convs.begin(), convs.end(), "paths.0.blocks.1.shortcut") == 1 && convs.size() == 8,
        "for_each_conv (tune's convs): %zu convs, the projection %s", convs.size(),
        std::count(convs.begin(), convs.end(), "paths.0.blocks.1.shortcut") ? "in" : "missing");
  q8::Rng r{5};
  std::vector<float> x(4 * 6 * 6);
  for (float& v : x) v = (r.unit() - 0.5f) * 6.0f;
  const std::vector<float> want = q8::evaluate_f32(lm.net, x.data());
  for (nasrt::Backend b : nasrt::compiled_backends())
    for (int threads : {1, 2}) {
      nasrt::ExecOptions o;
      o.threads = threads, o.backend = b, o.adapt = false;
      nasrt::Executor e(lm.net, o);
      std::vector<float> y(3);
      e.run(x.data(), 1, y.data());
      float worst = 0, scale = 1e-6f;
      for (int i = 0; i < 3; ++i) worst = std::max(worst, std::fabs(y[i] - want[i])), scale = std::max(scale, std::fabs(want[i]));
      CHECK(worst <= 1e-5f * scale, "residual fixture %s threads %d: max |diff| %g vs %g",
            nasrt::backend_name(b).c_str(), threads, worst, scale);
      bool named = false;
      for (const auto& k : e.kernels()) named = named || k.name == "paths.0.blocks.1.shortcut";
      CHECK(named, "residual fixture %s: the projection is not among the executor's kernels",
            nasrt::backend_name(b).c_str());
    }

  // Malformed residual entries: one line, the file and the field.
  struct Bad { std::string* piece; std::string text; const char* want; };
  mf::Fixture m;
  const mf::Unit& c01 = m.units[4];
  mf::Unit sc = m.units[5];
  auto with = [](mf::Unit u, auto f) { f(u); return u.json(); };
  const std::string chain01 = "\"convs\":[" + c01.json() + "]";
  const std::vector<Bad> bad = {
      {&m.l01, "{" + chain01 + ",\"shortcut\":null}",
       "r.nasrt: " NASRT_KEY_GRAPH ": paths[0][1].shortcut: null (the identity) needs stride 1 and the input's "
       "channels, but the chain maps 4x6x6 to 8x3x3 at stride 2: a 1x1 projection is required"},
      {&m.l01, "{" + chain01 + ",\"shortcut\":" + with(sc, [](mf::Unit& u) { u.k = 3; }) + "}",
       "paths[0][1].shortcut.kernel: must be 1, got 3"},
      {&m.l01, "{" + chain01 + ",\"shortcut\":" + with(sc, [](mf::Unit& u) { u.relu = true; }) + "}",
       "paths[0][1].shortcut.relu: must be false"},
      {&m.l01, "{" + chain01 + ",\"shortcut\":" + with(sc, [](mf::Unit& u) { u.s = 1; }) + "}",
       "paths[0][1].shortcut.stride: must be the chain's total stride 2, got 1"},
      {&m.l01, "{" + chain01 + ",\"shortcut\":" + with(sc, [](mf::Unit& u) { u.out = 4; }) + "}",
       "paths[0][1].shortcut.out: must be the chain's output channels 8, got 4"},
      {&m.l01, "{" + chain01 + ",\"shortcut\":" + with(sc, [](mf::Unit& u) { u.in = 8; }) + "}",
       "paths[0][1].shortcut.in: is 8 but the input has 4 channels"},
      {&m.l01, "{" + chain01 + ",\"shortcut\":" + with(sc, [](mf::Unit& u) { u.g = 4; }) + "}",
       "paths[0][1].shortcut.groups: must be 1, got 4"},
      {&m.l01, "{" + chain01 + ",\"shortcut\":3}", "paths[0][1].shortcut: must be a conv unit or null"},
      {&m.l01, "{" + chain01 + "}", "paths[0][1].shortcut: missing"},
      {&m.l01, "{\"shortcut\":null}", "paths[0][1].convs: missing"},
      {&m.l01, "{\"convs\":[],\"shortcut\":null}", "paths[0][1].convs: empty block"},
      {&m.l01, "{" + chain01 + ",\"shortcut\":" + sc.json() + ",\"relu\":true}",
       "paths[0][1].relu: unknown field"},
      {&m.l01, "{\"convs\":[" + with(c01, [](mf::Unit& u) { u.relu = true; }) + "],\"shortcut\":" + sc.json() + "}",
       "paths[0][1].convs[0].relu: must be false (the last unit of a residual chain"},
      {&m.l00, "{\"convs\":[" + m.units[0].json() + "],\"shortcut\":" +
                   with(sc, [](mf::Unit& u) { u.out = 4, u.s = 1, u.name = "paths.0.blocks.0.shortcut"; }) + "}",
       "paths[0][0].shortcut: must be null (the identity): the chain has stride 1 and keeps the input's 4 channels"},
      {&m.l00, "\"conv\"", "paths[0][0]: must be a list of units or a residual block"},
  };
  for (const Bad& b : bad) {
    const std::string saved = *b.piece;
    *b.piece = b.text;
    const std::string err = mf::load_error(mf::file(m.f32(), {{NASRT_KEY_VERSION, "2"}, {NASRT_KEY_GRAPH, m.graph()}}), "r.nasrt");
    *b.piece = saved;
    CHECK(err.rfind("r.nasrt: ", 0) == 0 && err.find(b.want) != std::string::npos && err.find('\n') == std::string::npos,
          "malformed residual entry: got \"%s\", expected \"%s\"", err.c_str(), b.want);
  }
  {  // the projection's tensors: missing, and unused when the graph has the identity
    std::map<std::string, mf::Tensor> t = fx.f32();
    t.erase("paths.0.blocks.1.shortcut.bias");
    std::string err = mf::load_error(mf::file(t, {{NASRT_KEY_VERSION, "2"}, {NASRT_KEY_GRAPH, fx.graph()}}), "r.nasrt");
    CHECK(err.find("r.nasrt: tensor paths.0.blocks.1.shortcut.bias: missing") == 0, "missing projection bias: %s",
          err.c_str());
    t = fx.f32();
    t["paths.0.blocks.0.shortcut.weight"] = mf::tensor("F32", {4, 4, 1, 1}, std::vector<float>(16, 0.1f));
    err = mf::load_error(mf::file(t, {{NASRT_KEY_VERSION, "2"}, {NASRT_KEY_GRAPH, fx.graph()}}), "r.nasrt");
    CHECK(err.find("tensor paths.0.blocks.0.shortcut.weight: not part of the plan") != std::string::npos,
          "unused projection tensor: %s", err.c_str());
  }

  // Format 3: the adds' parameters, a chain's last unit and the projection asymmetric, the
  // projection kept fp32; bitwise the rule on every int8 backend.
  const std::string fp32 = "\"paths.0.blocks.1.shortcut\"";
  const auto int8_file = [&](const std::map<std::string, std::string>& acts) {
    return mf::file(fx.int8({"paths.0.blocks.1.shortcut"}),
                    {{NASRT_KEY_VERSION, "3"}, {NASRT_KEY_GRAPH, fx.graph()}, {NASRT_KEY_QUANT, mf::quant_json(acts, fp32)}});
  };
  const std::string q8file = int8_file(mf::activations());
  nasrt::LoadedModel qm;
  try {
    qm = nasrt::parse_model(reinterpret_cast<const uint8_t*>(q8file.data()), q8file.size(), "r.int8.nasrt");
  } catch (const std::exception& e) {
    CHECK(false, "residual int8 fixture: %s", e.what());
    return;
  }
  const auto& Q = qm.net.paths;
  CHECK(Q[0][0].add_q.scale == 0.04f && Q[0][0].add_q.zero_point == 0 && Q[0][1].add_q.scale == 0.035f &&
            Q[0][0].convs[0].out_q.zero_point == 121 && Q[0][1].shortcut->out_q.zero_point == 125 &&
            Q[0][1].shortcut->precision == nasrt::Precision::Fp32 &&
            Q[0][1].convs[0].precision == nasrt::Precision::Int8,
        "residual int8 fixture: the loader's parameters");
  const std::vector<float> qwant = q8::evaluate(qm.net, x.data());
  int ran = 0;
  for (nasrt::Backend b : nasrt::compiled_backends())
    for (int threads : {1, 2}) {
      nasrt::ExecOptions o;
      o.threads = threads, o.backend = b, o.adapt = false;
      nasrt::Executor e(qm.net, o);
      std::vector<float> y(3);
      e.run(x.data(), 1, y.data());
      // The fp32 projection on a fast backend sums in its own order: bitwise on the reference.
      if (b == nasrt::Backend::Reference) {
        CHECK(y == qwant, "residual int8 fixture, reference, threads %d: logits differ from the rule", threads);
      } else {
        float worst = 0, scale = 1e-6f;
        for (int i = 0; i < 3; ++i) worst = std::max(worst, std::fabs(y[i] - qwant[i])), scale = std::max(scale, std::fabs(qwant[i]));
        CHECK(worst <= 0.1f * scale, "residual int8 fixture %s threads %d: max |diff| %g vs %g",
              nasrt::backend_name(b).c_str(), threads, worst, scale);
      }
      ++ran;
    }
  CHECK(ran > 0, "residual int8 fixture ran nowhere");

  struct BadQ { std::string key, value; const char* want; };
  const std::vector<BadQ> badq = {
      {"paths.0.blocks.0.add", "", "r.int8.nasrt: metadata " NASRT_KEY_QUANT ": activations['paths.0.blocks.0.add']: missing"},
      {"paths.1.blocks.0.add", mf::act(0.04f, 3),
       "activations['paths.1.blocks.0.add'].zero_point: must be 0 after a ReLU, got 3"},
      {"paths.1.blocks.0.add", mf::act(0.05f, 0),
       "activations['paths.1.blocks.0.add']: must have the scale and zero point of 'syncs.0.concat'"},
      {"paths.0.blocks.1.add", mf::act(0.036f, 0),
       "activations['paths.1.blocks.1.pw']: must have the scale and zero point of 'paths.0.blocks.1.add'"},
      {"paths.0.blocks.1.shortcut", mf::act(10.0f, 125),  // an fp32 layer: no multiplier of its own
       "activations['paths.0.blocks.1.add'] (Mb, from 'paths.0.blocks.1.shortcut'): requantisation multiplier "
       "286 outside [2^-32, 256)"},
      {"paths.0.blocks.0", mf::act(20.0f, 121),
       "activations['paths.0.blocks.0.add'] (Ma, from 'paths.0.blocks.0'): requantisation multiplier 500 outside"},
      {"paths.0.blocks.9.add", mf::act(0.04f, 0), "activations['paths.0.blocks.9.add']: not a tensor of the plan"},
  };
  for (const BadQ& b : badq) {
    std::map<std::string, std::string> acts = mf::activations();
    if (b.value.empty()) acts.erase(b.key);
    else acts[b.key] = b.value;
    const std::string err = mf::load_error(int8_file(acts), "r.int8.nasrt");
    CHECK(err.rfind("r.int8.nasrt: ", 0) == 0 && err.find(b.want) != std::string::npos && err.find('\n') == std::string::npos,
          "bad residual int8 parameters: got \"%s\", expected \"%s\"", err.c_str(), b.want);
  }
}

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : NASRT_TEST_DATA;
  const int cycles = argc > 2 ? std::atoi(argv[2]) : 2000;
  const std::string model = dir + "/tiny.nasrt";
  const std::vector<float> x = nasrt_tools::read_floats(dir + "/tiny_input.bin", nullptr);
  const std::vector<float> expect = nasrt_tools::read_floats(dir + "/tiny_logits.bin", nullptr);
  int passed = 0;

  // 1. Logits on 1 and 2 threads: equal to each other bitwise, to Python's within 1e-4.
  std::vector<std::vector<float>> outs;
  for (int threads : {1, 2}) {
    char* err = nullptr;
    nasrt_model* m = nasrt_model_load(model.c_str(), threads, &err);
    CHECK(m, "%s", err ? err : "");
    if (!m) { nasrt_error_free(err); continue; }
    int c, h, w;
    CHECK(nasrt_model_input_shape(m, &c, &h, &w) == 0 && static_cast<size_t>(c * h * w) == x.size(), "shape");
    std::vector<float> y(nasrt_model_classes(m));
    CHECK(y.size() == expect.size(), "classes %zu vs %zu", y.size(), expect.size());
    CHECK(nasrt_model_run(m, x.data(), 1, y.data(), &err) == 0, "%s", err ? err : "");
    float scale = 1e-6f, worst = 0;
    for (size_t i = 0; i < y.size() && i < expect.size(); ++i) {
      scale = std::max(scale, std::fabs(expect[i]));
      worst = std::max(worst, std::fabs(y[i] - expect[i]));
    }
    CHECK(worst <= 1e-4f * scale, "threads %d: max |diff| %g vs scale %g", threads, worst, scale);
    outs.push_back(y);
    nasrt_model_free(m);
    ++passed;
  }
  CHECK(outs.size() == 2 && outs[0] == outs[1], "1 vs 2 threads not bitwise equal");
  ++passed;

  // 2. Fresh 2-thread executors, each run once: start-up and first hand-off must never hang.
  {
    nasrt_options o;
    nasrt_options_init(&o);
    o.threads = 2;
    o.backend = "reference";
    std::vector<float> y(expect.size());
    for (int i = 0; i < cycles; ++i) {
      char* err = nullptr;
      nasrt_model* m = nasrt_model_load_ex(model.c_str(), &o, &err);
      if (!m) { CHECK(false, "%s", err); nasrt_error_free(err); break; }
      CHECK(nasrt_model_run(m, x.data(), 1, y.data(), &err) == 0, "run");
      nasrt_model_free(m);
    }
    ++passed;
  }

  // 3. Bad input: errors naming the file, never a crash.
  {
    char* err = nullptr;
    CHECK(!nasrt_model_load("/nonexistent.nasrt", 0, &err) && err && std::strstr(err, "/nonexistent.nasrt"), "missing file");
    nasrt_error_free(err);
    CHECK(!nasrt_model_load(model.c_str(), 99, &err) && err && std::strstr(err, "threads"), "threads");
    nasrt_error_free(err);
    const std::string bytes = slurp(model);
    const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
    int errors = 0;
    for (size_t cut = 0; cut < bytes.size(); cut += 1 + bytes.size() / 97) {  // truncations
      try { nasrt::parse_model(data, cut, "cut.nasrt"); } catch (const nasrt::ModelError& e) {
        errors += std::strstr(e.what(), "cut.nasrt") != nullptr;
      }
    }
    CHECK(errors > 90, "truncations: %d errors", errors);
    std::string flipped = bytes;  // a flipped data byte fails the checksum
    flipped[flipped.size() - 3] ^= 0x40;
    bool crc = false;
    try { nasrt::parse_model(reinterpret_cast<const uint8_t*>(flipped.data()), flipped.size(), "f.nasrt"); }
    catch (const nasrt::ModelError& e) { crc = std::strstr(e.what(), "checksum") != nullptr; }
    CHECK(crc, "altered data not detected");
    nasrt_model* m = nasrt_model_load(model.c_str(), 1, &err);
    std::vector<float> bad(x), y(expect.size());
    bad[0] = NAN;
    CHECK(m && nasrt_model_run(m, bad.data(), 1, y.data(), &err) != 0 && err && std::strstr(err, "NaN"), "NaN input");
    nasrt_error_free(err);
    bad[0] = 3e38f;  // finite, but it would overflow inside the net
    CHECK(m && nasrt_model_run(m, bad.data(), 1, y.data(), &err) != 0 && err && std::strstr(err, "1e6"), "huge input");
    nasrt_error_free(err);
    nasrt_model_free(m);
    // Cores outside the process's affinity mask are an error, and where each slot is
    // pinned is reported (slot 0, the caller, never is).
    nasrt_options o;
    nasrt_options_init(&o);
    o.threads = 2;
    const int far[2] = {0, 4095};
    o.cores = far, o.ncores = 2;
    CHECK(!nasrt_model_load_ex(model.c_str(), &o, &err) && err && std::strstr(err, "cores"), "core 4095 accepted");
    nasrt_error_free(err);
    o.cores = nullptr, o.ncores = 0;
    m = nasrt_model_load_ex(model.c_str(), &o, &err);
    CHECK(m && nasrt_model_pinned_core(m, 0) == -1 && nasrt_model_pinned_core(m, 2) == -2 &&
              nasrt_model_pinned_core(m, 1) >= -1, "pinned cores");
    nasrt_model_free(m);
    ++passed;
  }
  // 4. Every compiled backend on 1 and 2 threads: Python's logits, bitwise equal across threads.
  const std::vector<std::string> backends = compiled_backends();
  CHECK(std::find(backends.begin(), backends.end(), "reference") != backends.end(), "%s", nasrt_backends());
  for (const std::string& b : backends) {
    std::vector<std::vector<float>> per_threads;
    for (int threads : {1, 2}) {
      nasrt_options o;
      nasrt_options_init(&o);
      o.threads = threads;
      o.backend = b.c_str();
      char* err = nullptr;
      nasrt_model* m = nasrt_model_load_ex(model.c_str(), &o, &err);
      CHECK(m, "%s: %s", b.c_str(), err ? err : "");
      if (!m) { nasrt_error_free(err); continue; }
      for (int i = 0; i < nasrt_model_kernels(m); ++i)
        CHECK(b == nasrt_model_kernel_backend(m, i), "%s: conv %s runs on %s", b.c_str(),
              nasrt_model_kernel_name(m, i), nasrt_model_kernel_backend(m, i));
      std::vector<float> y(expect.size()), first;
      for (int rep = 0; rep < 20; ++rep) {  // the hand-offs of later runs too, not only the first
        CHECK(nasrt_model_run(m, x.data(), 1, y.data(), &err) == 0, "%s: %s", b.c_str(), err ? err : "");
        nasrt_error_free(err);
        err = nullptr;
        if (rep == 0) first = y;
        CHECK(y == first, "%s, %d threads: run %d differs from run 0", b.c_str(), threads, rep);
      }
      float scale = 1e-6f, worst = 0;
      for (size_t i = 0; i < y.size(); ++i) {
        scale = std::max(scale, std::fabs(expect[i]));
        worst = std::max(worst, std::fabs(y[i] - expect[i]));
      }
      CHECK(worst <= 1e-4f * scale, "%s, %d threads: max |diff| %g vs scale %g", b.c_str(), threads, worst, scale);
      per_threads.push_back(y);
      nasrt_model_free(m);
    }
    CHECK(per_threads.size() == 2 && per_threads[0] == per_threads[1], "%s: 1 vs 2 threads not bitwise equal",
          b.c_str());
  }
  ++passed;

  // 5. No leak over 1,000 load/run/free cycles of the C API per backend, error paths
  // included (a refused load, a refused run). Heap bytes in use, threads and the
  // address space (thread stacks, JIT code are mmaps: no heap check sees them) must
  // not grow between cycle 100 and cycle 1,000; caches fill in the first cycles.
  // Under ASan, LeakSanitizer checks that nothing became unreachable.
  for (const std::string& b : backends) {
    nasrt_options o;
    nasrt_options_init(&o);
    o.backend = b.c_str();
    o.threads = 2;
    std::vector<float> y(expect.size()), bad(x);
    bad[1] = INFINITY;
    const int n = 1000, settle = 100;
    long long heap0 = 0, vm0 = 0, threads0 = 0;
    bool ok = true;
    for (int i = 0; i < n && ok; ++i) {
      if (i == settle) heap0 = heap_in_use(), vm0 = mapped_kb(), threads0 = threads_now();
      char* err = nullptr;
      nasrt_model* m = nasrt_model_load_ex(model.c_str(), &o, &err);
      ok = m != nullptr;
      CHECK(ok, "%s: %s", b.c_str(), err ? err : "");
      nasrt_error_free(err);
      if (!ok) break;
      err = nullptr;
      ok = nasrt_model_run(m, x.data(), 1, y.data(), &err) == 0;
      CHECK(ok, "%s: %s", b.c_str(), err ? err : "");
      nasrt_error_free(err);
      err = nullptr;
      CHECK(nasrt_model_run(m, bad.data(), 1, y.data(), &err) != 0 && err, "%s: inf input accepted", b.c_str());
      nasrt_error_free(err);
      nasrt_model_free(m);
      err = nullptr;
      CHECK(!nasrt_model_load_ex("/nonexistent.nasrt", &o, &err) && err, "missing file");
      nasrt_error_free(err);
    }
    const long long heap1 = heap_in_use(), vm1 = mapped_kb(), threads1 = threads_now();
    std::printf("%s: %d load/run/free cycles: heap %+lld B, mapped %+lld kB, threads %+lld (cycle %d -> %d)\n",
                b.c_str(), n, heap1 - heap0, vm1 - vm0, threads1 - threads0, settle, n);
    // 900 cycles: 64 KiB catches any per-cycle heap leak above ~73 bytes (LeakSanitizer: any size).
    CHECK(heap0 < 0 || heap1 - heap0 < 64 * 1024, "%s: heap grew %lld bytes", b.c_str(), heap1 - heap0);
    CHECK(threads1 == threads0, "%s: %lld threads left behind", b.c_str(), threads1 - threads0);
    // 900 cycles: 1 MiB catches a leaked page per cycle or a single unjoined thread's stack.
    // Not under the sanitizers: their allocators map fresh memory while freed blocks sit
    // in quarantine (ASan), so the address space grows without a leak; their heap count is exact.
#if !defined(NASRT_ASAN) && !defined(NASRT_TSAN)
    CHECK(vm0 < 0 || vm1 - vm0 < 1024, "%s: address space grew %lld kB", b.c_str(), vm1 - vm0);
#endif
  }
#if defined(NASRT_ASAN)
  CHECK(__lsan_do_recoverable_leak_check() == 0, "LeakSanitizer found leaks (reported above)");
#endif
  ++passed;

  // 6. Tuning through the C API on a copy of the model: tune (every backend timed, the
  // file written), then a plain load reads the file back and picks the same backends.
  {
    char dtemplate[] = "/tmp/nasrt_native_tests.XXXXXX";
    const char* tdir = mkdtemp(dtemplate);
    CHECK(tdir, "mkdtemp");
    if (tdir) {
      const std::string copy = std::string(tdir) + "/tiny.nasrt", tfile = copy + ".tune.json";
      { std::ofstream(copy, std::ios::binary) << slurp(model); }
      std::vector<std::string> tuned;
      for (int tune : {1, 0}) {
        nasrt_options o;
        nasrt_options_init(&o);
        o.tune = tune;
        char* err = nullptr;
        nasrt_model* m = nasrt_model_load_ex(copy.c_str(), &o, &err);
        CHECK(m, "tune %d: %s", tune, err ? err : "");
        nasrt_error_free(err);
        if (!m) break;
        CHECK(std::strcmp(nasrt_model_notice(m), "") == 0, "tune %d: notice %s", tune, nasrt_model_notice(m));
        std::vector<std::string> now;
        for (int i = 0; i < nasrt_model_kernels(m); ++i) now.push_back(nasrt_model_kernel_backend(m, i));
        if (tune) tuned = now;
        CHECK(now == tuned, "the tuning file was not applied");
        std::vector<float> y(expect.size());
        err = nullptr;
        CHECK(nasrt_model_run(m, x.data(), 1, y.data(), &err) == 0, "%s", err ? err : "");
        nasrt_error_free(err);
        float scale = 1e-6f, worst = 0;
        for (size_t i = 0; i < y.size(); ++i) {
          scale = std::max(scale, std::fabs(expect[i]));
          worst = std::max(worst, std::fabs(y[i] - expect[i]));
        }
        CHECK(worst <= 1e-4f * scale, "tuned: max |diff| %g vs scale %g", worst, scale);
        nasrt_model_free(m);
        CHECK(std::ifstream(tfile).good(), "no tuning file %s", tfile.c_str());
      }
      std::remove(tfile.c_str());
      std::remove(copy.c_str());
      CHECK(rmdir(tdir) == 0, "%s: left files behind", tdir);
    }
    ++passed;
  }

  // 6b. The whole-net check of a tuning: the reference kernels for every conv lose to the
  // built-in rule (a fast backend compiled) on 1 and 2 threads, so that tuning is not kept.
  {
    const nasrt::LoadedModel lm = nasrt::load_model(model);
    if (nasrt::builtin_backend() != nasrt::Backend::Reference) {
      std::map<std::string, nasrt::Backend> all_ref;
      nasrt::for_each_conv(lm.net, [&](const nasrt::ConvSpec& c, int, int) {
        all_ref[c.name] = nasrt::Backend::Reference;
      });
      const nasrt::NetCheck n = nasrt::check_whole_net(lm.net, all_ref, 2, 50, 3);
      CHECK(n.threads == std::vector<int>({1, 2}) && n.us.size() == 2, "net check: thread counts");
      CHECK(!n.keep_tuned, "net check: all-reference kept (%.1f vs %.1f us, %.1f vs %.1f us)",
            n.us[0][0], n.us[0][1], n.us[1][0], n.us[1][1]);
      std::printf("whole-net check, all reference vs built-in: %.1f vs %.1f us (1 thread), %.1f vs %.1f us (2)\n",
                  n.us[0][0], n.us[0][1], n.us[1][0], n.us[1][1]);
    }
    ++passed;
  }

  // 7. The pure schedule is the one the executor realises (on the reference kernels every
  // conv may be split), and covers every op's rows exactly once.
  {
    const nasrt::LoadedModel lm = nasrt::load_model(model);
    check_schedule(lm.net, "tiny.nasrt");
    const int P = static_cast<int>(lm.net.paths.size());
    bool refused = false;
    try {
      nasrt::compile_schedule(lm.net, P + 1, true);
    } catch (const std::invalid_argument& e) {
      refused = std::strstr(e.what(), "threads: must be in 1..") != nullptr;
    }
    CHECK(refused, "compile_schedule accepted %d threads for %d paths", P + 1, P);
    ++passed;
  }

  // 8. oneDNN's and XNNPACK's int8 convs equal the int8 reference bytewise (7-bit weights:
  // eligible for oneDNN on every x86 ISA), dense, depthwise, strided and 1x1, on channel
  // slices of wider pixels.
  for (nasrt::Backend backend : {nasrt::Backend::Onednn, nasrt::Backend::Xnnpack}) {
    if (!nasrt::backend_compiled(backend)) continue;
    const std::string bn = nasrt::backend_name(backend);
    struct Case { int h, w, k, s, groups, gi, go, zx; bool relu; };
    for (const Case& c : {Case{9, 7, 3, 1, 1, 5, 6, 0, true}, Case{10, 10, 5, 2, 1, 8, 16, 7, false},
                          Case{8, 9, 3, 2, 12, 1, 1, 0, true}, Case{6, 6, 1, 1, 1, 24, 10, 0, false},
                          Case{7, 7, 3, 1, 6, 1, 2, 3, true}}) {
      nasrt::ConvGeom g;
      g.in_h = c.h, g.in_w = c.w, g.kernel = c.k, g.stride = c.s, g.groups = c.groups;
      g.group_in = c.gi, g.group_out = c.go, g.relu = c.relu;
      g.set_same_pad();
      const int ic = c.groups * c.gi, oc = c.groups * c.go;
      g.in_stride = ic + 3, g.out_stride = oc + 2;
      uint32_t r = 12345u + c.k * 7 + c.groups;
      auto next = [&r] { return r ^= r << 13, r ^= r >> 17, r ^= r << 5; };
      std::vector<uint8_t> in(static_cast<size_t>(c.h) * c.w * g.in_stride + 64);
      for (uint8_t& v : in) v = static_cast<uint8_t>(next() >> 24);
      std::vector<int8_t> w(static_cast<size_t>(oc) * c.k * c.k * c.gi);
      for (int8_t& v : w) v = static_cast<int8_t>(static_cast<int>(next() % 129) - 64);
      nasrt::Int8Conv q{c.zx, 0, std::vector<int32_t>(oc), std::vector<float>(oc)};
      for (int i = 0; i < oc; ++i) {
        q.m[i] = (1.0f + i % 3) / (400.0f * c.k * std::sqrt(float(c.gi)));
        q.bias[i] = static_cast<int32_t>(next() % 20001) - 10000;
      }
      const size_t n = static_cast<size_t>(g.out_h()) * g.out_w() * g.out_stride + 64;
      std::vector<uint8_t> want(n, 0), got(n, 0);
      nasrt::ref::conv_int8(g, q, w.data(), in.data(), want.data());
      try {
        nasrt::find_kernels(backend, nasrt::Precision::Int8)
            ->make_conv_int8(g, q, w.data(), in.data(), got.data())->run();
        CHECK(got == want, "%s int8 k%d s%d g%d: differs from the reference", bn.c_str(), c.k,
              c.s, c.groups);
      } catch (const std::exception& e) {
        CHECK(false, "%s int8 k%d s%d g%d: %s", bn.c_str(), c.k, c.s, c.groups, e.what());
      }
      CHECK(nasrt::check_conv_int8(backend, g, q, w.data()).empty(),
            "%s int8 k%d s%d g%d: self-check failed", bn.c_str(), c.k, c.s, c.groups);
    }
    ++passed;
  }

  // 9. Quantised nets on every backend, 1..P threads, balance on/off: bitwise the rule.
  test_int8_fallback_said_once();
  CHECK(test_int8_executor(false) > 0, "no int8 net ran");
  ++passed;

  // 11. Residual blocks (identity and projection, into sums and concats): random float nets
  // against the plain evaluation, int8 nets bitwise the rule, the int8 add alone against
  // hand-computed codes, the schedule, and malformed residual entries of a model file.
  test_residual_f32();
  CHECK(test_int8_executor(true) > 0, "no residual int8 net ran");
  test_residual_add_int8_values();
  test_residual_model_files();
  ++passed;

  // 10. The int8 fixture vs the x86 logits on every int8 backend (the aarch64 board check).
  CHECK(int8_fixture_check(dir) > 0, "the int8 fixture ran on no backend");
  ++passed;

  std::printf("%d passed, %d failed\n", passed - (failures > 0), failures);
  return failures ? 1 : 0;
}
