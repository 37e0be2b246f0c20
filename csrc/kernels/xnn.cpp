// XNNPACK (2022 operator API) kernels: weights packed at creation, pointers
// bound once by setup, each op run on the calling thread (null thread pool).
#include <cmath>
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
}  // namespace xnn
#endif

}  // namespace nasrt
