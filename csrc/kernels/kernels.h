// The op interface of the runtime: NHWC float32 ops whose buffers are bound at
// creation, so run() does no allocation and no setup.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace nasrt {

// Kernel libraries a conv or FC can run on (kernels/registry.h). Auto is a request,
// resolved per conv by builtin_backend (or a tuning file) before any op is made.
enum class Backend { Reference, Xnnpack, Onednn, Auto };

// What a kernel computes in: float32, or u8 activations with s8 weights (the registry
// has a row per library that has int8 kernels, beside its fp32 row).
enum class Precision { Fp32, Int8 };

// Slack after every buffer: XNNPACK may read up to XNN_EXTRA_BYTES past the end.
constexpr size_t kBufferSlackFloats = 16;

inline int conv_out_size(int in, int kernel, int stride, int pad) {
  return (in + 2 * pad - kernel) / stride + 1;
}

// One (possibly grouped, possibly channel-sliced) 2-D convolution in NHWC.
// Computes `groups` groups of group_in -> group_out channels; the input pixel
// holds in_stride floats and the output pixel out_stride floats, so an op can
// read or write a channel slice of a wider buffer (the concat of a conv1x1 sync).
struct ConvGeom {
  int in_h = 0, in_w = 0;
  int kernel = 1, stride = 1;
  int pad_top = 0, pad_bottom = 0, pad_left = 0, pad_right = 0;
  int groups = 1, group_in = 0, group_out = 0;
  int in_stride = 0, out_stride = 0;
  bool relu = false;
  int out_h() const { return (in_h + pad_top + pad_bottom - kernel) / stride + 1; }
  int out_w() const { return (in_w + pad_left + pad_right - kernel) / stride + 1; }
  void set_same_pad() { pad_top = pad_bottom = pad_left = pad_right = kernel / 2; }
};

// The requantisation of an int8 conv (docs/FORMATS.md section 6): u8 input with zero point
// zx, s8 OHWI weights, s32 bias b_q, y = clamp(rne(float(acc[c]) * m[c]) + zy, relu ? zy : 0,
// 255) in u8. m[c] = (sx * sw[c]) / sy is computed once by the caller, in float32.
struct Int8Conv {
  int zx = 0, zy = 0;
  std::vector<int32_t> bias;  // [groups * group_out]
  std::vector<float> m;       // [groups * group_out]
};
// Throws std::invalid_argument (one line naming the field) unless the zero points are in
// [0, 255] and every m is finite and in [2^-32, 256), the range every backend takes.
void validate_int8(const ConvGeom& g, const Int8Conv& q);

class Op {
 public:
  virtual ~Op() = default;
  virtual void run() = 0;
};

// out[i] = sum_k ins[k][i] for i in [begin, end), summed in the order of ins.
std::unique_ptr<Op> make_sum(std::vector<const float*> ins, float* out, size_t begin, size_t end);

// A residual block's add: out = max(a + b, 0) over pixels [p0, p1) of `channels` values,
// pixels of a_stride / b_stride / out_stride floats (out may be a concat's channel slice).
std::unique_ptr<Op> make_residual_add(const float* a, int a_stride, const float* b, int b_stride,
                                      float* out, int out_stride, int channels, size_t p0, size_t p1);

// out[c] = mean over the hw pixels of in[pixel * stride + c], c < channels.
std::unique_ptr<Op> make_global_avg_pool(int hw, int channels, int stride, const float* in,
                                         float* out);

// The int8 ops of a quantised net besides the conv (reference_int8.cpp, exactly the rule of
// docs/FORMATS.md section 6; on x86-64 each loop is compiled per ISA level and picked at load).
// Quantise (clamp(rne(x / scale) + zp, 0, 255)) or dequantise ((q - zp) * scale, float32)
// pixels [p0, p1) of `channels` values, pixels of in_stride / out_stride elements.
std::unique_ptr<Op> make_quantize(const float* in, int in_stride, uint8_t* out, int out_stride,
                                  int channels, size_t p0, size_t p1, float scale, int zp);
std::unique_ptr<Op> make_dequantize(const uint8_t* in, int in_stride, float* out, int out_stride,
                                    int channels, size_t p0, size_t p1, float scale, int zp);
// The sum merge over elements [begin, end): acc = sum_p (ins[p][i] - zx), out = clamp(rne(float(acc)
// * m) + zy, 0, 255), m = s / sy.
std::unique_ptr<Op> make_sum_int8(std::vector<const uint8_t*> ins, int zx, float m, int zy,
                                  uint8_t* out, size_t begin, size_t end);
// The residual add + ReLU over pixels [p0, p1) of `channels` codes (strides as for
// make_residual_add): out = clamp(rne(float(a - za) * ma + float(b - zb) * mb) + zy, zy, 255),
// ma = sa / sy, mb = sb / sy (the two products and their sum in float32, one rounding).
std::unique_ptr<Op> make_residual_add_int8(const uint8_t* a, int a_stride, int za, float ma,
                                           const uint8_t* b, int b_stride, int zb, float mb,
                                           uint8_t* out, int out_stride, int zy, int channels,
                                           size_t p0, size_t p1);
// Global average pool: acc[c] = sum over the hw pixels (q - zx), out[c] = clamp(rne(float(acc) *
// m) + zy, 0, 255), m = sx / (float(hw) * sy).
std::unique_ptr<Op> make_global_avg_pool_int8(int hw, int channels, int stride, const uint8_t* in,
                                              int zx, float m, int zy, uint8_t* out);
// FC over u8 x with s8 weight [out, in] and int32 bias: hidden, out = clamp(rne(float(acc[c]) *
// m[c]) + zy, relu ? zy : 0, 255); last (logits), y[c] = float(acc[c]) * scale[c].
std::unique_ptr<Op> make_fc_int8(int in, int out, bool relu, const int8_t* weight,
                                 std::vector<int32_t> bias, int zx, std::vector<float> m, int zy,
                                 const uint8_t* x, uint8_t* y);
std::unique_ptr<Op> make_fc_int8_logits(int in, int out, const int8_t* weight,
                                        std::vector<int32_t> bias, int zx,
                                        std::vector<float> scale, const uint8_t* x, float* y);

// Output rows [r0, r1) of the conv `whole` as a conv of its own: it reads input rows
// [*first_in_row, *first_in_row + in_h) of `whole`'s input with the padding left
// over, so every output pixel sees the same inputs and padding as in `whole`.
ConvGeom conv_rows_geom(const ConvGeom& whole, int r0, int r1, int* first_in_row);

// Load-time self-check of a backend against the reference kernels, on
// deterministic random input (a broken JIT kernel, e.g. oneDNN 2.6's brgconv on
// AVX-512 for some narrow inputs, must not give wrong answers silently).
struct ConvCheck {
  bool ok = false;           // the whole conv and every row piece match the reference
  bool split_exact = false;  // each piece's rows are bitwise those of the whole conv
  std::string why;           // when !ok: what failed
};
// The non-empty output row ranges [r0, r1) the executor splits `rows` rows into
// over `shares` shares (none when shares <= 1): the pieces check_conv checks.
std::vector<std::pair<int, int>> row_pieces(int rows, int shares);
// weight OHWI, bias as for make_conv; pieces: output row ranges [r0, r1) of `whole`.
ConvCheck check_conv(Backend backend, const ConvGeom& whole,
                     const std::vector<std::pair<int, int>>& pieces, const float* weight,
                     const float* bias);
// "" when backend's int8 conv can be made with the layer's own weights and parameters and
// matches the reference within 1 LSB on deterministic random full-range input and weights
// (in the layer's weight range, its extremes included), else what failed. With u8
// input and full 8-bit weights oneDNN without VNNI saturates s16 pair sums: tens of LSB.
std::string check_conv_int8(Backend backend, const ConvGeom& g, const Int8Conv& q,
                            const int8_t* weight);
// Whether backend's int8 conv computes the row pieces of `whole` bitwise as its rows (on
// deterministic random data; pieces as for check_conv).
bool conv_int8_split_exact(Backend backend, const ConvGeom& whole,
                           const std::vector<std::pair<int, int>>& pieces, const Int8Conv& q,
                           const int8_t* weight);
// "" when backend's FC matches the reference, else what failed.
std::string check_fc(Backend backend, int in, int out, bool relu, const float* weight,
                     const float* bias);

// Torch's OIHW weights [out, in_per_group, k, k] -> OHWI, for output channels [o0, o1).
template <typename T>
std::vector<T> oihw_to_ohwi(const T* w, int in_per_group, int k, int o0, int o1) {
  std::vector<T> out(static_cast<size_t>(o1 - o0) * k * k * in_per_group);
  for (int o = o0; o < o1; ++o)
    for (int i = 0; i < in_per_group; ++i)
      for (int y = 0; y < k; ++y)
        for (int x = 0; x < k; ++x)
          out[((static_cast<size_t>(o - o0) * k + y) * k + x) * in_per_group + i] =
              w[((static_cast<size_t>(o) * in_per_group + i) * k + y) * k + x];
  return out;
}

// The libraries' entry points; kernels/registry.h dispatches to them (make_conv, make_fc).
bool xnnpack_compiled();
bool onednn_compiled();

// Reference kernels: Backend::Reference and the oracle of the tests and self-checks.
namespace ref {
void conv(const ConvGeom& g, const float* weight, const float* bias, const float* in, float* out);
void fc(int in, int out, bool relu, const float* weight, const float* bias, const float* x,
        float* y);
std::unique_ptr<Op> make_conv(const ConvGeom& g, const float* weight, const float* bias,
                              const float* in, float* out);
std::unique_ptr<Op> make_fc(int in, int out, bool relu, const float* weight, const float* bias,
                            const float* x, float* y);
// The int8 conv by the rule, exactly (reference_int8.cpp, built without FMA contraction).
void conv_int8(const ConvGeom& g, const Int8Conv& q, const int8_t* weight, const uint8_t* in,
               uint8_t* out);
std::unique_ptr<Op> make_conv_int8(const ConvGeom& g, const Int8Conv& q, const int8_t* weight,
                                   const uint8_t* in, uint8_t* out);
}  // namespace ref

namespace xnn {
std::unique_ptr<Op> make_conv(const ConvGeom& g, const float* weight, const float* bias,
                              const float* in, float* out);
std::unique_ptr<Op> make_fc(int in, int out, bool relu, const float* weight, const float* bias,
                            const float* x, float* y);
// qc8 (per-channel, fp32 requantisation: exact on x86 and ARM; qs8 rounds ties up on ARM).
std::unique_ptr<Op> make_conv_int8(const ConvGeom& g, const Int8Conv& q, const int8_t* weight,
                                   const uint8_t* in, uint8_t* out);
}  // namespace xnn

namespace onednn {
std::unique_ptr<Op> make_conv(const ConvGeom& g, const float* weight, const float* bias,
                              const float* in, float* out);
std::unique_ptr<Op> make_fc(int in, int out, bool relu, const float* weight, const float* bias,
                            const float* x, float* y);
// The implementation oneDNN picks for this conv (e.g. "jit:avx2"), for diagnostics.
std::string conv_impl(const ConvGeom& g);
// Throws when not eligible: zy != 0, or no VNNI and max|w| > 64 (see onednn.cpp).
std::unique_ptr<Op> make_conv_int8(const ConvGeom& g, const Int8Conv& q, const int8_t* weight,
                                   const uint8_t* in, uint8_t* out);
}  // namespace onednn

}  // namespace nasrt
