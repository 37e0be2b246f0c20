// The kernel registry: every kernel library in one table, keyed by backend and
// precision (each library's name, whether this build has it, its op makers),
// and the built-in choice among them. make_conv, make_fc and the load-time
// self-checks dispatch through it.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace nasrt {

// The kernels of one library at one precision: the fp32 makers in an Fp32 row, the int8
// ones in an Int8 row (the others nullptr).
struct KernelSet {
  Backend backend;
  Precision precision;
  std::unique_ptr<Op> (*make_conv)(const ConvGeom& g, const float* weight, const float* bias,
                                   const float* in, float* out);
  std::unique_ptr<Op> (*make_fc)(int in, int out, bool relu, const float* weight,
                                 const float* bias, const float* x, float* y);
  std::string (*conv_impl)(const ConvGeom& g);  // the implementation it runs, for diagnostics
  // weight OHWI s8; in/out u8 NHWC with g's pixel strides (in bytes).
  std::unique_ptr<Op> (*make_conv_int8)(const ConvGeom& g, const Int8Conv& q,
                                        const int8_t* weight, const uint8_t* in, uint8_t* out);
};

// nullptr when the library has no kernels of that precision (or backend is Auto).
const KernelSet* find_kernels(Backend backend, Precision precision = Precision::Fp32);

// weight: [groups*group_out, kernel, kernel, group_in] (OHWI), bias: [groups*group_out].
// Throws std::runtime_error if the backend cannot create the op.
std::unique_ptr<Op> make_conv(Backend backend, const ConvGeom& g, const float* weight,
                              const float* bias, const float* in, float* out);

// The int8 conv (kernels.h Int8Conv); q is validated (std::invalid_argument). A fast
// backend that cannot make it or fails check_conv_int8 falls back to the next compiled
// one with int8 kernels (said once on stderr), the reference last.
std::unique_ptr<Op> make_conv_int8(Backend backend, const ConvGeom& g, const Int8Conv& q,
                                   const int8_t* weight, const uint8_t* in, uint8_t* out);

// y = W x + b (+ReLU); weight [out, in] row-major. A fast backend whose FC fails
// check_fc falls back to the next compiled one (said once on stderr).
std::unique_ptr<Op> make_fc(Backend backend, int in, int out, bool relu, const float* weight,
                            const float* bias, const float* x, float* y);

// The implementation `backend` runs conv g with (e.g. oneDNN's "jit:avx2"), for diagnostics.
std::string conv_impl(Backend backend, const ConvGeom& g);

bool backend_compiled(Backend b);
// "reference", "xnnpack", "onednn", "auto"; parse_backend throws std::invalid_argument.
std::string backend_name(Backend b);
Backend parse_backend(const std::string& name);
// The compiled kernel libraries: oneDNN, XNNPACK, the reference kernels (those in this build).
std::vector<Backend> compiled_backends();

// The built-in choice for every conv and FC of that precision when no tuning
// is given: oneDNN on x86 (its JIT kernels beat the 2022 XNNPACK 2-3x on AVX2
// hosts, measured), XNNPACK elsewhere (hand-written ARM kernels), the
// reference kernels as the fallback. It depends on the host and the build, not
// on the conv: `nasrt tune` measures the choice per conv.
Backend builtin_backend(Precision precision = Precision::Fp32);

}  // namespace nasrt
