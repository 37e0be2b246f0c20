// Native tests (no Python): the C API on the fixture model against logits
// recorded by Python, 1 vs P threads bitwise, fresh-executor start-up stress,
// corrupt files giving errors, every compiled backend, no leak over 1,000
// load/run/free cycles per backend, tuning, the pure schedule as the executor realises it,
// the int8 conv kernels against the int8 reference.
// CI also runs it under ASan+UBSan (with LeakSanitizer) and TSan.
// Usage: nasrt_native_tests [DATA_DIR] [STRESS_CYCLES]
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "kernels/registry.h"
#include "nasrt/nasrt.h"
#include "runtime/executor.h"
#include "runtime/model.h"
#include "runtime/schedule.h"
#include "runtime/tune.h"
#include "tools/npy.h"

#ifndef NASRT_TEST_DATA
#define NASRT_TEST_DATA "tests/data"
#endif

static int failures = 0;
#define CHECK(cond, ...)                                          \
  do {                                                            \
    if (!(cond)) {                                                \
      ++failures;                                                 \
      std::fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                          \
      std::fprintf(stderr, "\n");                                 \
    }                                                             \
  } while (0)

// Sanitizer builds replace malloc: ask their allocator (mallinfo2 would see nothing).
// GCC defines __SANITIZE_*__, clang has __has_feature.
#if defined(__SANITIZE_ADDRESS__)
#define NASRT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NASRT_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define NASRT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define NASRT_TSAN 1
#endif
#endif
// The sanitizer runtimes' public interface (GCC ships no <sanitizer/*.h> headers).
#if defined(NASRT_ASAN) || defined(NASRT_TSAN)
extern "C" size_t __sanitizer_get_current_allocated_bytes(void);
#endif
#if defined(NASRT_ASAN)
extern "C" int __lsan_do_recoverable_leak_check(void);
#endif

// Heap bytes in use now (-1: unknown on this libc).
static long long heap_in_use() {
#if defined(NASRT_ASAN) || defined(NASRT_TSAN)
  return static_cast<long long>(__sanitizer_get_current_allocated_bytes());
#elif defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 33)
  const struct mallinfo2 mi = mallinfo2();  // all arenas; mmapped chunks are in hblkhd
  return static_cast<long long>(mi.uordblks + mi.hblkhd);
#else
  return -1;
#endif
}

// Threads of this process (/proc/self/status), -1 if unavailable.
static long long threads_now() {
  std::ifstream f("/proc/self/status");
  for (std::string line; std::getline(f, line);)
    if (line.compare(0, 8, "Threads:") == 0) return std::atoll(line.c_str() + 8);
  return -1;
}

// kB of address space mapped (the sum of /proc/self/maps, -1 if unavailable): VmSize,
// except under qemu-user, which shows the guest's mappings here but its own VmSize.
static long long mapped_kb() {
  std::ifstream f("/proc/self/maps");
  if (!f) return -1;
  unsigned long long total = 0;
  for (std::string line; std::getline(f, line);) {
    unsigned long long lo = 0, hi = 0;
    if (std::sscanf(line.c_str(), "%llx-%llx", &lo, &hi) == 2 && hi > lo) total += hi - lo;
  }
  return static_cast<long long>(total / 1024);
}

static std::vector<std::string> compiled_backends() {
  std::vector<std::string> out;
  std::stringstream ss(nasrt_backends());
  for (std::string b; std::getline(ss, b, ',');) out.push_back(b);
  return out;
}

static std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : NASRT_TEST_DATA;
  const int cycles = argc > 2 ? std::atoi(argv[2]) : 2000;
  const std::string model = dir + "/tiny.nasrt";
  const std::vector<float> x = nasrt_tools::read_floats(dir + "/tiny_input.bin", nullptr);
  const std::vector<float> expect = nasrt_tools::read_floats(dir + "/tiny_logits.bin", nullptr);
  int passed = 0;

  // 1. Logits on 1 and 2 threads: equal to each other bitwise, to Python's within 1e-4.
  std::vector<std::vector<float>> outs;
  for (int threads : {1, 2}) {
    char* err = nullptr;
    nasrt_model* m = nasrt_model_load(model.c_str(), threads, &err);
    CHECK(m, "%s", err ? err : "");
    if (!m) { nasrt_error_free(err); continue; }
    int c, h, w;
    CHECK(nasrt_model_input_shape(m, &c, &h, &w) == 0 && static_cast<size_t>(c * h * w) == x.size(), "shape");
    std::vector<float> y(nasrt_model_classes(m));
    CHECK(y.size() == expect.size(), "classes %zu vs %zu", y.size(), expect.size());
    CHECK(nasrt_model_run(m, x.data(), 1, y.data(), &err) == 0, "%s", err ? err : "");
    float scale = 1e-6f, worst = 0;
    for (size_t i = 0; i < y.size() && i < expect.size(); ++i) {
      scale = std::max(scale, std::fabs(expect[i]));
      worst = std::max(worst, std::fabs(y[i] - expect[i]));
    }
    CHECK(worst <= 1e-4f * scale, "threads %d: max |diff| %g vs scale %g", threads, worst, scale);
    outs.push_back(y);
    nasrt_model_free(m);
    ++passed;
  }
  CHECK(outs.size() == 2 && outs[0] == outs[1], "1 vs 2 threads not bitwise equal");
  ++passed;

  // 2. Fresh 2-thread executors, each run once: start-up and first hand-off must never hang.
  {
    nasrt_options o;
    nasrt_options_init(&o);
    o.threads = 2;
    o.backend = "reference";
    std::vector<float> y(expect.size());
    for (int i = 0; i < cycles; ++i) {
      char* err = nullptr;
      nasrt_model* m = nasrt_model_load_ex(model.c_str(), &o, &err);
      if (!m) { CHECK(false, "%s", err); nasrt_error_free(err); break; }
      CHECK(nasrt_model_run(m, x.data(), 1, y.data(), &err) == 0, "run");
      nasrt_model_free(m);
    }
    ++passed;
  }

  // 3. Bad input: errors naming the file, never a crash.
  {
    char* err = nullptr;
    CHECK(!nasrt_model_load("/nonexistent.nasrt", 0, &err) && err && std::strstr(err, "/nonexistent.nasrt"), "missing file");
    nasrt_error_free(err);
    CHECK(!nasrt_model_load(model.c_str(), 99, &err) && err && std::strstr(err, "threads"), "threads");
    nasrt_error_free(err);
    const std::string bytes = slurp(model);
    const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
    int errors = 0;
    for (size_t cut = 0; cut < bytes.size(); cut += 1 + bytes.size() / 97) {  // truncations
      try { nasrt::parse_model(data, cut, "cut.nasrt"); } catch (const nasrt::ModelError& e) {
        errors += std::strstr(e.what(), "cut.nasrt") != nullptr;
      }
    }
    CHECK(errors > 90, "truncations: %d errors", errors);
    std::string flipped = bytes;  // a flipped data byte fails the checksum
    flipped[flipped.size() - 3] ^= 0x40;
    bool crc = false;
    try { nasrt::parse_model(reinterpret_cast<const uint8_t*>(flipped.data()), flipped.size(), "f.nasrt"); }
    catch (const nasrt::ModelError& e) { crc = std::strstr(e.what(), "checksum") != nullptr; }
    CHECK(crc, "altered data not detected");
    nasrt_model* m = nasrt_model_load(model.c_str(), 1, &err);
    std::vector<float> bad(x), y(expect.size());
    bad[0] = NAN;
    CHECK(m && nasrt_model_run(m, bad.data(), 1, y.data(), &err) != 0 && err && std::strstr(err, "NaN"), "NaN input");
    nasrt_error_free(err);
    bad[0] = 3e38f;  // finite, but it would overflow inside the net
    CHECK(m && nasrt_model_run(m, bad.data(), 1, y.data(), &err) != 0 && err && std::strstr(err, "1e6"), "huge input");
    nasrt_error_free(err);
    nasrt_model_free(m);
    // Cores outside the process's affinity mask are an error, and where each slot is
    // pinned is reported (slot 0, the caller, never is).
    nasrt_options o;
    nasrt_options_init(&o);
    o.threads = 2;
    const int far[2] = {0, 4095};
    o.cores = far, o.ncores = 2;
    CHECK(!nasrt_model_load_ex(model.c_str(), &o, &err) && err && std::strstr(err, "cores"), "core 4095 accepted");
    nasrt_error_free(err);
    o.cores = nullptr, o.ncores = 0;
    m = nasrt_model_load_ex(model.c_str(), &o, &err);
    CHECK(m && nasrt_model_pinned_core(m, 0) == -1 && nasrt_model_pinned_core(m, 2) == -2 &&
              nasrt_model_pinned_core(m, 1) >= -1, "pinned cores");
    nasrt_model_free(m);
    ++passed;
  }
  // 4. Every compiled backend on 1 and 2 threads: Python's logits, bitwise equal across threads.
  const std::vector<std::string> backends = compiled_backends();
  CHECK(std::find(backends.begin(), backends.end(), "reference") != backends.end(), "%s", nasrt_backends());
  for (const std::string& b : backends) {
    std::vector<std::vector<float>> per_threads;
    for (int threads : {1, 2}) {
      nasrt_options o;
      nasrt_options_init(&o);
      o.threads = threads;
      o.backend = b.c_str();
      char* err = nullptr;
      nasrt_model* m = nasrt_model_load_ex(model.c_str(), &o, &err);
      CHECK(m, "%s: %s", b.c_str(), err ? err : "");
      if (!m) { nasrt_error_free(err); continue; }
      for (int i = 0; i < nasrt_model_kernels(m); ++i)
        CHECK(b == nasrt_model_kernel_backend(m, i), "%s: conv %s runs on %s", b.c_str(),
              nasrt_model_kernel_name(m, i), nasrt_model_kernel_backend(m, i));
      std::vector<float> y(expect.size()), first;
      for (int rep = 0; rep < 20; ++rep) {  // the hand-offs of later runs too, not only the first
        CHECK(nasrt_model_run(m, x.data(), 1, y.data(), &err) == 0, "%s: %s", b.c_str(), err ? err : "");
        nasrt_error_free(err);
        err = nullptr;
        if (rep == 0) first = y;
        CHECK(y == first, "%s, %d threads: run %d differs from run 0", b.c_str(), threads, rep);
      }
      float scale = 1e-6f, worst = 0;
      for (size_t i = 0; i < y.size(); ++i) {
        scale = std::max(scale, std::fabs(expect[i]));
        worst = std::max(worst, std::fabs(y[i] - expect[i]));
      }
      CHECK(worst <= 1e-4f * scale, "%s, %d threads: max |diff| %g vs scale %g", b.c_str(), threads, worst, scale);
      per_threads.push_back(y);
      nasrt_model_free(m);
    }
    CHECK(per_threads.size() == 2 && per_threads[0] == per_threads[1], "%s: 1 vs 2 threads not bitwise equal",
          b.c_str());
  }
  ++passed;

  // 5. No leak over 1,000 load/run/free cycles of the C API per backend, error paths
  // included (a refused load, a refused run). Heap bytes in use, threads and the
  // address space (thread stacks, JIT code are mmaps: no heap check sees them) must
  // not grow between cycle 100 and cycle 1,000; caches fill in the first cycles.
  // Under ASan, LeakSanitizer checks that nothing became unreachable.
  for (const std::string& b : backends) {
    nasrt_options o;
    nasrt_options_init(&o);
    o.backend = b.c_str();
    o.threads = 2;
    std::vector<float> y(expect.size()), bad(x);
    bad[1] = INFINITY;
    const int n = 1000, settle = 100;
    long long heap0 = 0, vm0 = 0, threads0 = 0;
    bool ok = true;
    for (int i = 0; i < n && ok; ++i) {
      if (i == settle) heap0 = heap_in_use(), vm0 = mapped_kb(), threads0 = threads_now();
      char* err = nullptr;
      nasrt_model* m = nasrt_model_load_ex(model.c_str(), &o, &err);
      ok = m != nullptr;
      CHECK(ok, "%s: %s", b.c_str(), err ? err : "");
      nasrt_error_free(err);
      if (!ok) break;
      err = nullptr;
      ok = nasrt_model_run(m, x.data(), 1, y.data(), &err) == 0;
      CHECK(ok, "%s: %s", b.c_str(), err ? err : "");
      nasrt_error_free(err);
      err = nullptr;
      CHECK(nasrt_model_run(m, bad.data(), 1, y.data(), &err) != 0 && err, "%s: inf input accepted", b.c_str());
      nasrt_error_free(err);
      nasrt_model_free(m);
      err = nullptr;
      CHECK(!nasrt_model_load_ex("/nonexistent.nasrt", &o, &err) && err, "missing file");
      nasrt_error_free(err);
    }
    const long long heap1 = heap_in_use(), vm1 = mapped_kb(), threads1 = threads_now();
    std::printf("%s: %d load/run/free cycles: heap %+lld B, mapped %+lld kB, threads %+lld (cycle %d -> %d)\n",
                b.c_str(), n, heap1 - heap0, vm1 - vm0, threads1 - threads0, settle, n);
    // 900 cycles: 64 KiB catches any per-cycle heap leak above ~73 bytes (LeakSanitizer: any size).
    CHECK(heap0 < 0 || heap1 - heap0 < 64 * 1024, "%s: heap grew %lld bytes", b.c_str(), heap1 - heap0);
    CHECK(threads1 == threads0, "%s: %lld threads left behind", b.c_str(), threads1 - threads0);
    // 900 cycles: 1 MiB catches a leaked page per cycle or a single unjoined thread's stack.
    // Not under the sanitizers: their allocators map fresh memory while freed blocks sit
    // in quarantine (ASan), so the address space grows without a leak; their heap count is exact.
#if !defined(NASRT_ASAN) && !defined(NASRT_TSAN)
    CHECK(vm0 < 0 || vm1 - vm0 < 1024, "%s: address space grew %lld kB", b.c_str(), vm1 - vm0);
#endif
  }
#if defined(NASRT_ASAN)
  CHECK(__lsan_do_recoverable_leak_check() == 0, "LeakSanitizer found leaks (reported above)");
#endif
  ++passed;

  // 6. Tuning through the C API on a copy of the model: tune (every backend timed, the
  // file written), then a plain load reads the file back and picks the same backends.
  {
    char dtemplate[] = "/tmp/nasrt_native_tests.XXXXXX";
    const char* tdir = mkdtemp(dtemplate);
    CHECK(tdir, "mkdtemp");
    if (tdir) {
      const std::string copy = std::string(tdir) + "/tiny.nasrt", tfile = copy + ".tune.json";
      { std::ofstream(copy, std::ios::binary) << slurp(model); }
      std::vector<std::string> tuned;
      for (int tune : {1, 0}) {
        nasrt_options o;
        nasrt_options_init(&o);
        o.tune = tune;
        char* err = nullptr;
        nasrt_model* m = nasrt_model_load_ex(copy.c_str(), &o, &err);
        CHECK(m, "tune %d: %s", tune, err ? err : "");
        nasrt_error_free(err);
        if (!m) break;
        CHECK(std::strcmp(nasrt_model_notice(m), "") == 0, "tune %d: notice %s", tune, nasrt_model_notice(m));
        std::vector<std::string> now;
        for (int i = 0; i < nasrt_model_kernels(m); ++i) now.push_back(nasrt_model_kernel_backend(m, i));
        if (tune) tuned = now;
        CHECK(now == tuned, "the tuning file was not applied");
        std::vector<float> y(expect.size());
        err = nullptr;
        CHECK(nasrt_model_run(m, x.data(), 1, y.data(), &err) == 0, "%s", err ? err : "");
        nasrt_error_free(err);
        float scale = 1e-6f, worst = 0;
        for (size_t i = 0; i < y.size(); ++i) {
          scale = std::max(scale, std::fabs(expect[i]));
          worst = std::max(worst, std::fabs(y[i] - expect[i]));
        }
        CHECK(worst <= 1e-4f * scale, "tuned: max |diff| %g vs scale %g", worst, scale);
        nasrt_model_free(m);
        CHECK(std::ifstream(tfile).good(), "no tuning file %s", tfile.c_str());
      }
      std::remove(tfile.c_str());
      std::remove(copy.c_str());
      CHECK(rmdir(tdir) == 0, "%s: left files behind", tdir);
    }
    ++passed;
  }

  // 6b. The whole-net check of a tuning: the reference kernels for every conv lose to the
  // built-in rule (a fast backend compiled) on 1 and 2 threads, so that tuning is not kept.
  {
    const nasrt::LoadedModel lm = nasrt::load_model(model);
    if (nasrt::builtin_backend() != nasrt::Backend::Reference) {
      std::map<std::string, nasrt::Backend> all_ref;
      nasrt::for_each_conv(lm.net, [&](const nasrt::ConvSpec& c, int, int) {
        all_ref[c.name] = nasrt::Backend::Reference;
      });
      const nasrt::NetCheck n = nasrt::check_whole_net(lm.net, all_ref, 2, 50, 3);
      CHECK(n.threads == std::vector<int>({1, 2}) && n.us.size() == 2, "net check: thread counts");
      CHECK(!n.keep_tuned, "net check: all-reference kept (%.1f vs %.1f us, %.1f vs %.1f us)",
            n.us[0][0], n.us[0][1], n.us[1][0], n.us[1][1]);
      std::printf("whole-net check, all reference vs built-in: %.1f vs %.1f us (1 thread), %.1f vs %.1f us (2)\n",
                  n.us[0][0], n.us[0][1], n.us[1][0], n.us[1][1]);
    }
    ++passed;
  }

  // 7. The pure schedule is the one the executor realises (on the reference kernels every
  // conv may be split), and covers every op's rows exactly once.
  {
    const nasrt::LoadedModel lm = nasrt::load_model(model);
    const int P = static_cast<int>(lm.net.paths.size());
    for (int t = 1; t <= P; ++t) {
      for (bool balance : {false, true}) {
        const nasrt::Schedule s = nasrt::compile_schedule(lm.net, t, balance);
        nasrt::ExecOptions o;
        o.threads = t;
        o.backend = nasrt::Backend::Reference;
        o.balance = balance;
        const nasrt::Executor e(lm.net, o);
        bool same = s.size() == e.schedule().size();
        for (size_t i = 0; same && i < s.size(); ++i)
          for (size_t k = 0; same && k < s[i].size(); ++k) {
            same = s[i][k].size() == e.schedule()[i][k].size();
            for (size_t j = 0; same && j < s[i][k].size(); ++j) {
              const nasrt::OpTag &a = s[i][k][j], &b = e.schedule()[i][k][j];
              same = a.kind == b.kind && a.path == b.path && a.layer == b.layer && a.conv == b.conv &&
                     a.first == b.first && a.rows == b.rows && a.total_rows == b.total_rows;
            }
          }
        CHECK(same, "threads %d balance %d: compile_schedule differs from Executor::schedule", t,
              balance);
        std::map<std::array<int, 4>, int> next;  // each part's rows: contiguous, then all of them
        bool covered = e.phases() == static_cast<int>(s.size());
        for (const auto& phase : s)
          for (const auto& share : phase)
            for (const nasrt::OpTag& op : share) {
              int& at = next[{op.kind, op.path, op.layer, op.conv}];
              covered = covered && op.first == at && op.rows > 0;
              at += op.rows;
            }
        for (const auto& phase : s)
          for (const auto& share : phase)
            for (const nasrt::OpTag& op : share)
              covered = covered && next[{op.kind, op.path, op.layer, op.conv}] == op.total_rows;
        CHECK(covered, "threads %d balance %d: schedule does not cover each op once", t, balance);
      }
    }
    bool refused = false;
    try {
      nasrt::compile_schedule(lm.net, P + 1, true);
    } catch (const std::invalid_argument& e) {
      refused = std::strstr(e.what(), "threads: must be in 1..") != nullptr;
    }
    CHECK(refused, "compile_schedule accepted %d threads for %d paths", P + 1, P);
    ++passed;
  }

  // 8. oneDNN's and XNNPACK's int8 convs equal the int8 reference bytewise (7-bit weights:
  // eligible for oneDNN on every x86 ISA), dense, depthwise, strided and 1x1, on channel
  // slices of wider pixels.
  for (nasrt::Backend backend : {nasrt::Backend::Onednn, nasrt::Backend::Xnnpack}) {
    if (!nasrt::backend_compiled(backend)) continue;
    const std::string bn = nasrt::backend_name(backend);
    struct Case { int h, w, k, s, groups, gi, go, zx; bool relu; };
    for (const Case& c : {Case{9, 7, 3, 1, 1, 5, 6, 0, true}, Case{10, 10, 5, 2, 1, 8, 16, 7, false},
                          Case{8, 9, 3, 2, 12, 1, 1, 0, true}, Case{6, 6, 1, 1, 1, 24, 10, 0, false},
                          Case{7, 7, 3, 1, 6, 1, 2, 3, true}}) {
      nasrt::ConvGeom g;
      g.in_h = c.h, g.in_w = c.w, g.kernel = c.k, g.stride = c.s, g.groups = c.groups;
      g.group_in = c.gi, g.group_out = c.go, g.relu = c.relu;
      g.set_same_pad();
      const int ic = c.groups * c.gi, oc = c.groups * c.go;
      g.in_stride = ic + 3, g.out_stride = oc + 2;
      uint32_t r = 12345u + c.k * 7 + c.groups;
      auto next = [&r] { return r ^= r << 13, r ^= r >> 17, r ^= r << 5; };
      std::vector<uint8_t> in(static_cast<size_t>(c.h) * c.w * g.in_stride + 64);
      for (uint8_t& v : in) v = static_cast<uint8_t>(next() >> 24);
      std::vector<int8_t> w(static_cast<size_t>(oc) * c.k * c.k * c.gi);
      for (int8_t& v : w) v = static_cast<int8_t>(static_cast<int>(next() % 129) - 64);
      nasrt::Int8Conv q{c.zx, 0, std::vector<int32_t>(oc), std::vector<float>(oc)};
      for (int i = 0; i < oc; ++i) {
        q.m[i] = (1.0f + i % 3) / (400.0f * c.k * std::sqrt(float(c.gi)));
        q.bias[i] = static_cast<int32_t>(next() % 20001) - 10000;
      }
      const size_t n = static_cast<size_t>(g.out_h()) * g.out_w() * g.out_stride + 64;
      std::vector<uint8_t> want(n, 0), got(n, 0);
      nasrt::ref::conv_int8(g, q, w.data(), in.data(), want.data());
      try {
        nasrt::find_kernels(backend, nasrt::Precision::Int8)
            ->make_conv_int8(g, q, w.data(), in.data(), got.data())->run();
        CHECK(got == want, "%s int8 k%d s%d g%d: differs from the reference", bn.c_str(), c.k,
              c.s, c.groups);
      } catch (const std::exception& e) {
        CHECK(false, "%s int8 k%d s%d g%d: %s", bn.c_str(), c.k, c.s, c.groups, e.what());
      }
      CHECK(nasrt::check_conv_int8(backend, g, q, w.data()).empty(),
            "%s int8 k%d s%d g%d: self-check failed", bn.c_str(), c.k, c.s, c.groups);
    }
    ++passed;
  }

  std::printf("%d passed, %d failed\n", passed - (failures > 0), failures);
  return failures ? 1 : 0;
}
