// nasrt-bench: latency of a model, single-core vs path threads, like TFLite's
// benchmark_model. Same statistic as `nasrt bench`: per-call latency after
// warm-up; min, median, p90, p99; the configurations interleaved in rounds.
#include <dirent.h>
#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "nasrt/nasrt.hpp"
#include "tools/npy.h"

static const char* kUsage =
    "usage: nasrt-bench MODEL.nasrt [--threads N] [--cores LIST] [--warmup W] [--runs R]\n"
    "                   [--rounds K] [--input FILE.npy|.bin] [--backend B] [--tune] [--json OUT]\n"
    "Times batch-1 runs on 1 thread and on N path threads (default min(paths, cores)),\n"
    "R runs each (default 1000) after W warm-up runs (default 100), interleaved in K rounds\n"
    "(default 10) with a pause between configurations. Prints min, median, p90, p99 (us),\n"
    "the backend of every conv and the peak RSS. --cores 0,1 pins thread slot t to core t.\n"
    "Warns when another process holds one of this process's cores before or after timing.\n";

namespace {

struct Stats {
  double min, median, p90, p99;
};

Stats stats(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  auto pct = [&](double p) {  // linear interpolation, as numpy.percentile
    const double pos = p / 100.0 * (v.size() - 1);
    const size_t lo = static_cast<size_t>(pos), hi = std::min(lo + 1, v.size() - 1);
    return v[lo] + (v[hi] - v[lo]) * (pos - lo);
  };
  return {v.front(), pct(50), pct(90), pct(99)};
}

long peak_rss_kb() {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss;
}

std::vector<int> affinity_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> out;
  if (sched_getaffinity(0, sizeof set, &set) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) out.push_back(c);
  return out;
}

// Busy clock ticks per core since boot, from /proc/stat: user, nice, system, irq,
// softirq, steal (idle and iowait are not busy).
std::map<int, long long> core_busy_ticks() {
  std::map<int, long long> out;
  std::ifstream f("/proc/stat");
  std::string line;
  while (std::getline(f, line)) {
    if (line.compare(0, 3, "cpu") != 0 || line.size() < 4 || !isdigit(static_cast<unsigned char>(line[3]))) continue;
    std::istringstream ss(line.substr(3));
    int cpu;
    long long v[8] = {};
    ss >> cpu;
    for (auto& x : v) ss >> x;
    out[cpu] = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
  }
  return out;
}

// This process's ticks (utime + stime of each thread) by the core the thread last ran
// on: /proc/self/task/*/stat fields 14, 15 and 39.
std::map<int, long long> own_ticks() {
  std::map<int, long long> out;
  DIR* d = opendir("/proc/self/task");
  if (!d) return out;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream f(std::string("/proc/self/task/") + e->d_name + "/stat");
    std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const size_t close = text.rfind(')');
    if (close == std::string::npos) continue;  // a thread that ended meanwhile
    std::istringstream ss(text.substr(close + 1));
    std::vector<std::string> fields;
    for (std::string t; ss >> t;) fields.push_back(t);
    if (fields.size() < 37) continue;
    out[std::atoi(fields[36].c_str())] += std::atoll(fields[11].c_str()) + std::atoll(fields[12].c_str());
  }
  closedir(d);
  return out;
}

// Cores of `cores` that other processes kept busy (>= 30%) during a 300 ms window:
// a path thread on such a core waits for a scheduler slice, and every path with it.
std::map<int, double> busy_cores(const std::vector<int>& cores) {
  const auto b0 = core_busy_ticks(), o0 = own_ticks();
  const auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  const auto b1 = core_busy_ticks(), o1 = own_ticks();
  const double ticks =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() * sysconf(_SC_CLK_TCK);
  std::map<int, double> out;
  for (int c : cores) {
    if (!b0.count(c) || !b1.count(c)) continue;
    const long long own = (o1.count(c) ? o1.at(c) : 0) - (o0.count(c) ? o0.at(c) : 0);
    const double other = (b1.at(c) - b0.at(c)) - std::max(0LL, own);
    if (other / ticks >= 0.3) out[c] = std::min(1.0, other / ticks);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model, input, json_out, backend;
  int threads = 0, warmup = 100, runs = 1000, rounds = 10;
  bool tune = false;
  std::vector<int> cores;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) { std::fprintf(stderr, "nasrt-bench: %s needs a value\n%s", a.c_str(), kUsage); std::exit(2); }
      return argv[++i];
    };
    auto num = [&](int lo) {
      const std::string v = next();
      char* end = nullptr;
      const long n = std::strtol(v.c_str(), &end, 10);
      if (!end || *end || n < lo || n > 100000000) { std::fprintf(stderr, "nasrt-bench: %s: bad value '%s'\n", a.c_str(), v.c_str()); std::exit(2); }
      return static_cast<int>(n);
    };
    if (a == "-h" || a == "--help") { std::printf("%s", kUsage); return 0; }
    else if (a == "--threads") threads = num(1);
    else if (a == "--warmup") warmup = num(0);
    else if (a == "--runs") runs = num(1);
    else if (a == "--rounds") rounds = num(1);
    else if (a == "--input") input = next();
    else if (a == "--json") json_out = next();
    else if (a == "--backend") backend = next();
    else if (a == "--tune") tune = true;
    else if (a == "--cores") {
      const std::string list = next();
      std::stringstream ss(list);
      std::string tok;
      const std::vector<int> avail = affinity_cores();
      while (std::getline(ss, tok, ',')) {
        char* end = nullptr;
        const long c = std::strtol(tok.c_str(), &end, 10);
        if (tok.empty() || *end || c < 0) { std::fprintf(stderr, "nasrt-bench: --cores: bad core '%s' in '%s'\n", tok.c_str(), list.c_str()); return 2; }
        if (std::find(avail.begin(), avail.end(), c) == avail.end()) {
          std::string have;
          for (int v : avail) have += (have.empty() ? "" : ",") + std::to_string(v);
          std::fprintf(stderr, "nasrt-bench: --cores: core %ld is not available to this process (available: %s)\n", c, have.c_str());
          return 2;
        }
        cores.push_back(static_cast<int>(c));
      }
    } else if (!a.empty() && a[0] == '-') { std::fprintf(stderr, "nasrt-bench: unknown option %s\n%s", a.c_str(), kUsage); return 2; }
    else if (model.empty()) model = a;
    else { std::fprintf(stderr, "%s", kUsage); return 2; }
  }
  if (model.empty()) { std::fprintf(stderr, "%s", kUsage); return 2; }
  const std::vector<int> avail = affinity_cores();
  if (threads > static_cast<int>(avail.size())) {
    std::fprintf(stderr, "nasrt-bench: --threads: %d exceeds the %zu cores available to this process\n", threads, avail.size());
    return 2;
  }
  rounds = std::min(rounds, runs);
  try {
    auto opts = [&](int t) {
      nasrt_options o = nasrt::Model::defaults();
      o.threads = t;
      o.cores = cores.empty() ? nullptr : cores.data();
      o.ncores = static_cast<int>(cores.size());
      o.backend = backend.empty() ? nullptr : backend.c_str();
      o.fixed_threads = 1;  // time the configuration as given
      return o;
    };
    nasrt_options first = opts(1);
    first.tune = tune;
    std::vector<std::unique_ptr<nasrt::Model>> models;
    models.push_back(std::make_unique<nasrt::Model>(model, first));
    nasrt::Model& single = *models[0];
    if (!single.notice().empty()) std::fprintf(stderr, "nasrt-bench: %s\n", single.notice().c_str());
    const int n = threads ? threads : std::max(1, std::min<int>(single.paths(), static_cast<int>(avail.size())));
    if (n > 1) models.push_back(std::make_unique<nasrt::Model>(model, opts(n)));
    std::vector<float> x(single.input_size(), 0.5f);
    if (!input.empty()) {
      x = nasrt_tools::read_floats(input, nullptr);
      if (x.size() != single.input_size()) {
        std::fprintf(stderr, "nasrt-bench: %s: %zu floats, expected %zu (one sample)\n", input.c_str(), x.size(), single.input_size());
        return 2;
      }
    }
    // Every configuration must give the same logits before it is timed.
    const std::vector<float> ref = single.run(x.data());
    for (auto& m : models)
      if (m->run(x.data()) != ref) { std::fprintf(stderr, "nasrt-bench: configurations disagree\n"); return 3; }
    // Another process holding a core, sampled before and after the timing (this one idle).
    const std::vector<int>& watched = cores.empty() ? avail : cores;
    std::map<int, double> busy = busy_cores(watched);
    std::vector<std::vector<double>> lat(models.size());
    std::vector<float> y(single.classes());
    using clock = std::chrono::steady_clock;
    for (size_t c = 0; c < models.size(); ++c)
      for (int i = 0; i < warmup; ++i) models[c]->run(x.data());
    for (int r = 0; r < rounds; ++r) {
      const int per = runs / rounds + (r < runs % rounds);
      for (size_t c = 0; c < models.size(); ++c) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));  // idle pause: other workers go to sleep
        for (int i = 0; i < 10; ++i) models[c]->run(x.data());
        for (int i = 0; i < per; ++i) {
          const auto t0 = clock::now();
          char* err = nullptr;
          if (nasrt_model_run(models[c]->get(), x.data(), 1, y.data(), &err)) throw nasrt::Error(err);
          lat[c].push_back(std::chrono::duration<double, std::micro>(clock::now() - t0).count());
        }
      }
    }
    for (const auto& [c, f] : busy_cores(watched)) busy[c] = std::max(busy[c], f);
    std::printf("model %s\nhost  %s\n", model.c_str(), nasrt_cpu_signature());
    std::printf("kernels:");
    const auto precisions = single.kernel_precisions();
    const auto kernels = single.kernels();
    for (size_t i = 0; i < kernels.size(); ++i)  // an int8 conv as name=backend/int8
      std::printf(" %s=%s%s", kernels[i].first.c_str(), kernels[i].second.c_str(),
                  precisions[i] == "int8" ? "/int8" : "");
    std::printf("\n%-24s %9s %9s %9s %9s   (us, batch 1, %d runs)\n", "configuration", "median", "p90", "p99", "min", runs);
    std::vector<Stats> s;
    for (size_t c = 0; c < models.size(); ++c) {
      s.push_back(stats(lat[c]));
      const std::string name = c == 0 ? "nasrt 1 thread" : "nasrt " + std::to_string(n) + " path threads";
      std::printf("%-24s %9.1f %9.1f %9.1f %9.1f\n", name.c_str(), s[c].median, s[c].p90, s[c].p99, s[c].min);
    }
    if (!busy.empty()) {
      std::string names;
      for (const auto& [c, f] : busy)
        names += (names.empty() ? "" : ", ") + std::to_string(c) + " (" + std::to_string(static_cast<int>(100 * f + 0.5)) + "% busy)";
      std::printf("WARNING: another process held core%s %s around the timing: latencies are not those of a quiet "
                  "board (nasrt takes over a late thread's work or runs on one thread; peers may not)\n", busy.size() > 1 ? "s" : "", names.c_str());
    }
    if (s.size() > 1) std::printf("multi-thread speedup vs single-core: %.2fx\n", s[0].median / s[1].median);
    const size_t best = s.size() > 1 && s[1].median < s[0].median ? 1 : 0;
    std::printf("best configuration: %s (median %.1f us)\n",
                best ? ("nasrt " + std::to_string(n) + " path threads").c_str() : "nasrt 1 thread", s[best].median);
    std::printf("peak RSS %.1f MiB\n", peak_rss_kb() / 1024.0);
    if (!json_out.empty()) {
      std::ofstream f(json_out);
      f << "{\"model\": \"" << model << "\", \"host\": \"" << nasrt_cpu_signature() << "\", \"runs\": " << runs
        << ", \"peak_rss_kb\": " << peak_rss_kb() << ", \"busy_cores\": {";
      for (auto it = busy.begin(); it != busy.end(); ++it)
        f << (it == busy.begin() ? "" : ", ") << "\"" << it->first << "\": " << it->second;
      f << "}, \"configs\": [";
      for (size_t c = 0; c < s.size(); ++c)
        f << (c ? ", " : "") << "{\"threads\": " << (c == 0 ? 1 : n) << ", \"median\": " << s[c].median
          << ", \"p90\": " << s[c].p90 << ", \"p99\": " << s[c].p99 << ", \"min\": " << s[c].min << "}";
      f << "]}\n";
      if (!f) throw std::runtime_error(json_out + ": cannot write");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nasrt-bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
