// nasrt-run MODEL INPUT: classify inputs with the C++ API and print the top classes,
// as `nasrt run` does for the same .npy (same preprocessing, same lines).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nasrt/metadata_keys.h"
#include "nasrt/nasrt.hpp"
#include "tools/npy.h"

static const char* kUsage =
    "usage: nasrt-run MODEL.nasrt INPUT(.npy|.bin) [--threads N] [--backend B] [--top-k K] [--logits OUT.bin]\n"
    "INPUT: a .npy array (C,H,W) or (N,C,H,W): float32 already normalised as in training, or uint8\n"
    "pixels (scaled by 1/255 and normalised with the model's stored input_mean/input_std, as\n"
    "`nasrt run` does); or raw float32 .bin (N x C x H x W values). Images: `nasrt run` decodes them.\n"
    "Prints the top K classes (default 3) of each sample with their softmax probabilities, named\n"
    "by the model's class names; --logits writes the raw float32 logits. --backend: auto (default: the\n"
    "tuning file, else the built-in choice), onednn, xnnpack or reference, for every conv and FC.\n";

namespace {

[[noreturn]] void fail(const std::string& msg) { throw std::runtime_error(msg); }

int parse_int(const std::string& flag, const std::string& v, int lo) {
  char* end = nullptr;
  const long n = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end || n < lo || n > 1000000)
    fail(flag + ": must be an integer >= " + std::to_string(lo) + ", got '" + v + "'");
  return static_cast<int>(n);
}

// The model's per-channel (mean, std) from its metadata, or empty when it stores none.
std::vector<std::vector<float>> normalisation(nasrt::Model& m, const std::string& source, int channels) {
  const std::string keys[2] = {NASRT_KEY_INPUT_MEAN, NASRT_KEY_INPUT_STD};
  const bool have[2] = {nasrt_model_metadata(m.get(), keys[0].c_str()) != nullptr,
                        nasrt_model_metadata(m.get(), keys[1].c_str()) != nullptr};
  if (!have[0] && !have[1]) return {};
  std::vector<std::vector<float>> out;
  for (int i = 0; i < 2; ++i) {
    if (!have[i]) fail(source + ": metadata " + keys[i] + ": missing (the model has only one of input_mean/input_std)");
    const std::string text = m.metadata(keys[i]);
    const std::string want = "must be a list of " + std::to_string(channels) + " finite numbers" + (i ? " > 0" : "");
    const nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (j.is_discarded() || !j.is_array() || static_cast<int>(j.size()) != channels)
      fail(source + ": metadata " + keys[i] + ": " + want);
    std::vector<float> v;
    for (const auto& e : j) {
      if (!e.is_number() || !std::isfinite(e.get<double>()) || (i && e.get<double>() <= 0))
        fail(source + ": metadata " + keys[i] + ": " + want);
      v.push_back(static_cast<float>(e.get<double>()));  // float64 -> float32, as numpy's astype
    }
    out.push_back(v);
  }
  return out;
}

std::vector<std::string> class_names(nasrt::Model& m, const std::string& source) {
  if (!nasrt_model_metadata(m.get(), NASRT_KEY_CLASS_NAMES)) return {};
  const nlohmann::json j = nlohmann::json::parse(m.metadata(NASRT_KEY_CLASS_NAMES), nullptr, false);
  if (!j.is_discarded() && j.is_null()) return {};
  std::vector<std::string> names;
  if (!j.is_discarded() && j.is_array() && static_cast<int>(j.size()) == m.classes())
    for (const auto& e : j)
      if (e.is_string()) names.push_back(e.get<std::string>());
  if (static_cast<int>(names.size()) != m.classes()) {
    std::fprintf(stderr, "nasrt-run: warning: %s: metadata " NASRT_KEY_CLASS_NAMES ": not a list of %d strings; "
                 "showing class numbers\n", source.c_str(), m.classes());
    return {};
  }
  return names;
}

// Left-aligned in `width` characters (UTF-8 code points), like Python's f"{s:<16}".
std::string pad(const std::string& s, size_t width) {
  size_t chars = 0;
  for (unsigned char c : s) chars += (c & 0xC0) != 0x80;
  return chars >= width ? s : s + std::string(width - chars, ' ');
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> pos;
  int threads = 0, top = 3;
  std::string logits_out, backend = "auto";
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto next = [&]() -> std::string {
        if (i + 1 >= argc) fail(a + " needs a value");
        return argv[++i];
      };
      if (a == "-h" || a == "--help") { std::printf("%s", kUsage); return 0; }
      else if (a == "--threads") threads = parse_int(a, next(), 1);
      else if (a == "--top-k" || a == "--top") top = parse_int(a, next(), 1);
      else if (a == "--logits") logits_out = next();
      else if (a == "--backend") backend = next();
      else if (!a.empty() && a[0] == '-') { std::fprintf(stderr, "nasrt-run: unknown option %s\n%s", a.c_str(), kUsage); return 2; }
      else pos.push_back(a);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nasrt-run: %s\n", e.what());
    return 2;
  }
  if (pos.size() != 2) { std::fprintf(stderr, "%s", kUsage); return 2; }
  const std::string& model = pos[0];
  const std::string& input = pos[1];
  try {
    nasrt_options o = nasrt::Model::defaults();
    o.threads = threads;
    o.backend = backend.c_str();
    nasrt::Model m(model, o);
    if (!m.notice().empty()) std::fprintf(stderr, "nasrt-run: %s\n", m.notice().c_str());
    const std::vector<int> s = m.input_shape();
    const std::string dims = std::to_string(s[0]) + ", " + std::to_string(s[1]) + ", " + std::to_string(s[2]);
    if (nasrt_tools::looks_like_image(input))
      fail(input + ": an image file: nasrt-run reads .npy arrays or raw float32 .bin (`nasrt run` decodes images)");
    nasrt_tools::Array x = nasrt_tools::read_array(input);
    const size_t per = m.input_size();
    if (x.npy) {  // the shape, not just the count: an HWC array has the right count and another answer
      std::vector<long> t = x.shape;
      if (t.size() == 3) t.insert(t.begin(), 1);
      if (t.size() != 4 || t[1] != s[0] || t[2] != s[1] || t[3] != s[2]) {
        std::string got;
        for (long d : x.shape) got += (got.empty() ? "" : ", ") + std::to_string(d);
        fail(input + ": shape [" + got + "], expected [" + dims + "] or [N, " + dims + "] (C, H, W)");
      }
    } else if (x.data.size() % per) {
      fail(input + ": " + std::to_string(x.data.size()) + " floats, expected a multiple of " + std::to_string(s[0]) +
           " x " + std::to_string(s[1]) + " x " + std::to_string(s[2]));
    }
    if (x.data.empty()) fail(input + ": an empty batch: nothing to classify");
    if (x.uint8) {  // raw pixels: the preprocessing of an image, as `nasrt run`
      const auto norm = normalisation(m, model, s[0]);
      const size_t plane = static_cast<size_t>(s[1]) * s[2];
      for (size_t i = 0; i < x.data.size(); ++i) {
        float v = x.data[i] / 255.0f;
        if (!norm.empty()) {
          const size_t c = i / plane % s[0];
          v = (v - norm[0][c]) / norm[1][c];
        }
        x.data[i] = v;
      }
    }
    const int batch = static_cast<int>(x.data.size() / per);
    const std::vector<float> y = m.run(x.data.data(), batch);
    const std::vector<std::string> names = class_names(m, model);
    const int k = std::min(top, m.classes());
    std::printf("top %d of %d classes, softmax probabilities:\n", k, m.classes());
    for (int b = 0; b < batch; ++b) {
      const float* l = y.data() + static_cast<size_t>(b) * m.classes();
      const float mx = *std::max_element(l, l + m.classes());
      std::vector<double> p(m.classes());
      double sum = 0;
      for (int c = 0; c < m.classes(); ++c) sum += p[c] = std::exp(static_cast<double>(l[c] - mx));
      std::vector<int> idx(m.classes());
      std::iota(idx.begin(), idx.end(), 0);
      std::stable_sort(idx.begin(), idx.end(), [&](int a, int c) { return l[a] > l[c]; });
      if (batch > 1) std::printf("sample %d:\n", b);
      for (int j = 0; j < k; ++j) {
        const int c = idx[j];
        const std::string label = names.empty() ? "class " + std::to_string(c) : names[c];
        std::printf("  %s %.4f\n", pad(label, 16).c_str(), p[c] / sum);
      }
    }
    if (!logits_out.empty()) nasrt_tools::write_floats(logits_out, y);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nasrt-run: %s\n", e.what());
    return 1;
  }
  return 0;
}
