// XNNPACK (2022 operator API) kernels: weights packed at creation, pointers
// bound once by setup, each op run on the calling thread (null thread pool).
#include <cmath>
#include <cstdint>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>

#include "kernels/kernels.h"

#ifdef NASRT_HAVE_XNNPACK
#include <xnnpack.h>
#endif

namespace nasrt {

#ifdef NASRT_HAVE_XNNPACK
bool xnnpack_compiled() { return true; }

namespace xnn {
namespace {

void check(xnn_status s, const char* what) {
  if (s != xnn_status_success)
    throw std::runtime_error(std::string("XNNPACK ") + what + " failed (status " +
                             std::to_string(static_cast<int>(s)) + ")");
}

void ensure_initialized() {
  static std::once_flag once;
  static xnn_status status = xnn_status_uninitialized;
  std::call_once(once, [] { status = xnn_initialize(nullptr); });
  check(status, "initialize");
}

class XnnOp final : public Op {
 public:
  explicit XnnOp(xnn_operator_t op) : op_(op) {}
  ~XnnOp() override { xnn_delete_operator(op_); }
  void run() override { xnn_run_operator(op_, nullptr); }

 private:
  xnn_operator_t op_;
};

float out_max(bool) { return std::numeric_limits<float>::infinity(); }
float out_min(bool relu) { return relu ? 0.0f : -std::numeric_limits<float>::infinity(); }

}  // namespace

std::unique_ptr<Op> make_conv(const ConvGeom& g, const float* weight, const float* bias,
                              const float* in, float* out) {
  ensure_initialized();
  xnn_operator_t op = nullptr;
  // Without XNN_FLAG_DEPTHWISE_CONVOLUTION the kernel layout is
  // [groups, group_out, kh, kw, group_in]: OHWI, as we store it.
  check(xnn_create_convolution2d_nhwc_f32(
            g.pad_top, g.pad_right, g.pad_bottom, g.pad_left, g.kernel, g.kernel, g.stride, g.stride, 1, 1, g.groups,
            g.group_in, g.group_out, g.in_stride, g.out_stride, weight, bias, out_min(g.relu),
            out_max(g.relu), 0, &op),
        "create convolution");
  auto holder = std::make_unique<XnnOp>(op);
  check(xnn_setup_convolution2d_nhwc_f32(op, 1, g.in_h, g.in_w, in, out, nullptr),
        "setup convolution");
  return holder;
}

std::unique_ptr<Op> make_fc(int in, int out, bool relu, const float* weight, const float* bias,
                            const float* x, float* y) {
  ensure_initialized();
  xnn_operator_t op = nullptr;
  check(xnn_create_fully_connected_nc_f32(in, out, in, out, weight, bias, out_min(relu),
                                          out_max(relu), 0, &op),
        "create fully connected");
  auto holder = std::make_unique<XnnOp>(op);
  check(xnn_setup_fully_connected_nc_f32(op, 1, x, y, nullptr), "setup fully connected");
  return holder;
}

namespace {

// qc8 takes s8 activations: a u8 code q is the s8 code q ^ 0x80 with zero point zp - 128
// (the same real value, so the same sums and rounding). Until the XNNPACK path keeps its
// activations in s8, run() converts at the op's boundary into buffers made at load.
class XnnInt8Op final : public Op {
 public:
  XnnInt8Op(const ConvGeom& g, const uint8_t* in, uint8_t* out)
      : in_(in), out_(out), in_pixels_(static_cast<size_t>(g.in_h) * g.in_w),
        pixels_(static_cast<size_t>(g.out_h()) * g.out_w()), ic_(g.groups * g.group_in),
        oc_(g.groups * g.group_out), in_stride_(g.in_stride), out_stride_(g.out_stride),
        in_s8_(in_pixels_ * in_stride_ + XNN_EXTRA_BYTES), out_s8_(pixels_ * out_stride_) {}
  ~XnnInt8Op() override {
    if (op_) xnn_delete_operator(op_);
  }
  void run() override {
    for (size_t p = 0; p < in_pixels_; ++p)  // only the channels the conv reads
      for (int c = 0; c < ic_; ++c)
        in_s8_[p * in_stride_ + c] = static_cast<int8_t>(in_[p * in_stride_ + c] ^ 0x80);
    xnn_run_operator(op_, nullptr);
    for (size_t p = 0; p < pixels_; ++p)
      for (int c = 0; c < oc_; ++c)
        out_[p * out_stride_ + c] = static_cast<uint8_t>(out_s8_[p * out_stride_ + c] ^ 0x80);
  }
  xnn_operator_t op_ = nullptr;  // made by make_conv_int8, which binds it to the buffers below
  int8_t* in_s8() { return in_s8_.data(); }
  int8_t* out_s8() { return out_s8_.data(); }

 private:
  const uint8_t* in_;
  uint8_t* out_;
  size_t in_pixels_, pixels_;
  int ic_, oc_, in_stride_, out_stride_;
  std::vector<int8_t> in_s8_, out_s8_;
};

}  // namespace

std::unique_ptr<Op> make_conv_int8(const ConvGeom& g, const Int8Conv& q, const int8_t* weight,
                                   const uint8_t* in, uint8_t* out) {
  ensure_initialized();
  auto op = std::make_unique<XnnInt8Op>(g, in, out);
  // XNNPACK computes its multiplier as input_scale * kernel_scale[c] / output_scale in
  // float32: with both scales 1 that is exactly the caller's M[c].
  check(xnn_create_convolution2d_nhwc_qc8(
            g.pad_top, g.pad_right, g.pad_bottom, g.pad_left, g.kernel, g.kernel, g.stride,
            g.stride, 1, 1, g.groups, g.group_in, g.group_out, g.in_stride, g.out_stride,
            static_cast<int8_t>(q.zx - 128), 1.0f, q.m.data(), weight, q.bias.data(),
            static_cast<int8_t>(q.zy - 128), 1.0f, static_cast<int8_t>(g.relu ? q.zy - 128 : -128),
            127, 0, &op->op_),
        "create int8 convolution");
  check(xnn_setup_convolution2d_nhwc_qc8(op->op_, 1, g.in_h, g.in_w, op->in_s8(), op->out_s8(),
                                         nullptr),
        "setup int8 convolution");
  return op;
}

}  // namespace xnn

#else  // !NASRT_HAVE_XNNPACK
bool xnnpack_compiled() { return false; }
namespace xnn {
std::unique_ptr<Op> make_conv(const ConvGeom&, const float*, const float*, const float*, float*) {
  throw std::runtime_error("nasrt was built without XNNPACK");
}
std::unique_ptr<Op> make_fc(int, int, bool, const float*, const float*, const float*, float*) {
  throw std::runtime_error("nasrt was built without XNNPACK");
}
std::unique_ptr<Op> make_conv_int8(const ConvGeom&, const Int8Conv&, const int8_t*,
                                   const uint8_t*, uint8_t*) {
  throw std::runtime_error("nasrt was built without XNNPACK");
}
}  // namespace xnn
#endif

}  // namespace nasrt
