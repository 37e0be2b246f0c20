// nasrt-run MODEL INPUT: classify one input with the C++ API and print the top classes.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "nasrt/nasrt.hpp"
#include "tools/npy.h"

static const char* kUsage =
    "usage: nasrt-run MODEL.nasrt INPUT(.npy|.bin) [--threads N] [--top K] [--logits OUT.bin]\n"
    "Runs one input (C x H x W float32, normalised as in training; or batch x C x H x W) and\n"
    "prints the top K classes per sample. --logits writes the raw float32 logits.\n";

int main(int argc, char** argv) {
  std::vector<std::string> pos;
  int threads = 0, top = 3;
  std::string logits_out;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) { std::fprintf(stderr, "nasrt-run: %s needs a value\n%s", a.c_str(), kUsage); std::exit(2); }
      return argv[++i];
    };
    if (a == "-h" || a == "--help") { std::printf("%s", kUsage); return 0; }
    else if (a == "--threads") threads = std::atoi(next().c_str());
    else if (a == "--top") top = std::max(1, std::atoi(next().c_str()));
    else if (a == "--logits") logits_out = next();
    else if (!a.empty() && a[0] == '-') { std::fprintf(stderr, "nasrt-run: unknown option %s\n%s", a.c_str(), kUsage); return 2; }
    else pos.push_back(a);
  }
  if (pos.size() != 2) { std::fprintf(stderr, "%s", kUsage); return 2; }
  try {
    nasrt_options o = nasrt::Model::defaults();
    o.threads = threads;
    nasrt::Model m(pos[0], o);
    if (!m.notice().empty()) std::fprintf(stderr, "nasrt-run: %s\n", m.notice().c_str());
    const std::vector<float> x = nasrt_tools::read_floats(pos[1], nullptr);
    const size_t per = m.input_size();
    if (x.empty() || x.size() % per) {
      auto s = m.input_shape();
      std::fprintf(stderr, "nasrt-run: %s: %zu floats, expected a multiple of %d x %d x %d\n",
                   pos[1].c_str(), x.size(), s[0], s[1], s[2]);
      return 2;
    }
    const int batch = static_cast<int>(x.size() / per);
    const std::vector<float> y = m.run(x.data(), batch);
    std::string names = m.metadata("nasrt.class_names");
    for (int b = 0; b < batch; ++b) {
      const float* l = y.data() + static_cast<size_t>(b) * m.classes();
      std::vector<int> idx(m.classes());
      std::iota(idx.begin(), idx.end(), 0);
      std::sort(idx.begin(), idx.end(), [&](int p, int q) { return l[p] > l[q]; });
      std::printf("sample %d:", b);
      for (int k = 0; k < std::min(top, m.classes()); ++k) std::printf("  class %d (%.4f)", idx[k], l[idx[k]]);
      std::printf("\n");
    }
    if (!logits_out.empty()) nasrt_tools::write_floats(logits_out, y);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nasrt-run: %s\n", e.what());
    return 1;
  }
  return 0;
}
