// oneDNN kernels: conv and FC primitives created (JIT-compiled for the host's
// ISA, weights reordered into the primitive's packed layout) at load; run()
// executes them on the calling thread through the C API with a prebuilt
// argument array and a user scratchpad, so it allocates nothing.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/kernels.h"

#ifdef NASRT_HAVE_ONEDNN
#include <omp.h>

#include <oneapi/dnnl/dnnl.hpp>
#endif

namespace nasrt {

#ifdef NASRT_HAVE_ONEDNN
bool onednn_compiled() { return true; }

namespace onednn {
namespace {

using dnnl::memory;
using tag = memory::format_tag;

// Debian's oneDNN uses the OpenMP runtime. Our threads are the paths, so every
// primitive is created and run with one OpenMP thread; the caller's setting
// (torch uses OpenMP too) is restored afterwards.
class OneThread {
 public:
  OneThread() : saved_(omp_get_max_threads()) {
    if (saved_ != 1) omp_set_num_threads(1);
  }
  ~OneThread() {
    if (saved_ != 1) omp_set_num_threads(saved_);
  }
  OneThread(const OneThread&) = delete;
  OneThread& operator=(const OneThread&) = delete;

 private:
  int saved_;
};

const dnnl::engine& cpu_engine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// NCHW logical dims over an NHWC buffer whose pixels are `pixel_stride` elements apart.
memory::desc nhwc(int c, int h, int w, int pixel_stride,
                  memory::data_type dt = memory::data_type::f32) {
  return memory::desc({1, c, h, w}, dt,
                      {static_cast<memory::dim>(h) * w * pixel_stride, 1,
                       static_cast<memory::dim>(w) * pixel_stride, pixel_stride});
}

class DnnlOp final : public Op {
 public:
  DnnlOp(const dnnl::primitive_desc_base& pd, dnnl::primitive prim)
      : stream_(cpu_engine()), prim_(std::move(prim)), impl_(pd.impl_info_str()) {
    scratch_.resize(pd.scratchpad_desc().get_size() + 1);
    scratch_mem_ = memory(pd.scratchpad_desc(), cpu_engine(), scratch_.data());
    bind(DNNL_ARG_SCRATCHPAD, scratch_mem_);
  }
  // Memories must outlive the op: kept here, referenced by args_.
  void bind(int arg, const memory& m) {
    mems_.push_back(m);
    args_.push_back({arg, m.get()});
  }
  void run() override {
    {
      OneThread one;
      const dnnl_status_t s = dnnl_primitive_execute(prim_.get(), stream_.get(),
                                                     static_cast<int>(args_.size()), args_.data());
      if (s != dnnl_success) throw std::runtime_error("oneDNN execute failed");
    }
    for (size_t px = 0; px < scatter_pixels_; ++px)  // dense result -> channel slice
      std::memcpy(scatter_to_ + px * scatter_stride_, dense_.data() + px * scatter_c_,
                  scatter_c_);
  }
  // Makes the primitive write a dense buffer that run() copies into `out`,
  // whose pixels are `stride` elements of `elem` bytes apart: oneDNN's JIT kernels
  // take only dense NHWC and would fall back to its slow reference kernel otherwise.
  void* scatter(size_t pixels, int c, int stride, size_t elem, void* out) {
    dense_.assign(pixels * c * elem + kBufferSlackFloats * sizeof(float), 0);
    scatter_pixels_ = pixels, scatter_c_ = c * elem, scatter_stride_ = stride * elem;
    scatter_to_ = static_cast<unsigned char*>(out);
    return dense_.data();
  }
  const std::string& impl() const { return impl_; }

 private:
  dnnl::stream stream_;
  dnnl::primitive prim_;
  std::string impl_;
  std::vector<unsigned char> scratch_;
  memory scratch_mem_;
  std::vector<memory> mems_;
  std::vector<dnnl_exec_arg_t> args_;
  std::vector<unsigned char> dense_;
  size_t scatter_pixels_ = 0, scatter_c_ = 0, scatter_stride_ = 0;  // in bytes
  unsigned char* scatter_to_ = nullptr;
};

dnnl::primitive_attr attr_for(bool relu) {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  if (relu) {
    dnnl::post_ops po;
    po.append_eltwise(1.0f, dnnl::algorithm::eltwise_relu, 0.0f, 0.0f);
    attr.set_post_ops(po);
  }
  return attr;
}

// Reorders user weights into the layout the primitive chose (packed once; for int8 the
// packed buffer also holds the compensation oneDNN computes, hence want's own size).
memory packed_weights(const memory::desc& want, const memory::desc& have, const void* w) {
  const auto& eng = cpu_engine();
  memory src(have, eng, const_cast<void*>(w));
  memory dst(want, eng);
  dnnl::stream s(eng);
  dnnl::reorder(src, dst).execute(s, src, dst);
  s.wait();
  return dst;
}

// oneDNN 2.6.3's brgconv:avx512_core computes wrong, non-deterministic outputs
// (it reads undefined memory) for dense stride-1 convs whose input is narrower
// than the kernel by 2 or more (k = 9..29, W = k - 2, 48..192 channels: measured
// on Zen 5). Every dense stride-1 conv with W <= k - 2 takes oneDNN's next
// implementation (a superset of the measured family); the self-check at load
// (check_conv) still guards every other geometry.
// NASRT_ONEDNN_KEEP_BRGCONV=1 keeps it (tests of the self-check).
bool brgconv_known_bad(const ConvGeom& g) {
  static const bool keep = [] {
    const char* v = std::getenv("NASRT_ONEDNN_KEEP_BRGCONV");
    return v && std::string(v) == "1";
  }();
  return !keep && g.stride == 1 && g.groups == 1 && g.in_w <= g.kernel - 2;
}

dnnl::convolution_forward::primitive_desc conv_pd(const ConvGeom& g) {
  const int ic = g.groups * g.group_in, oc = g.groups * g.group_out, k = g.kernel;
  memory::dims wdims = g.groups == 1 ? memory::dims{oc, ic, k, k}
                                     : memory::dims{g.groups, g.group_out, g.group_in, k, k};
  dnnl::convolution_forward::desc d(
      dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct,
      nhwc(ic, g.in_h, g.in_w, g.in_stride), memory::desc(wdims, memory::data_type::f32, tag::any),
      memory::desc({oc}, memory::data_type::f32, tag::a), nhwc(oc, g.out_h(), g.out_w(), oc),
      {g.stride, g.stride}, {g.pad_top, g.pad_left}, {g.pad_bottom, g.pad_right});
  dnnl::convolution_forward::primitive_desc pd(d, attr_for(g.relu), cpu_engine());
  if (brgconv_known_bad(g))
    while (std::string(pd.impl_info_str()).rfind("brgconv", 0) == 0)
      if (!pd.next_impl()) throw std::runtime_error("no oneDNN implementation but brgconv");
  return pd;
}

}  // namespace

std::unique_ptr<Op> make_conv(const ConvGeom& g, const float* weight, const float* bias,
                              const float* in, float* out) {
  OneThread one;
  try {
    const auto& eng = cpu_engine();
    const int ic = g.groups * g.group_in, oc = g.groups * g.group_out, k = g.kernel;
    const memory::desc src = nhwc(ic, g.in_h, g.in_w, g.in_stride);
    const memory::desc dst = nhwc(oc, g.out_h(), g.out_w(), oc);
    memory::dims wdims = g.groups == 1 ? memory::dims{oc, ic, k, k}
                                       : memory::dims{g.groups, g.group_out, g.group_in, k, k};
    const memory::desc w_user(wdims, memory::data_type::f32, g.groups == 1 ? tag::ohwi : tag::gohwi);
    const memory::desc b_md({oc}, memory::data_type::f32, tag::a);
    const dnnl::convolution_forward::primitive_desc pd = conv_pd(g);
    auto op = std::make_unique<DnnlOp>(pd, dnnl::convolution_forward(pd));
    memory b(b_md, eng);  // owned copy: the caller's arrays are temporary
    std::copy(bias, bias + oc, static_cast<float*>(b.get_data_handle()));
    op->bind(DNNL_ARG_SRC, memory(src, eng, const_cast<float*>(in)));
    op->bind(DNNL_ARG_WEIGHTS, packed_weights(pd.weights_desc(), w_user, weight));
    op->bind(DNNL_ARG_BIAS, b);
    void* dense = g.out_stride == oc ? out
                  : op->scatter(static_cast<size_t>(g.out_h()) * g.out_w(), oc, g.out_stride,
                                sizeof(float), out);
    op->bind(DNNL_ARG_DST, memory(dst, eng, dense));
    return op;
  } catch (const dnnl::error& e) {
    throw std::runtime_error(std::string("oneDNN create convolution failed (") + e.what() + ")");
  }
}

std::unique_ptr<Op> make_fc(int in, int out, bool relu, const float* weight, const float* bias,
                            const float* x, float* y) {
  OneThread one;
  try {
    const auto& eng = cpu_engine();
    const memory::desc src({1, in}, memory::data_type::f32, tag::nc);
    const memory::desc dst({1, out}, memory::data_type::f32, tag::nc);
    const memory::desc w_any({out, in}, memory::data_type::f32, tag::any);
    const memory::desc w_user({out, in}, memory::data_type::f32, tag::oi);
    const memory::desc b_md({out}, memory::data_type::f32, tag::a);
    dnnl::inner_product_forward::desc d(dnnl::prop_kind::forward_inference, src, w_any, b_md, dst);
    dnnl::inner_product_forward::primitive_desc pd(d, attr_for(relu), eng);
    auto op = std::make_unique<DnnlOp>(pd, dnnl::inner_product_forward(pd));
    memory b(b_md, eng);
    std::copy(bias, bias + out, static_cast<float*>(b.get_data_handle()));
    op->bind(DNNL_ARG_SRC, memory(src, eng, const_cast<float*>(x)));
    op->bind(DNNL_ARG_WEIGHTS, packed_weights(pd.weights_desc(), w_user, weight));
    op->bind(DNNL_ARG_BIAS, b);
    op->bind(DNNL_ARG_DST, memory(dst, eng, y));
    return op;
  } catch (const dnnl::error& e) {
    throw std::runtime_error(std::string("oneDNN create inner product failed (") + e.what() + ")");
  }
}

std::string conv_impl(const ConvGeom& g) {
  OneThread one;
  return conv_pd(g).impl_info_str();
}

namespace {

// Without VNNI, oneDNN multiplies u8 x s8 with vpmaddubsw, which saturates each pair of
// products at s16: exact only for |w| <= 64 (255 * 64 * 2 <= 32767; measured up to 113 LSB
// off with 8-bit weights). NASRT_ONEDNN_INT8_ANY_ISA=1 skips this (tests of the self-check).
bool vnni_or_7bit(const int8_t* w, size_t n) {
  static const bool any = [] {
    const char* v = std::getenv("NASRT_ONEDNN_INT8_ANY_ISA");
    return v && std::string(v) == "1";
  }();
  const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
  if (any || (isa & dnnl_cpu_isa_avx512_core_vnni & ~dnnl_cpu_isa_avx512_core) ||
      (isa & dnnl_cpu_isa_avx2_vnni & ~dnnl_cpu_isa_avx2))
    return true;
  return std::all_of(w, w + n, [](int8_t v) { return v >= -64 && v <= 64; });
}

}  // namespace

std::unique_ptr<Op> make_conv_int8(const ConvGeom& g, const Int8Conv& q, const int8_t* weight,
                                   const uint8_t* in, uint8_t* out) {
  const int ic = g.groups * g.group_in, oc = g.groups * g.group_out, k = g.kernel;
  // oneDNN adds the dst zero point before rounding, the rule after (1 LSB at ties);
  // nasrt's int8 tensors after a ReLU have zy = 0.
  if (q.zy != 0) throw std::runtime_error("oneDNN int8 conv: output zero point must be 0");
  if (!vnni_or_7bit(weight, static_cast<size_t>(oc) * k * k * g.group_in))
    throw std::runtime_error("oneDNN int8 conv: |w| > 64 on an ISA without VNNI");
  OneThread one;
  try {
    using dt = memory::data_type;
    const auto& eng = cpu_engine();
    const memory::desc src = nhwc(ic, g.in_h, g.in_w, g.in_stride, dt::u8);
    const memory::desc dst = nhwc(oc, g.out_h(), g.out_w(), oc, dt::u8);
    memory::dims wdims = g.groups == 1 ? memory::dims{oc, ic, k, k}
                                       : memory::dims{g.groups, g.group_out, g.group_in, k, k};
    const memory::desc w_user(wdims, dt::s8, g.groups == 1 ? tag::ohwi : tag::gohwi);
    const memory::desc b_md({oc}, dt::s32, tag::a);
    dnnl::convolution_forward::desc d(
        dnnl::prop_kind::forward_inference, dnnl::algorithm::convolution_direct, src,
        memory::desc(wdims, dt::s8, tag::any), b_md, dst, {g.stride, g.stride},
        {g.pad_top, g.pad_left}, {g.pad_bottom, g.pad_right});
    // ReLU needs no post-op: with zy = 0 the u8 saturation is the clamp at 0.
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    attr.set_output_scales(1 << 1, q.m);  // per output channel, after the s32 bias
    // The constant form: the runtime one is slower, and only the net input has zx != 0.
    if (q.zx != 0) attr.set_zero_points(DNNL_ARG_SRC, 0, {q.zx});
    const dnnl::convolution_forward::primitive_desc pd(d, attr, eng);
    auto op = std::make_unique<DnnlOp>(pd, dnnl::convolution_forward(pd));
    memory b(b_md, eng);  // owned copy: the caller's arrays are temporary
    std::copy(q.bias.begin(), q.bias.end(), static_cast<int32_t*>(b.get_data_handle()));
    op->bind(DNNL_ARG_SRC, memory(src, eng, const_cast<uint8_t*>(in)));
    op->bind(DNNL_ARG_WEIGHTS, packed_weights(pd.weights_desc(), w_user, weight));
    op->bind(DNNL_ARG_BIAS, b);
    void* dense = g.out_stride == oc ? out
                  : op->scatter(static_cast<size_t>(g.out_h()) * g.out_w(), oc, g.out_stride,
                                1, out);
    op->bind(DNNL_ARG_DST, memory(dst, eng, dense));
    return op;
  } catch (const dnnl::error& e) {
    throw std::runtime_error(std::string("oneDNN create int8 convolution failed (") + e.what() +
                             ")");
  }
}

}  // namespace onednn

#else  // !NASRT_HAVE_ONEDNN
bool onednn_compiled() { return false; }
namespace onednn {
std::unique_ptr<Op> make_conv(const ConvGeom&, const float*, const float*, const float*, float*) {
  throw std::runtime_error("nasrt was built without oneDNN");
}
std::unique_ptr<Op> make_fc(int, int, bool, const float*, const float*, const float*, float*) {
  throw std::runtime_error("nasrt was built without oneDNN");
}
std::string conv_impl(const ConvGeom&) { return "none"; }
std::unique_ptr<Op> make_conv_int8(const ConvGeom&, const Int8Conv&, const int8_t*,
                                   const uint8_t*, uint8_t*) {
  throw std::runtime_error("nasrt was built without oneDNN");
}
}  // namespace onednn
#endif

}  // namespace nasrt
