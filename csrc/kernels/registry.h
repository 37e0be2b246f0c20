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

// What a kernel computes in. fp32 only today; int8 kernels are next (a row per
// library that has them, beside its fp32 row).
enum class Precision { Fp32 };

// The kernels of one library at one precision.
struct KernelSet {
  Backend backend;
  Precision precision;
  std::unique_ptr<Op> (*make_conv)(const ConvGeom& g, const float* weight, const float* bias,
                                   const float* in, float* out);
  std::unique_ptr<Op> (*make_fc)(int in, int out, bool relu, const float* weight,
                                 const float* bias, const float* x, float* y);
  std::string (*conv_impl)(const ConvGeom& g);  // the implementation it runs, for diagnostics
};

// nullptr when the library has no kernels of that precision (or backend is Auto).
const KernelSet* find_kernels(Backend backend, Precision precision = Precision::Fp32);

// weight: [groups*group_out, kernel, kernel, group_in] (OHWI), bias: [groups*group_out].
// Throws std::runtime_error if the backend cannot create the op.
std::unique_ptr<Op> make_conv(Backend backend, const ConvGeom& g, const float* weight,
                              const float* bias, const float* in, float* out);

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
