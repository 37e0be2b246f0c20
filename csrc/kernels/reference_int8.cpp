// The int8 reference conv (docs/FORMATS.md section 6, the C++ twin of the numpy oracle
// nasrt.quant.reference), the int8 parameter check and the int8 load-time self-check.
// Built with -ffp-contract=off: float(acc) * m must round once, as on every other host.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <stdexcept>
#include <string>
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

}  // namespace nasrt
