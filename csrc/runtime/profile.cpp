// Latency probes: warm, then the median of `runs` timed calls (steady_clock).
#include "runtime/profile.h"

#include <algorithm>
#include <chrono>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include "runtime/cpu.h"

namespace nasrt {
namespace {

template <typename F>
double median_ns(F&& f, int runs, int warmup) {
  if (runs < 1) throw std::invalid_argument("runs must be >= 1");
  for (int i = 0; i < warmup; ++i) f();
  std::vector<double> t(runs);
  for (int i = 0; i < runs; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    t[i] = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
  }
  std::nth_element(t.begin(), t.begin() + runs / 2, t.end());
  return t[runs / 2];
}

// Runs f on a fresh thread pinned to `core` (core < 0: on the calling thread).
// A helper thread, so the caller's own affinity is never touched: threads the
// caller spawns meanwhile would inherit a temporary pin.
template <typename F>
double on_core(int core, F&& f) {
  if (core < 0) return f();
  double result = 0.0;
  std::exception_ptr error;
  std::thread t([&] {
    try {
      if (!pin_current_thread(core))
        throw std::invalid_argument("cannot pin a thread to core " + std::to_string(core));
      result = f();
    } catch (...) {
      error = std::current_exception();
    }
  });
  t.join();
  if (error) std::rethrow_exception(error);
  return result;
}

std::vector<float> buffer(size_t n) { return std::vector<float>(n + kBufferSlackFloats, 0.5f); }

}  // namespace

double time_conv_chain(const std::vector<ConvSpec>& chain, int h, int w, int runs, int warmup,
                       Backend backend, int core) {
  if (chain.empty()) throw std::invalid_argument("empty conv chain");
  std::vector<std::vector<float>> bufs;
  std::vector<std::unique_ptr<Op>> ops;
  bufs.push_back(buffer(static_cast<size_t>(chain[0].in_c) * h * w));
  for (const ConvSpec& c : chain) {
    const ConvGeom g = conv_geom(c, h, w);
    h = g.out_h(), w = g.out_w();
    bufs.push_back(buffer(static_cast<size_t>(c.out_c) * h * w));
    // Weight values do not change the time; layout is OHWI of the right size.
    std::vector<float> wt(c.weight.size(), 0.01f);
    ops.push_back(make_conv(backend == Backend::Auto ? builtin_backend() : backend, g, wt.data(), c.bias.data(), bufs[bufs.size() - 2].data(),
                            bufs.back().data()));
  }
  return on_core(core,
                 [&] { return median_ns([&] { for (auto& op : ops) op->run(); }, runs, warmup); });
}

double time_head(const std::vector<FcSpec>& fcs, int paths, int hw, int channels, int runs,
                 int warmup, Backend backend, int core) {
  std::vector<std::vector<float>> bufs;
  std::vector<std::unique_ptr<Op>> ops;
  bufs.push_back(buffer(static_cast<size_t>(paths) * channels));
  std::vector<std::vector<float>> maps(paths, buffer(static_cast<size_t>(hw) * channels));
  for (int p = 0; p < paths; ++p)
    ops.push_back(make_global_avg_pool(hw, channels, channels, maps[p].data(),
                                       bufs[0].data() + p * channels));
  for (const FcSpec& f : fcs) {
    bufs.push_back(buffer(f.out));
    ops.push_back(make_fc(backend == Backend::Auto ? builtin_backend() : backend, f.in, f.out, f.relu, f.weight.data(), f.bias.data(),
                          bufs[bufs.size() - 2].data(), bufs.back().data()));
  }
  return on_core(core,
                 [&] { return median_ns([&] { for (auto& op : ops) op->run(); }, runs, warmup); });
}

double time_executor(Executor& exec, int in_size, int runs, int warmup) {
  std::vector<float> x(in_size, 0.5f), y(exec.classes());
  return median_ns([&] { exec.run(x.data(), 1, y.data()); }, runs, warmup);
}

}  // namespace nasrt
