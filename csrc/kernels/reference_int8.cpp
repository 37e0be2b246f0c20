// The int8 reference conv (docs/FORMATS.md section 6, the C++ twin of the numpy oracle
// nasrt.quant.reference), the int8 parameter check and the int8 load-time self-check.
// Built with -ffp-contract=off: float(acc) * m must round once, as on every other host.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/registry.h"

namespace nasrt {

void validate_int8(const ConvGeom& g, const Int8Conv& q) {
  const size_t oc = static_cast<size_t>(g.groups) * g.group_out;
  auto bad = [](const std::string& field, const std::string& what) {
    throw std::invalid_argument("int8 conv: " + field + ": " + what);
  };
  if (q.zx < 0 || q.zx > 255) bad("zx", "must be in [0, 255], got " + std::to_string(q.zx));
  if (q.zy < 0 || q.zy > 255) bad("zy", "must be in [0, 255], got " + std::to_string(q.zy));
  if (q.bias.size() != oc || q.m.size() != oc)
    bad("bias, m", "must have " + std::to_string(oc) + " values (one per output channel)");
  for (size_t c = 0; c < oc; ++c) {
    // XNNPACK qc8 refuses M >= 256 and qs8 aborts below 2^-32: one range for every backend.
    const float m = q.m[c];
    if (!std::isfinite(m) || m < 0x1p-32f || m >= 256.0f) {
      char buf[96];
      std::snprintf(buf, sizeof buf, "must be finite and in [2^-32, 256), got %.9g", m);
      bad("m[" + std::to_string(c) + "]", buf);
    }
  }
}

namespace ref {

void conv_int8(const ConvGeom& g, const Int8Conv& q, const int8_t* weight, const uint8_t* in,
               uint8_t* out) {
  const int oh = g.out_h(), ow = g.out_w(), k = g.kernel;
  const long lo = g.relu ? q.zy : 0;
  for (int oy = 0; oy < oh; ++oy) {
    for (int ox = 0; ox < ow; ++ox) {
      uint8_t* o = out + (static_cast<size_t>(oy) * ow + ox) * g.out_stride;
      for (int gr = 0; gr < g.groups; ++gr) {
        for (int oc = 0; oc < g.group_out; ++oc) {
          const int co = gr * g.group_out + oc;
          const int8_t* w = weight + static_cast<size_t>(co) * k * k * g.group_in;
          int32_t acc = q.bias[co];
          for (int ky = 0; ky < k; ++ky) {
            const int iy = oy * g.stride - g.pad_top + ky;
            if (iy < 0 || iy >= g.in_h) continue;  // a padded tap is zx: it adds 0
            for (int kx = 0; kx < k; ++kx) {
              const int ix = ox * g.stride - g.pad_left + kx;
              if (ix < 0 || ix >= g.in_w) continue;
              const uint8_t* px = in + (static_cast<size_t>(iy) * g.in_w + ix) * g.in_stride +
                                  gr * g.group_in;
              const int8_t* wk = w + (ky * k + kx) * g.group_in;
              for (int ic = 0; ic < g.group_in; ++ic) acc += (int32_t{px[ic]} - q.zx) * wk[ic];
            }
          }
          // Round half to even in float32 (FE_TONEAREST), then the zero point.
          const long y = std::lrintf(static_cast<float>(acc) * q.m[co]) + q.zy;
          o[co] = static_cast<uint8_t>(std::clamp(y, lo, 255L));
        }
      }
    }
  }
}

namespace {

class RefConvInt8 final : public Op {
 public:
  RefConvInt8(const ConvGeom& g, const Int8Conv& q, const int8_t* w, const uint8_t* in,
              uint8_t* out)
      : g_(g), q_(q), in_(in), out_(out) {
    const size_t co = static_cast<size_t>(g.groups) * g.group_out;
    const size_t per = static_cast<size_t>(g.kernel) * g.kernel * g.group_in;
    w_.assign(w, w + co * per);
    // Worst case |acc| over all inputs must fit int32, so run() needs no check.
    for (size_t c = 0; c < co; ++c) {
      int64_t wsum = 0;
      for (size_t i = 0; i < per; ++i) wsum += std::abs(int{w_[c * per + i]});
      if (std::abs(int64_t{q.bias[c]}) + 255 * wsum > std::numeric_limits<int32_t>::max())
        throw std::runtime_error("int8 conv: an int32 accumulator can overflow (output channel " +
                                 std::to_string(c) + ")");
    }
  }
  void run() override { conv_int8(g_, q_, w_.data(), in_, out_); }

 private:
  ConvGeom g_;
  Int8Conv q_;
  std::vector<int8_t> w_;
  const uint8_t* in_;
  uint8_t* out_;
};

}  // namespace

std::unique_ptr<Op> make_conv_int8(const ConvGeom& g, const Int8Conv& q, const int8_t* weight,
                                   const uint8_t* in, uint8_t* out) {
  return std::make_unique<RefConvInt8>(g, q, weight, in, out);
}

}  // namespace ref

std::string check_conv_int8(Backend backend, const ConvGeom& g, const Int8Conv& q,
                            const int8_t* weight) {
  const int oc = g.groups * g.group_out, n = g.kernel * g.kernel * g.group_in;
  const size_t per = static_cast<size_t>(n), pixels = static_cast<size_t>(g.out_h()) * g.out_w();
  int wmax = 1;
  for (size_t i = 0; i < oc * per; ++i) wmax = std::max(wmax, std::abs(int{weight[i]}));
  wmax = std::min(wmax, 127);
  // Deterministic xorshift32 data: the input over all of u8, the weights over the layer's
  // range (a 7-bit layer is checked with 7-bit weights, an 8-bit one with 8-bit weights).
  uint32_t s = 0x9e3779b9u;
  auto next = [&s] { return s ^= s << 13, s ^= s >> 17, s ^= s << 5; };
  std::vector<uint8_t> in(static_cast<size_t>(g.in_h) * g.in_w * g.in_stride + kBufferSlackFloats);
  for (uint8_t& v : in) v = static_cast<uint8_t>(next() >> 24);
  std::vector<int8_t> w(oc * per);
  for (int8_t& v : w) v = static_cast<int8_t>(static_cast<int>(next() % (2u * wmax + 1)) - wmax);
  // The layer's extremes, always: a small conv's random draw can miss them (an 8 x 1 x 3 x 3
  // conv with max |w| 65 drew none above 64, passed, and oneDNN without VNNI then refused the
  // real weights at load).
  w[0] = static_cast<int8_t>(wmax);
  if (w.size() > 1) w[w.size() - 1] = static_cast<int8_t>(-wmax);
  // Multipliers and biases that spread the outputs over the u8 range (about 128 +- 48,
  // distinct per channel), so a wrong sum shows instead of saturating.
  const double rms_x = std::sqrt(21717.5 - 255.0 * q.zx + double(q.zx) * q.zx);
  const double sd = std::sqrt(double(n)) * rms_x * wmax / std::sqrt(3.0);
  Int8Conv cq{q.zx, q.zy, std::vector<int32_t>(oc), std::vector<float>(oc)};
  for (int c = 0; c < oc; ++c) {
    cq.m[c] = static_cast<float>(48.0 / sd * (1.0 + (c % 5) / 8.0));
    cq.bias[c] = static_cast<int32_t>(std::lrint((128.0 - q.zy) / cq.m[c]));
  }
  const size_t out_size = pixels * g.out_stride + kBufferSlackFloats;
  std::vector<uint8_t> want(out_size, 0), got(out_size);
  ref::conv_int8(g, cq, w.data(), in.data(), want.data());
  for (size_t i = 0; i < out_size; ++i) got[i] = static_cast<uint8_t>(want[i] + 128);  // unwritten shows
  try {
    const KernelSet* k = find_kernels(backend, Precision::Int8);
    if (!k) throw std::logic_error("no int8 kernels");
    k->make_conv_int8(g, q, weight, in.data(), got.data());  // the real weights and parameters
    k->make_conv_int8(g, cq, w.data(), in.data(), got.data())->run();
  } catch (const std::exception& e) {
    return std::string("cannot create it: ") + e.what();
  }
  int worst = 0;
  size_t wrong = 0;
  for (size_t p = 0; p < pixels; ++p)
    for (int c = 0; c < oc; ++c) {
      const int d = std::abs(int{got[p * g.out_stride + c]} - int{want[p * g.out_stride + c]});
      worst = std::max(worst, d);
      wrong += d > 1;
    }
  if (worst <= 1) return "";
  return "max " + std::to_string(worst) + " LSB, " + std::to_string(wrong) + " of " +
         std::to_string(pixels * oc) + " outputs off by more than 1 vs the reference kernels";
}

namespace {

// The loops of the non-conv int8 ops, on x86-64 compiled once per ISA level and picked at load
// (function multiversioning, an ifunc): the baseline x86-64 build left them scalar, the stem
// output's quantisation alone 16 % of a Fashion-MNIST int8 run (perf). Every clone does the same
// IEEE float32 operations in the same order (this file is built with -ffp-contract=off; the
// division, conversions, min/max and the 1.5 * 2^23 rounding are exact in SIMD too), so the
// results are bitwise those of the baseline clone. Elsewhere the baseline ISA (NEON) vectorises.
// Not under a sanitizer: the ifunc resolver runs while the dynamic loader relocates, before the
// sanitizer's runtime is up, and its instrumented entry crashes (TSan: SIGSEGV at load).
#if defined(__has_feature)
#if __has_feature(thread_sanitizer) || __has_feature(address_sanitizer) || \
    __has_feature(undefined_behavior_sanitizer)
#define NASRT_SANITIZED 1
#endif
#endif
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
#define NASRT_SANITIZED 1
#endif
#if defined(__x86_64__) && defined(__GNUC__) && !defined(NASRT_SANITIZED)
#define NASRT_ISA_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define NASRT_ISA_CLONES
#endif

// clamp(rne(v) + zp, lo, 255) of a float32 v. v is clamped to +-512 first (anything beyond,
// or NaN, saturates alike), where adding and subtracting 1.5 * 2^23 rounds half to even in
// the default rounding mode: exactly nearbyint, but a loop of it vectorises (nearbyintf is a
// library call on baseline x86-64: 20% of an int8 run went to it, measured with perf).
inline uint8_t requant(float v, int zp, int lo) {
  constexpr float kRound = 12582912.0f;  // 1.5 * 2^23
  v = v < 512.0f ? v : 512.0f;  // minss/maxss: NaN becomes 512
  v = v > -512.0f ? v : -512.0f;
  const float r = (v + kRound) - kRound;
  return static_cast<uint8_t>(std::clamp(static_cast<int>(r) + zp, lo, 255));
}

// Pixels [p0, p1) of nc channels; a dense tensor (both strides nc) as one run of elements, so
// a stem of 8 channels vectorises as well as a wide one.
template <typename F>
inline void over_pixels(int nc, int is, int os, size_t p0, size_t p1, F row) {
  if (is == nc && os == nc) return row(p0 * nc, p0 * nc, (p1 - p0) * nc);
  for (size_t p = p0; p < p1; ++p) row(p * is, p * os, static_cast<size_t>(nc));
}

NASRT_ISA_CLONES void quantize_pixels(const float* in, int is, uint8_t* out, int os, int nc,
                                      size_t p0, size_t p1, float s, int zp) {
  over_pixels(nc, is, os, p0, p1, [=](size_t i0, size_t o0, size_t n) {
    const float* __restrict x = in + i0;
    uint8_t* __restrict y = out + o0;
    for (size_t i = 0; i < n; ++i) y[i] = requant(x[i] / s, zp, 0);  // a division (QuantizeLinear)
  });
}

NASRT_ISA_CLONES void dequantize_pixels(const uint8_t* in, int is, float* out, int os, int nc,
                                        size_t p0, size_t p1, float s, int zp) {
  const float z = static_cast<float>(zp);
  over_pixels(nc, is, os, p0, p1, [=](size_t i0, size_t o0, size_t n) {
    const uint8_t* __restrict x = in + i0;
    float* __restrict y = out + o0;
    for (size_t i = 0; i < n; ++i) y[i] = (static_cast<float>(x[i]) - z) * s;
  });
}

NASRT_ISA_CLONES void sum_int8(const uint8_t* const* ins, size_t n_in, int zx, float m, int zy,
                               uint8_t* __restrict out, size_t b, size_t e) {
  const int bias = -zx * static_cast<int>(n_in);
  if (n_in == 2) {  // the common case, two paths: one pass
    const uint8_t *__restrict x0 = ins[0], *__restrict x1 = ins[1];
    for (size_t i = b; i < e; ++i)
      out[i] = requant(static_cast<float>(bias + x0[i] + x1[i]) * m, zy, 0);
    return;
  }
  for (size_t i = b; i < e; ++i) {
    int acc = bias;
    for (size_t k = 0; k < n_in; ++k) acc += ins[k][i];
    out[i] = requant(static_cast<float>(acc) * m, zy, 0);
  }
}

// The residual add, pixels [p0, p1) of nc codes: every clone computes the two float32 products,
// their float32 sum and one rounding (no FMA: -ffp-contract=off), bitwise the baseline's.
NASRT_ISA_CLONES void residual_add_int8(const uint8_t* a, int as, int za, float ma, const uint8_t* b,
                                        int bs, int zb, float mb, uint8_t* out, int os, int zy,
                                        int nc, size_t p0, size_t p1) {
  const float fa = static_cast<float>(za), fb = static_cast<float>(zb);
  auto row = [=](const uint8_t* __restrict x, const uint8_t* __restrict y, uint8_t* __restrict o,
                 size_t n) {
    for (size_t i = 0; i < n; ++i) {
      const float va = (static_cast<float>(x[i]) - fa) * ma;  // float(qa - za): exact either way
      const float vb = (static_cast<float>(y[i]) - fb) * mb;
      o[i] = requant(va + vb, zy, zy);
    }
  };
  if (as == nc && bs == nc && os == nc) return row(a + p0 * nc, b + p0 * nc, out + p0 * nc, (p1 - p0) * nc);
  for (size_t p = p0; p < p1; ++p) row(a + p * as, b + p * bs, out + p * os, static_cast<size_t>(nc));
}

NASRT_ISA_CLONES void gap_int8(int hw, int nc, int stride, const uint8_t* in, int zx, float m,
                               int zy, int32_t* __restrict acc, uint8_t* __restrict out) {
  std::fill(acc, acc + nc, -zx * hw);
  for (int p = 0; p < hw; ++p) {
    const uint8_t* __restrict px = in + static_cast<size_t>(p) * stride;
    for (int c = 0; c < nc; ++c) acc[c] += px[c];
  }
  for (int c = 0; c < nc; ++c) out[c] = requant(static_cast<float>(acc[c]) * m, zy, 0);
}

// acc[c] = bias0[c] + sum_i x[i] * w[c][i], bias0 = bias - zx * sum_i w[c][i] (folded at load:
// the same integer, and a plain u8 x s8 dot product vectorises).
NASRT_ISA_CLONES void fc_acc_int8(int in, int out, const int8_t* w, const int32_t* bias0,
                                  const uint8_t* __restrict x, int32_t* __restrict acc) {
  for (int c = 0; c < out; ++c) {
    const int8_t* __restrict wc = w + static_cast<size_t>(c) * in;
    int32_t a = 0;
    for (int i = 0; i < in; ++i) a += int32_t{x[i]} * wc[i];
    acc[c] = bias0[c] + a;
  }
}

// Quantize (f32 -> u8) and Dequantize (u8 -> f32) of pixels [p0, p1).
template <typename In, typename Out,
          void (*kConvert)(const In*, int, Out*, int, int, size_t, size_t, float, int)>
class Convert final : public Op {
 public:
  Convert(const In* in, int is, Out* out, int os, int c, size_t p0, size_t p1, float s, int zp)
      : in_(in), out_(out), is_(is), os_(os), c_(c), p0_(p0), p1_(p1), s_(s), zp_(zp) {}
  void run() override { kConvert(in_, is_, out_, os_, c_, p0_, p1_, s_, zp_); }

 private:
  const In* in_;
  Out* out_;
  int is_, os_, c_;
  size_t p0_, p1_;
  float s_;
  int zp_;
};
using Quantize = Convert<float, uint8_t, quantize_pixels>;
using Dequantize = Convert<uint8_t, float, dequantize_pixels>;

class SumInt8 final : public Op {
 public:
  SumInt8(std::vector<const uint8_t*> ins, int zx, float m, int zy, uint8_t* out, size_t b,
          size_t e)
      : ins_(std::move(ins)), zx_(zx), zy_(zy), m_(m), out_(out), b_(b), e_(e) {}
  void run() override { sum_int8(ins_.data(), ins_.size(), zx_, m_, zy_, out_, b_, e_); }

 private:
  std::vector<const uint8_t*> ins_;
  int zx_, zy_;
  float m_;
  uint8_t* out_;
  size_t b_, e_;
};

class ResidualAddInt8 final : public Op {
 public:
  ResidualAddInt8(const uint8_t* a, int as, int za, float ma, const uint8_t* b, int bs, int zb,
                  float mb, uint8_t* out, int os, int zy, int c, size_t p0, size_t p1)
      : a_(a), b_(b), out_(out), as_(as), bs_(bs), os_(os), za_(za), zb_(zb), zy_(zy), c_(c),
        ma_(ma), mb_(mb), p0_(p0), p1_(p1) {}
  void run() override {
    residual_add_int8(a_, as_, za_, ma_, b_, bs_, zb_, mb_, out_, os_, zy_, c_, p0_, p1_);
  }

 private:
  const uint8_t *a_, *b_;
  uint8_t* out_;
  int as_, bs_, os_, za_, zb_, zy_, c_;
  float ma_, mb_;
  size_t p0_, p1_;
};

class GapInt8 final : public Op {
 public:
  GapInt8(int hw, int c, int stride, const uint8_t* in, int zx, float m, int zy, uint8_t* out)
      : hw_(hw), c_(c), stride_(stride), zx_(zx), zy_(zy), m_(m), in_(in), out_(out), acc_(c) {}
  void run() override { gap_int8(hw_, c_, stride_, in_, zx_, m_, zy_, acc_.data(), out_); }

 private:
  int hw_, c_, stride_, zx_, zy_;
  float m_;
  const uint8_t* in_;
  uint8_t* out_;
  std::vector<int32_t> acc_;  // sized at load: run() allocates nothing
};

// acc[c] = bias[c] + sum_i (x[i] - zx) * w[c][i]; the worst case fits int32 (checked at load).
class FcInt8 final : public Op {
 public:
  FcInt8(int in, int out, bool relu, const int8_t* w, const std::vector<int32_t>& bias, int zx,
         std::vector<float> m, int zy, const uint8_t* x, uint8_t* yq, float* yf)
      : in_(in), out_(out), zy_(zy), relu_(relu), w_(w, w + static_cast<size_t>(in) * out),
        bias0_(out), m_(std::move(m)), acc_(out), x_(x), yq_(yq), yf_(yf) {
    for (int c = 0; c < out; ++c) {
      int64_t wsum = 0, wabs = 0;
      for (int i = 0; i < in; ++i) {
        const int v = w_[static_cast<size_t>(c) * in + i];
        wsum += v, wabs += std::abs(v);
      }
      // Every partial sum, and bias0 itself, is within |bias| + 255 * sum |w|.
      if (std::abs(int64_t{bias[c]}) + 255 * wabs > std::numeric_limits<int32_t>::max())
        throw std::runtime_error("int8 fc: an int32 accumulator can overflow (output " +
                                 std::to_string(c) + ")");
      bias0_[c] = static_cast<int32_t>(bias[c] - zx * wsum);
    }
  }
  void run() override {
    const int out = out_, zy = zy_, lo = relu_ ? zy_ : 0;
    int32_t* acc = acc_.data();
    fc_acc_int8(in_, out, w_.data(), bias0_.data(), x_, acc);
    if (yf_) {
      for (int c = 0; c < out; ++c) yf_[c] = static_cast<float>(acc[c]) * m_[c];
    } else {
      for (int c = 0; c < out; ++c) yq_[c] = requant(static_cast<float>(acc[c]) * m_[c], zy, lo);
    }
  }

 private:
  int in_, out_, zy_;
  bool relu_;
  std::vector<int8_t> w_;
  std::vector<int32_t> bias0_;
  std::vector<float> m_;
  std::vector<int32_t> acc_;  // sized at load
  const uint8_t* x_;
  uint8_t* yq_;
  float* yf_;
};

}  // namespace

std::unique_ptr<Op> make_quantize(const float* in, int in_stride, uint8_t* out, int out_stride,
                                  int channels, size_t p0, size_t p1, float scale, int zp) {
  return std::make_unique<Quantize>(in, in_stride, out, out_stride, channels, p0, p1, scale, zp);
}

std::unique_ptr<Op> make_dequantize(const uint8_t* in, int in_stride, float* out, int out_stride,
                                    int channels, size_t p0, size_t p1, float scale, int zp) {
  return std::make_unique<Dequantize>(in, in_stride, out, out_stride, channels, p0, p1, scale, zp);
}

std::unique_ptr<Op> make_sum_int8(std::vector<const uint8_t*> ins, int zx, float m, int zy,
                                  uint8_t* out, size_t begin, size_t end) {
  if (ins.empty()) throw std::runtime_error("sum: no inputs");
  return std::make_unique<SumInt8>(std::move(ins), zx, m, zy, out, begin, end);
}

std::unique_ptr<Op> make_residual_add_int8(const uint8_t* a, int a_stride, int za, float ma,
                                           const uint8_t* b, int b_stride, int zb, float mb,
                                           uint8_t* out, int out_stride, int zy, int channels,
                                           size_t p0, size_t p1) {
  return std::make_unique<ResidualAddInt8>(a, a_stride, za, ma, b, b_stride, zb, mb, out,
                                           out_stride, zy, channels, p0, p1);
}

std::unique_ptr<Op> make_global_avg_pool_int8(int hw, int channels, int stride, const uint8_t* in,
                                              int zx, float m, int zy, uint8_t* out) {
  return std::make_unique<GapInt8>(hw, channels, stride, in, zx, m, zy, out);
}

std::unique_ptr<Op> make_fc_int8(int in, int out, bool relu, const int8_t* weight,
                                 std::vector<int32_t> bias, int zx, std::vector<float> m, int zy,
                                 const uint8_t* x, uint8_t* y) {
  return std::make_unique<FcInt8>(in, out, relu, weight, bias, zx, std::move(m), zy, x, y,
                                  nullptr);
}

std::unique_ptr<Op> make_fc_int8_logits(int in, int out, const int8_t* weight,
                                        std::vector<int32_t> bias, int zx,
                                        std::vector<float> scale, const uint8_t* x, float* y) {
  return std::make_unique<FcInt8>(in, out, false, weight, bias, zx, std::move(scale), 0, x,
                                  nullptr, y);
}

bool conv_int8_split_exact(Backend backend, const ConvGeom& whole,
                           const std::vector<std::pair<int, int>>& pieces, const Int8Conv& q,
                           const int8_t* weight) {
  const KernelSet* k = find_kernels(backend, Precision::Int8);
  if (!k) return false;
  uint32_t s = 0x2545f491u;
  auto next = [&s] { return s ^= s << 13, s ^= s >> 17, s ^= s << 5; };
  std::vector<uint8_t> in(static_cast<size_t>(whole.in_h) * whole.in_w * whole.in_stride +
                          kBufferSlackFloats * 4);
  for (uint8_t& v : in) v = static_cast<uint8_t>(next() >> 24);
  const int ow = whole.out_w(), oc = whole.groups * whole.group_out;
  const size_t row = static_cast<size_t>(ow) * whole.out_stride;
  const size_t size = whole.out_h() * row + kBufferSlackFloats * 4;
  std::vector<uint8_t> want(size, 0), got(size, 0);
  try {
    k->make_conv_int8(whole, q, weight, in.data(), want.data())->run();
    for (auto [r0, r1] : pieces) {
      int first = 0;
      const ConvGeom g = conv_rows_geom(whole, r0, r1, &first);
      k->make_conv_int8(g, q, weight, in.data() + static_cast<size_t>(first) * whole.in_w * whole.in_stride,
                        got.data() + r0 * row)
          ->run();
    }
  } catch (const std::exception&) {
    return false;
  }
  for (size_t p = 0; p < static_cast<size_t>(whole.out_h()) * ow; ++p)
    for (int c = 0; c < oc; ++c)
      if (got[p * whole.out_stride + c] != want[p * whole.out_stride + c]) return false;
  return true;
}

}  // namespace nasrt
