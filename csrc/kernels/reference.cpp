// Plain C++ kernels: the oracle in tests and the fallback without XNNPACK.
#include <algorithm>
#include <stdexcept>
#include <vector>

#include "kernels/kernels.h"

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

std::unique_ptr<Op> make_conv(Backend backend, const ConvGeom& g, const float* weight,
                              const float* bias, const float* in, float* out) {
  if (g.groups < 1 || g.group_in < 1 || g.group_out < 1 || g.kernel < 1 || g.stride < 1 ||
      g.in_h < 1 || g.in_w < 1 || g.out_h() < 1 || g.out_w() < 1)
    throw std::runtime_error("conv: invalid geometry");
  if (backend == Backend::Xnnpack) return xnn::make_conv(g, weight, bias, in, out);
  if (backend == Backend::Onednn) return onednn::make_conv(g, weight, bias, in, out);
  if (backend == Backend::Auto) throw std::logic_error("conv: backend Auto not resolved");
  return std::make_unique<RefConv>(g, weight, bias, in, out);
}

std::unique_ptr<Op> make_fc(Backend backend, int in, int out, bool relu, const float* weight,
                            const float* bias, const float* x, float* y) {
  if (in < 1 || out < 1) throw std::runtime_error("fc: invalid size");
  if (backend == Backend::Xnnpack) return xnn::make_fc(in, out, relu, weight, bias, x, y);
  if (backend == Backend::Onednn) return onednn::make_fc(in, out, relu, weight, bias, x, y);
  if (backend == Backend::Auto) throw std::logic_error("fc: backend Auto not resolved");
  return std::make_unique<RefFc>(in, out, relu, weight, bias, x, y);
}

std::unique_ptr<Op> make_sum(std::vector<const float*> ins, float* out, size_t begin,
                             size_t end) {
  if (ins.empty()) throw std::runtime_error("sum: no inputs");
  return std::make_unique<Sum>(std::move(ins), out, begin, end);
}

std::unique_ptr<Op> make_global_avg_pool(int hw, int channels, int stride, const float* in,
                                         float* out) {
  return std::make_unique<GlobalAvgPool>(hw, channels, stride, in, out);
}

std::vector<float> oihw_to_ohwi(const float* w, int gi, int k, int o0, int o1) {
  std::vector<float> out(static_cast<size_t>(o1 - o0) * k * k * gi);
  for (int o = o0; o < o1; ++o)
    for (int i = 0; i < gi; ++i)
      for (int y = 0; y < k; ++y)
        for (int x = 0; x < k; ++x)
          out[((static_cast<size_t>(o - o0) * k + y) * k + x) * gi + i] =
              w[((static_cast<size_t>(o) * gi + i) * k + y) * k + x];
  return out;
}

std::string backend_name(Backend b) {
  switch (b) {
    case Backend::Xnnpack: return "xnnpack";
    case Backend::Onednn: return "onednn";
    case Backend::Auto: return "auto";
    default: return "reference";
  }
}

Backend parse_backend(const std::string& name) {
  for (Backend b : {Backend::Reference, Backend::Xnnpack, Backend::Onednn, Backend::Auto})
    if (backend_name(b) == name) return b;
  throw std::invalid_argument("backend: must be auto, xnnpack, onednn or reference, got '" +
                              name + "'");
}

bool backend_compiled(Backend b) {
  switch (b) {
    case Backend::Xnnpack: return xnnpack_compiled();
    case Backend::Onednn: return onednn_compiled();
    default: return true;
  }
}

std::vector<Backend> compiled_backends() {
  std::vector<Backend> out;
  for (Backend b : {Backend::Onednn, Backend::Xnnpack, Backend::Reference})
    if (backend_compiled(b)) out.push_back(b);
  return out;
}

}  // namespace nasrt
