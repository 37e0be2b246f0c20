// nasrt-profile: the latency table of a search space measured on a board without Python,
// from a profile kit written on the host by `nasrt profile --kit DIR` (docs/FORMATS.md
// section 7). The same routine as `nasrt profile` (runtime/profile.cpp); only the fixed
// cost of a call (overhead_us) is that of a C API call here, settings.caller "c".
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "nasrt/nasrt.h"
#include "runtime/profile.h"
#include "runtime/tune.h"

static const char* kUsage =
    "usage: nasrt-profile KIT_DIR [--out lut.json] [--quiet]\n"
    "Measures the latency table of a search space on this machine from a profile kit\n"
    "(written on the host by `nasrt profile --kit KIT_DIR [--precision fp32|int8]`): every\n"
    "probe model in the kit is timed with the nasrt runtime, in the kit's interleaved rounds,\n"
    "and the table (the same lut.json as `nasrt profile`, its overhead_us a C API call) is\n"
    "written atomically to --out (default lut.json). Copy the table back for\n"
    "`nasrt search --cost latency --lut`.\n";

namespace {

using Model = std::unique_ptr<nasrt_model, void (*)(nasrt_model*)>;

// The probe's model through the C API on its threads, always all of them.
Model load(const nasrt::Kit& kit, const nasrt::KitProbe& p) {
  nasrt_options o;
  nasrt_options_init(&o);
  o.threads = p.threads, o.balance = 0, o.fixed_threads = 1;
  char* err = nullptr;
  Model m(nasrt_model_load_ex((kit.dir + "/" + p.model).c_str(), &o, &err), nasrt_model_free);
  if (!m) {
    const std::string why = err ? err : "cannot load";
    nasrt_error_free(err);
    throw nasrt::ModelError(why);
  }
  return m;
}

// Median us of `runs` nasrt_model_run calls.
double time_c_call(const Model& m, int runs, int warmup) {
  char* err = nullptr;
  int c = 0, h = 0, w = 0;
  nasrt_model_input_shape(m.get(), &c, &h, &w);
  std::vector<float> x(static_cast<size_t>(c) * h * w, 0.5f), y(nasrt_model_classes(m.get()));
  std::vector<double> t(runs);
  for (int i = -warmup; i < runs; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    if (nasrt_model_run(m.get(), x.data(), 1, y.data(), &err) != 0) {
      const std::string why = err ? err : "run failed";
      nasrt_error_free(err);
      throw nasrt::ModelError(why);
    }
    if (i >= 0) t[i] = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
  }
  std::nth_element(t.begin(), t.begin() + runs / 2, t.end());
  return t[runs / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir, out = "lut.json";
  bool quiet = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::printf("%s", kUsage);
      return 0;
    } else if (a == "--out" && i + 1 < argc) {
      out = argv[++i];
    } else if (a == "--quiet") {
      quiet = true;
    } else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "nasrt-profile: unknown option %s\n%s", a.c_str(), kUsage);
      return 2;
    } else if (dir.empty()) {
      dir = a;
    } else {
      std::fprintf(stderr, "%s", kUsage);
      return 2;
    }
  }
  if (dir.empty()) {
    std::fprintf(stderr, "%s", kUsage);
    return 2;
  }
  try {
    const nasrt::Kit kit = nasrt::load_kit(dir);
    const size_t total = kit.probes.size() * kit.rounds;
    size_t done = 0;
    nasrt::ProfileHooks hooks;
    hooks.caller = "c";
    std::map<std::string, Model> models;  // per call probe, loaded once
    for (const nasrt::KitProbe& p : kit.probes)
      if (p.kind == nasrt::KitProbe::Call) models.emplace(p.key, load(kit, p));
    hooks.call = [&models](const nasrt::KitProbe& p, int runs, int warmup) {
      return time_c_call(models.at(p.key), runs, warmup);
    };
    hooks.progress = [&] {
      if (!quiet && (++done % std::max<size_t>(1, total / 20) == 0 || done == total))
        std::fprintf(stderr, "\rnasrt-profile: %zu/%zu probes timed", done, total);
    };
    const std::string lut = nasrt::run_kit(kit, hooks);
    if (!quiet) std::fprintf(stderr, "\n");
    nasrt::atomic_write_text(out, lut, "the latency table");
    std::printf("%s: %s latency table, %zu probes, %d runs in %d rounds over %g s, %d threads\n",
                out.c_str(), kit.precision.c_str(), kit.probes.size(), kit.runs, kit.rounds, kit.span_s,
                kit.threads);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nasrt-profile: %s\n", e.what());
    return 1;
  }
  return 0;
}
