// Per-conv backend choice measured on the target, and the tuning file that
// records it beside the model (docs/FORMATS.md, "Tuning file").
#pragma once
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
  std::map<Backend, double> us;                   // min over rounds of the round median
  Backend best;
};

// Times every conv of the net on every compiled fast backend (the reference
// kernels only when nothing else is compiled), interleaved over `rounds`
// rounds of `runs` calls, on the calling thread.
std::vector<ConvTiming> tune_convs(const NetSpec& net, int runs = 60, int rounds = 5);

std::map<std::string, Backend> choices(const std::vector<ConvTiming>& t);

// Writes the tuning file atomically as nasrt/_io.py does: an exclusively
// created, never symlink-followed temp file ".<name>.<pid>.<n>.tmp" (stale ones
// of killed writers removed first), fsync, rename, fsync of the directory; the
// temp file is removed on failure. Throws std::runtime_error.
void save_tuning(const std::string& path, const std::string& model_hash,
                 const std::vector<ConvTiming>& t);
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
