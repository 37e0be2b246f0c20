// A thin C++ face of nasrt.h: RAII and exceptions.
#pragma once
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "nasrt/nasrt.h"

namespace nasrt {

class Error : public std::runtime_error {
 public:
  explicit Error(char* msg) : std::runtime_error(msg ? msg : "nasrt: unknown error") {
    nasrt_error_free(msg);
  }
};

class Model {
 public:
  explicit Model(const std::string& path, nasrt_options options = defaults()) {
    char* err = nullptr;
    m_ = nasrt_model_load_ex(path.c_str(), &options, &err);
    if (!m_) throw Error(err);
  }
  ~Model() { nasrt_model_free(m_); }
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;
  Model(Model&& o) noexcept : m_(std::exchange(o.m_, nullptr)) {}

  static nasrt_options defaults() {
    nasrt_options o;
    nasrt_options_init(&o);
    return o;
  }
  // Logits of `batch` samples (NCHW float32).
  std::vector<float> run(const float* input, int batch = 1) {
    std::vector<float> y(static_cast<size_t>(batch) * classes());
    char* err = nullptr;
    if (nasrt_model_run(m_, input, batch, y.data(), &err) != 0) throw Error(err);
    return y;
  }
  std::vector<int> input_shape() const {
    int c = 0, h = 0, w = 0;
    nasrt_model_input_shape(m_, &c, &h, &w);
    return {c, h, w};
  }
  size_t input_size() const {
    auto s = input_shape();
    return static_cast<size_t>(s[0]) * s[1] * s[2];
  }
  int classes() const { return nasrt_model_classes(m_); }
  int paths() const { return nasrt_model_paths(m_); }
  int threads() const { return nasrt_model_threads(m_); }
  std::string metadata(const std::string& key) const {
    const char* v = nasrt_model_metadata(m_, key.c_str());
    return v ? v : "";
  }
  std::vector<std::pair<std::string, std::string>> kernels() const {
    std::vector<std::pair<std::string, std::string>> out;
    for (int i = 0; i < nasrt_model_kernels(m_); ++i)
      out.emplace_back(nasrt_model_kernel_name(m_, i), nasrt_model_kernel_backend(m_, i));
    return out;
  }
  // "fp32" or "int8" per conv, in the order of kernels().
  std::vector<std::string> kernel_precisions() const {
    std::vector<std::string> out;
    for (int i = 0; i < nasrt_model_kernels(m_); ++i) out.emplace_back(nasrt_model_kernel_precision(m_, i));
    return out;
  }
  std::string notice() const { return nasrt_model_notice(m_); }
  nasrt_model* get() { return m_; }

 private:
  nasrt_model* m_ = nullptr;
};

}  // namespace nasrt
