// Native tests (no Python): the C API on the fixture model against logits
// recorded by Python, 1 vs P threads bitwise, fresh-executor start-up stress,
// corrupt files giving errors. Usage: nasrt_native_tests [DATA_DIR] [STRESS_CYCLES]
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "nasrt/nasrt.h"
#include "runtime/model.h"
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
    nasrt_model_free(m);
    ++passed;
  }
  std::printf("%d passed, %d failed\n", passed - (failures > 0), failures);
  return failures ? 1 : 0;
}
