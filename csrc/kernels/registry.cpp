// The kernel registry (registry.h): the table and the dispatch through it.
#include "kernels/registry.h"

#include <cstdio>
#include <stdexcept>

namespace nasrt {
namespace {

bool always() { return true; }
std::string xnnpack_impl(const ConvGeom&) { return "xnnpack"; }
std::string reference_impl(const ConvGeom&) { return "reference"; }

// Each library once: its name and whether this build has it, in the order
// compiled_backends() lists them.
struct Library {
  Backend backend;
  const char* name;
  bool (*compiled)();
};
constexpr Library kLibraries[] = {
    {Backend::Onednn, "onednn", onednn_compiled},
    {Backend::Xnnpack, "xnnpack", xnnpack_compiled},
    {Backend::Reference, "reference", always},
};

// Each library's kernels per precision.
constexpr KernelSet kKernels[] = {
    {Backend::Onednn, Precision::Fp32, onednn::make_conv, onednn::make_fc, onednn::conv_impl,
     nullptr},
    {Backend::Xnnpack, Precision::Fp32, xnn::make_conv, xnn::make_fc, xnnpack_impl, nullptr},
    {Backend::Reference, Precision::Fp32, ref::make_conv, ref::make_fc, reference_impl, nullptr},
    {Backend::Onednn, Precision::Int8, nullptr, nullptr, nullptr, onednn::make_conv_int8},
    {Backend::Xnnpack, Precision::Int8, nullptr, nullptr, nullptr, xnn::make_conv_int8},
    {Backend::Reference, Precision::Int8, nullptr, nullptr, nullptr, ref::make_conv_int8},
};

void check_geometry(const ConvGeom& g) {
  if (g.groups < 1 || g.group_in < 1 || g.group_out < 1 || g.kernel < 1 || g.stride < 1 ||
      g.in_h < 1 || g.in_w < 1 || g.out_h() < 1 || g.out_w() < 1)
    throw std::runtime_error("conv: invalid geometry");
}

}  // namespace

const KernelSet* find_kernels(Backend backend, Precision precision) {
  for (const KernelSet& k : kKernels)
    if (k.backend == backend && k.precision == precision) return &k;
  return nullptr;
}

std::unique_ptr<Op> make_conv(Backend backend, const ConvGeom& g, const float* weight,
                              const float* bias, const float* in, float* out) {
  check_geometry(g);
  const KernelSet* k = find_kernels(backend);
  if (!k) throw std::logic_error("conv: backend Auto not resolved");
  return k->make_conv(g, weight, bias, in, out);
}

std::unique_ptr<Op> make_conv_int8(Backend backend, const ConvGeom& g, const Int8Conv& q,
                                   const int8_t* weight, const uint8_t* in, uint8_t* out) {
  check_geometry(g);
  if (g.in_stride < g.groups * g.group_in || g.out_stride < g.groups * g.group_out)
    throw std::runtime_error("conv: pixel stride below the channel count");
  validate_int8(g, q);
  if (backend == Backend::Auto) throw std::logic_error("conv: backend Auto not resolved");
  // The requested backend first, then the others fastest-first; the reference always passes.
  std::vector<Backend> order{backend};
  for (Backend b : compiled_backends())
    if (b != backend) order.push_back(b);
  for (Backend b : order) {
    const KernelSet* k = find_kernels(b, Precision::Int8);
    if (!k) continue;
    if (b == Backend::Reference) break;
    const std::string why = check_conv_int8(b, g, q, weight);
    if (why.empty()) return k->make_conv_int8(g, q, weight, in, out);
    std::fprintf(stderr,
                 "nasrt: int8 conv %dx%d k%d s%d g%d: %s failed the load-time self-check (%s); "
                 "trying the next backend\n",
                 g.groups * g.group_out, g.groups * g.group_in, g.kernel, g.stride, g.groups,
                 backend_name(b).c_str(), why.c_str());
  }
  return ref::make_conv_int8(g, q, weight, in, out);
}

std::unique_ptr<Op> make_fc(Backend backend, int in, int out, bool relu, const float* weight,
                            const float* bias, const float* x, float* y) {
  if (in < 1 || out < 1) throw std::runtime_error("fc: invalid size");
  if (backend == Backend::Auto) throw std::logic_error("fc: backend Auto not resolved");
  if (backend == Backend::Reference) return ref::make_fc(in, out, relu, weight, bias, x, y);
  // The requested backend first, then the others fastest-first; the reference always passes.
  std::vector<Backend> order{backend};
  for (Backend b : compiled_backends())
    if (b != backend) order.push_back(b);
  for (Backend b : order) {
    if (b == Backend::Reference) break;
    const std::string why = check_fc(b, in, out, relu, weight, bias);
    if (why.empty()) return find_kernels(b)->make_fc(in, out, relu, weight, bias, x, y);
    std::fprintf(stderr, "nasrt: fc %dx%d: %s failed the load-time self-check (%s); trying the next backend\n",
                 out, in, backend_name(b).c_str(), why.c_str());
  }
  return ref::make_fc(in, out, relu, weight, bias, x, y);
}

std::string conv_impl(Backend backend, const ConvGeom& g) {
  const KernelSet* k = find_kernels(backend);
  return k ? k->conv_impl(g) : "none";
}

std::string backend_name(Backend b) {
  for (const Library& l : kLibraries)
    if (l.backend == b) return l.name;
  return "auto";
}

Backend parse_backend(const std::string& name) {
  for (Backend b : {Backend::Reference, Backend::Xnnpack, Backend::Onednn, Backend::Auto})
    if (backend_name(b) == name) return b;
  throw std::invalid_argument("backend: must be auto, xnnpack, onednn or reference, got '" +
                              name + "'");
}

bool backend_compiled(Backend b) {
  for (const Library& l : kLibraries)
    if (l.backend == b) return l.compiled();
  return true;  // Auto: resolved per conv to a compiled one
}

std::vector<Backend> compiled_backends() {
  std::vector<Backend> out;
  for (const Library& l : kLibraries)
    if (l.compiled()) out.push_back(l.backend);
  return out;
}

Backend builtin_backend(Precision precision) {
#if defined(__x86_64__) || defined(__i386__)
  constexpr Backend kOrder[] = {Backend::Onednn, Backend::Xnnpack, Backend::Reference};
#else
  constexpr Backend kOrder[] = {Backend::Xnnpack, Backend::Onednn, Backend::Reference};
#endif
  for (Backend b : kOrder)
    if (backend_compiled(b) && find_kernels(b, precision)) return b;
  return Backend::Reference;
}

}  // namespace nasrt
