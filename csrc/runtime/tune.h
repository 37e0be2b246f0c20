// Per-conv backend choice measured on the target, and the tuning file that
// records it beside the model (docs/FORMATS.md, "Tuning file").
#pragma once
#include <array>
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
// kernels only when none does), interleaved over `rounds` rounds of `runs` calls, on
// the calling thread.
std::vector<ConvTiming> tune_convs(const NetSpec& net, int runs = 60, int rounds = 5);

std::map<std::string, Backend> choices(const std::vector<ConvTiming>& t);

// The whole net with the tuned choices against the built-in rule, on 1 thread and on
// `threads`: per-conv timings in isolation miss what a choice costs between convs
// (layouts, caches, mixed precision), so the tuning is kept only when it is not slower
// on either. us: min over rounds of the round median, [tuned, built-in] per thread count.
struct NetCheck {
  bool keep_tuned = true;
  std::vector<int> threads;
  std::vector<std::array<double, 2>> us;
};
NetCheck check_whole_net(const NetSpec& net, const std::map<std::string, Backend>& tuned,
                         int threads, int runs = 200, int rounds = 5);

// Writes the tuning file atomically as nasrt/_io.py does: an exclusively
// created, never symlink-followed temp file ".<name>.<pid>.<n>.tmp" (stale ones
// of killed writers removed first), fsync, rename, fsync of the directory; the
// temp file is removed on failure. Throws std::runtime_error.
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
