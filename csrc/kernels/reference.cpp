// Plain C++ kernels: the oracle of the tests and of the load-time self-check,
// and the fallback where no kernel library is compiled (or all fail the check).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <string>
#include <stdexcept>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/registry.h"

namespace nasrt {
namespace ref {

void conv(const ConvGeom& g, const float* weight, const float* bias, const float* in, float* out) {
  const int oh = g.out_h(), ow = g.out_w(), k = g.kernel;
  for (int oy = 0; oy < oh; ++oy) {
    for (int ox = 0; ox < ow; ++ox) {
      float* o = out + (static_cast<size_t>(oy) * ow + ox) * g.out_stride;
      for (int gr = 0; gr < g.groups; ++gr) {
        for (int oc = 0; oc < g.group_out; ++oc) {
          const int co = gr * g.group_out + oc;
          const float* w = weight + static_cast<size_t>(co) * k * k * g.group_in;
          float acc = bias[co];
          for (int ky = 0; ky < k; ++ky) {
            const int iy = oy * g.stride - g.pad_top + ky;
            if (iy < 0 || iy >= g.in_h) continue;
            for (int kx = 0; kx < k; ++kx) {
              const int ix = ox * g.stride - g.pad_left + kx;
              if (ix < 0 || ix >= g.in_w) continue;
              const float* px = in + (static_cast<size_t>(iy) * g.in_w + ix) * g.in_stride +
                                gr * g.group_in;
              const float* wk = w + (ky * k + kx) * g.group_in;
              for (int ic = 0; ic < g.group_in; ++ic) acc += px[ic] * wk[ic];
            }
          }
          o[co] = g.relu ? std::max(acc, 0.0f) : acc;
        }
      }
    }
  }
}

void fc(int in, int out, bool relu, const float* weight, const float* bias, const float* x,
        float* y) {
  for (int o = 0; o < out; ++o) {
    float acc = bias[o];
    const float* w = weight + static_cast<size_t>(o) * in;
    for (int i = 0; i < in; ++i) acc += w[i] * x[i];
    y[o] = relu ? std::max(acc, 0.0f) : acc;
  }
}

}  // namespace ref

namespace {

class RefConv final : public Op {
 public:
  RefConv(const ConvGeom& g, const float* w, const float* b, const float* in, float* out)
      : g_(g), in_(in), out_(out) {
    const size_t co = static_cast<size_t>(g.groups) * g.group_out;
    w_.assign(w, w + co * g.kernel * g.kernel * g.group_in);
    b_.assign(b, b + co);
  }
  void run() override { ref::conv(g_, w_.data(), b_.data(), in_, out_); }

 private:
  ConvGeom g_;
  std::vector<float> w_, b_;
  const float* in_;
  float* out_;
};

class RefFc final : public Op {
 public:
  RefFc(int in, int out, bool relu, const float* w, const float* b, const float* x, float* y)
      : in_(in), out_(out), relu_(relu), w_(w, w + static_cast<size_t>(in) * out), b_(b, b + out),
        x_(x), y_(y) {}
  void run() override { ref::fc(in_, out_, relu_, w_.data(), b_.data(), x_, y_); }

 private:
  int in_, out_;
  bool relu_;
  std::vector<float> w_, b_;
  const float* x_;
  float* y_;
};

class Sum final : public Op {
 public:
  Sum(std::vector<const float*> ins, float* out, size_t begin, size_t end)
      : ins_(std::move(ins)), out_(out), begin_(begin), end_(end) {}
  void run() override {
    float* o = out_;
    const float* a = ins_[0];
    for (size_t i = begin_; i < end_; ++i) o[i] = a[i];
    for (size_t k = 1; k < ins_.size(); ++k) {
      const float* b = ins_[k];
      for (size_t i = begin_; i < end_; ++i) o[i] += b[i];
    }
  }

 private:
  std::vector<const float*> ins_;
  float* out_;
  size_t begin_, end_;
};

class ResidualAdd final : public Op {
 public:
  ResidualAdd(const float* a, int as, const float* b, int bs, float* out, int os, int c, size_t p0,
              size_t p1)
      : a_(a), b_(b), out_(out), as_(as), bs_(bs), os_(os), c_(c), p0_(p0), p1_(p1) {}
  void run() override {
    for (size_t p = p0_; p < p1_; ++p) {
      const float* __restrict a = a_ + p * as_;
      const float* __restrict b = b_ + p * bs_;
      float* __restrict o = out_ + p * os_;
      for (int i = 0; i < c_; ++i) o[i] = std::max(a[i] + b[i], 0.0f);
    }
  }

 private:
  const float *a_, *b_;
  float* out_;
  int as_, bs_, os_, c_;
  size_t p0_, p1_;
};

class GlobalAvgPool final : public Op {
 public:
  GlobalAvgPool(int hw, int c, int stride, const float* in, float* out)
      : hw_(hw), c_(c), stride_(stride), in_(in), out_(out) {}
  void run() override {
    for (int c = 0; c < c_; ++c) out_[c] = 0.0f;
    for (int p = 0; p < hw_; ++p) {
      const float* px = in_ + static_cast<size_t>(p) * stride_;
      for (int c = 0; c < c_; ++c) out_[c] += px[c];
    }
    const float inv = 1.0f / static_cast<float>(hw_);
    for (int c = 0; c < c_; ++c) out_[c] *= inv;
  }

 private:
  int hw_, c_, stride_;
  const float* in_;
  float* out_;
};

}  // namespace

namespace ref {

std::unique_ptr<Op> make_conv(const ConvGeom& g, const float* weight, const float* bias,
                              const float* in, float* out) {
  return std::make_unique<RefConv>(g, weight, bias, in, out);
}

std::unique_ptr<Op> make_fc(int in, int out, bool relu, const float* weight, const float* bias,
                            const float* x, float* y) {
  return std::make_unique<RefFc>(in, out, relu, weight, bias, x, y);
}

}  // namespace ref

namespace {

// Deterministic inputs in [-1, 1) (xorshift32): the check is the same on every load.
void fill_random(std::vector<float>& v, uint32_t seed) {
  uint32_t s = seed | 1u;
  for (float& x : v) {
    s ^= s << 13, s ^= s >> 17, s ^= s << 5;
    x = static_cast<float>(s >> 8) * (2.0f / 16777216.0f) - 1.0f;
  }
}

// Largest |fast - ref| relative to the largest |ref| (at least 1), over `n`
// values `stride` apart, `c` channels each; inf when a value is not finite
// (an unwritten output still holds its NaN sentinel).
double rel_error(const float* fast, const float* ref, size_t pixels, int c, int stride) {
  double scale = 1.0, err = 0.0;
  for (size_t p = 0; p < pixels; ++p)
    for (int i = 0; i < c; ++i) scale = std::max(scale, std::fabs(double(ref[p * stride + i])));
  for (size_t p = 0; p < pixels; ++p)
    for (int i = 0; i < c; ++i) {
      const double d = std::fabs(double(fast[p * stride + i]) - double(ref[p * stride + i]));
      if (!std::isfinite(d)) return std::numeric_limits<double>::infinity();
      err = std::max(err, d);
    }
  return err / scale;
}

// Float32 rounding differs between kernels by ~1e-6 relative; a broken kernel is
// off by >= 1e-2 (measured: 0.04 .. 1e36).
constexpr double kCheckTolerance = 1e-3;

std::string describe(double err) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "relative error %.3g vs the reference kernels", err);
  return buf;
}

}  // namespace

ConvGeom conv_rows_geom(const ConvGeom& whole, int r0, int r1, int* first_in_row) {
  const int k = whole.kernel, s = whole.stride;
  // Output rows [r0, r1) read input rows [a, b]; rows outside [0, in_h) are padding.
  const int a = r0 * s - whole.pad_top, b = (r1 - 1) * s - whole.pad_top + k - 1;
  const int a_in = std::max(a, 0), b_in = std::min(b, whole.in_h - 1);
  ConvGeom g = whole;
  g.in_h = b_in - a_in + 1;
  g.pad_top = a_in - a;
  g.pad_bottom = b - b_in;
  *first_in_row = a_in;
  return g;
}

namespace {

uint64_t fnv1a(const void* data, size_t bytes, uint64_t h) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

// Results by backend, geometry, pieces and a hash of the weights: loading the
// same model again (a server's workers, tests) does not redo the reference work.
std::mutex check_mutex;
std::map<std::string, ConvCheck> check_cache;

std::string check_key(Backend backend, const ConvGeom& g,
                      const std::vector<std::pair<int, int>>& pieces, const float* weight,
                      const float* bias) {
  const size_t co = static_cast<size_t>(g.groups) * g.group_out;
  uint64_t h = fnv1a(weight, co * g.kernel * g.kernel * g.group_in * sizeof(float),
                     1469598103934665603ull);
  h = fnv1a(bias, co * sizeof(float), h);
  std::string key = backend_name(backend);
  for (int v : {g.in_h, g.in_w, g.kernel, g.stride, g.pad_top, g.pad_bottom, g.pad_left,
                g.pad_right, g.groups, g.group_in, g.group_out, g.in_stride, g.out_stride,
                static_cast<int>(g.relu)})
    key += "," + std::to_string(v);
  for (const auto& [r0, r1] : pieces) key += ";" + std::to_string(r0) + "-" + std::to_string(r1);
  return key + "#" + std::to_string(h);
}

ConvCheck check_conv_uncached(Backend backend, const ConvGeom& whole,
                              const std::vector<std::pair<int, int>>& pieces,
                              const float* weight, const float* bias);

}  // namespace

std::vector<std::pair<int, int>> row_pieces(int rows, int shares) {
  std::vector<std::pair<int, int>> pieces;
  for (int s = 0; s < shares && shares > 1; ++s) {
    const int r0 = static_cast<int>(static_cast<int64_t>(rows) * s / shares);
    const int r1 = static_cast<int>(static_cast<int64_t>(rows) * (s + 1) / shares);
    if (r1 > r0) pieces.emplace_back(r0, r1);
  }
  return pieces;
}

ConvCheck check_conv(Backend backend, const ConvGeom& whole,
                     const std::vector<std::pair<int, int>>& pieces, const float* weight,
                     const float* bias) {
  const std::string key = check_key(backend, whole, pieces, weight, bias);
  {
    std::lock_guard<std::mutex> lock(check_mutex);
    auto it = check_cache.find(key);
    if (it != check_cache.end()) return it->second;
  }
  ConvCheck r = check_conv_uncached(backend, whole, pieces, weight, bias);
  std::lock_guard<std::mutex> lock(check_mutex);
  if (check_cache.size() > 4096) check_cache.clear();  // bounded: a long-lived process
  check_cache.emplace(key, r);
  return r;
}

namespace {

ConvCheck check_conv_uncached(Backend backend, const ConvGeom& whole,
                              const std::vector<std::pair<int, int>>& pieces,
                              const float* weight, const float* bias) {
  ConvCheck r;
  const int oc = whole.groups * whole.group_out, oh = whole.out_h(), ow = whole.out_w();
  const size_t row_in = static_cast<size_t>(whole.in_w) * whole.in_stride;
  const size_t row_out = static_cast<size_t>(ow) * whole.out_stride;
  std::vector<float> in(whole.in_h * row_in + kBufferSlackFloats);
  fill_random(in, 0x9e3779b9u);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> want(oh * row_out + kBufferSlackFloats, nan);
  std::vector<float> got(want.size(), nan);
  ref::conv(whole, weight, bias, in.data(), want.data());
  try {
    make_conv(backend, whole, weight, bias, in.data(), got.data())->run();
  } catch (const std::exception& e) {
    r.why = std::string("cannot create it: ") + e.what();
    return r;
  }
  double err = rel_error(got.data(), want.data(), static_cast<size_t>(oh) * ow, oc,
                         whole.out_stride);
  r.split_exact = true;
  for (const auto& [r0, r1] : pieces) {
    int first = 0;
    const ConvGeom g = conv_rows_geom(whole, r0, r1, &first);
    std::vector<float> part((r1 - r0) * row_out + kBufferSlackFloats, nan);
    try {
      make_conv(backend, g, weight, bias, in.data() + first * row_in, part.data())->run();
    } catch (const std::exception& e) {
      r.why = "cannot create its rows " + std::to_string(r0) + ".." + std::to_string(r1) + ": " +
              e.what();
      return r;
    }
    const float* mine = want.data() + r0 * row_out;
    err = std::max(err, rel_error(part.data(), mine, static_cast<size_t>(r1 - r0) * ow, oc,
                                  whole.out_stride));
    // Bitwise equal rows keep 1 and P threads bitwise equal when the conv is split.
    const float* full = got.data() + r0 * row_out;
    for (size_t px = 0; px < static_cast<size_t>(r1 - r0) * ow && r.split_exact; ++px)
      if (std::memcmp(part.data() + px * whole.out_stride, full + px * whole.out_stride,
                      oc * sizeof(float)) != 0)
        r.split_exact = false;
  }
  r.ok = err <= kCheckTolerance;
  if (!r.ok) r.why = describe(err);
  return r;
}

}  // namespace

std::string check_fc(Backend backend, int in, int out, bool relu, const float* weight,
                     const float* bias) {
  std::vector<float> x(in + kBufferSlackFloats);
  fill_random(x, 0x85ebca6bu);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> want(out + kBufferSlackFloats, nan), got(want.size(), nan);
  ref::fc(in, out, relu, weight, bias, x.data(), want.data());
  try {
    const KernelSet* k = find_kernels(backend);
    if (!k) throw std::logic_error("backend Auto not resolved");
    k->make_fc(in, out, relu, weight, bias, x.data(), got.data())->run();
  } catch (const std::exception& e) {
    return std::string("cannot create it: ") + e.what();
  }
  const double err = rel_error(got.data(), want.data(), 1, out, out);
  return err <= kCheckTolerance ? std::string() : describe(err);
}

std::unique_ptr<Op> make_sum(std::vector<const float*> ins, float* out, size_t begin,
                             size_t end) {
  if (ins.empty()) throw std::runtime_error("sum: no inputs");
  return std::make_unique<Sum>(std::move(ins), out, begin, end);
}

std::unique_ptr<Op> make_residual_add(const float* a, int a_stride, const float* b, int b_stride,
                                      float* out, int out_stride, int channels, size_t p0, size_t p1) {
  return std::make_unique<ResidualAdd>(a, a_stride, b, b_stride, out, out_stride, channels, p0, p1);
}

std::unique_ptr<Op> make_global_avg_pool(int hw, int channels, int stride, const float* in,
                                         float* out) {
  return std::make_unique<GlobalAvgPool>(hw, channels, stride, in, out);
}

}  // namespace nasrt
