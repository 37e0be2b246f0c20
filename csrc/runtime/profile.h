// The latency table of a search space from a profile kit (docs/FORMATS.md section 7):
// Python writes every probe as a model file plus kit.json (what to time, the table's
// recipe); this one routine times them and assembles lut.json, for `nasrt profile`
// (through the binding, the kit in memory) and nasrt-profile (a kit directory).
#pragma once
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "runtime/model.h"

namespace nasrt {

struct KitProbe {
  std::string key, model;
  // Convs: the single path's convs `convs` on one pinned thread; Head: pool + FCs, pinned;
  // Executor: the whole net on `threads` threads; Call: a call from the caller (ProfileHooks).
  enum Kind { Convs, Head, Exec, Call } kind = Convs;
  int threads = 1;
  std::vector<int> convs;  // Convs: consecutive indices into the path's convs
};

struct Kit {
  std::string source;  // the manifest in errors ("DIR/kit.json")
  std::string dir;     // the kit's directory ("" for a kit in memory)
  std::string manifest;  // kit.json's text, validated
  std::string precision;  // "fp32" or "int8"
  int threads = 1, runs = 1, rounds = 1, warmup = 0;
  double span_s = 0;
  int core = -1;  // the single-thread probes' core (-1: the first available one)
  std::vector<KitProbe> probes;
  std::map<std::string, LoadedModel> models;  // by file name
};

constexpr size_t kKitManifestBytes = 16u << 20;

// Validates a manifest and its models (ModelError "SOURCE: field: message").
Kit parse_kit(const std::string& manifest, const std::map<std::string, std::string>& models,
              const std::string& source);
// DIR/kit.json and the model files it names.
Kit load_kit(const std::string& dir);

struct ProfileHooks {
  // Median us of `runs` calls (after `warmup`) of a Call probe, from the caller.
  std::function<double(const KitProbe&, int runs, int warmup)> call;
  std::function<void()> progress;  // after every timed probe
  std::string caller;              // who made those calls: settings.caller ("python", "c")
};

// Times every probe in kit.rounds interleaved rounds spread over span_s and returns the
// lut.json document (text).
std::string run_kit(const Kit& kit, const ProfileHooks& hooks);
// The table from each probe's round medians (us): the recipe evaluated on the fastest
// round of each probe (run_kit's last step; tests plant timings through it).
std::string assemble_lut(const Kit& kit, const std::map<std::string, std::vector<double>>& rounds_us,
                         const std::string& caller);

// The machine as nasrt.runtime.host.host_info describes it, from uname and /proc/cpuinfo
// (JSON object text), plus `features`: the ISA flags the kernels care about.
std::string machine_info_json();

}  // namespace nasrt
