// Per-conv backend choice measured on the target, and the tuning file that
// records it beside the model (docs/FORMATS.md, "Tuning file").
#pragma once
#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/registry.h"
#include "runtime/executor.h"

namespace nasrt {

struct ConvTiming {
  std::string name;
  int in_c, out_c, kernel, stride, groups, h, w;  // the conv and its input size
  Precision precision;                            // the model's: tuning chooses the backend
  std::map<Backend, double> us;                   // min over rounds of the round median
  Backend best;
};

// Times every conv of the net, in its precision, on every compiled fast backend that
// has kernels of that precision and passes the load-time self-check (the reference
// kernels only when none does, or always with `reference`: the per-conv table), interleaved
// over `rounds` rounds of `runs` calls, on the calling thread.
std::vector<ConvTiming> tune_convs(const NetSpec& net, int runs = 60, int rounds = 5,
                                   bool reference = false);

std::map<std::string, Backend> choices(const std::vector<ConvTiming>& t);

// The median of `runs` timed calls of f (us) after one warm call; t: scratch.
template <typename F>
inline double round_median(F&& f, int runs, std::vector<double>& t) {
  using clock = std::chrono::steady_clock;
  t.resize(runs);
  f();  // warm
  for (int i = 0; i < runs; ++i) {
    const auto t0 = clock::now();
    f();
    t[i] = std::chrono::duration<double, std::micro>(clock::now() - t0).count();
  }
  std::nth_element(t.begin(), t.begin() + runs / 2, t.end());
  return t[runs / 2];
}


// What check_whole_net / compare_nets (runtime/session.h) measured: us[i] = [tuned, built-in]
// (compare_nets: [a, b]) on threads[i].
struct NetCheck {
  bool keep_tuned = true;
  std::vector<int> threads;
  std::vector<std::array<double, 2>> us;
};

// Writes text to path atomically as nasrt/_io.py does: an exclusively
// created, never symlink-followed temp file ".<name>.<pid>.<n>.tmp" (stale ones
// of killed writers removed first), fsync, rename, fsync of the directory; the
// temp file is removed on failure. Throws std::runtime_error naming `what`.
void atomic_write_text(const std::string& path, const std::string& text, const std::string& what);
// Writes the tuning file atomically (atomic_write_text).
void save_tuning(const std::string& path, const std::string& model_hash,
                 const std::vector<ConvTiming>& t, const NetCheck* net = nullptr);
// Reads a tuning file for this model and host. Returns the choices, or an empty
// map with *notice set to a one-line reason when the file is missing (notice
// left empty), of another model or CPU, stale or corrupt. Never throws.
std::map<std::string, Backend> load_tuning(const std::string& path, const std::string& model_hash,
                                           std::string* notice);

// The text of a tuning file (load_tuning after reading it; fuzzing). Never throws.
std::map<std::string, Backend> parse_tuning(const std::string& text, const std::string& path,
                                            const std::string& model_hash, std::string* notice);
constexpr size_t kTuningFileBytes = 16u << 20;

// "<model path>.tune.json"
std::string tuning_path(const std::string& model_path);

}  // namespace nasrt
