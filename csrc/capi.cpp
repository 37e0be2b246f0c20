// The C API (include/nasrt/nasrt.h) over a Session (model, tuning policy, executor).
#include "nasrt/nasrt.h"

#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "kernels/registry.h"
#include "runtime/cpu.h"
#include "runtime/model.h"
#include "runtime/session.h"
#include "runtime/tune.h"

#ifndef NASRT_VERSION
#define NASRT_VERSION "0.0.0"
#endif

struct nasrt_model {
  std::string path;
  std::unique_ptr<nasrt::Session> session;
  std::vector<std::string> kernel_backends;
};

namespace {

void set_error(char** error, const std::string& msg) {
  if (!error) return;
  *error = static_cast<char*>(std::malloc(msg.size() + 1));
  if (*error) std::memcpy(*error, msg.c_str(), msg.size() + 1);
}

}  // namespace

extern "C" {

void nasrt_options_init(nasrt_options* o) {
  if (!o) return;
  std::memset(o, 0, sizeof *o);
  o->balance = 1;
}

nasrt_model* nasrt_model_load(const char* path, int threads, char** error) {
  nasrt_options o;
  nasrt_options_init(&o);
  o.threads = threads;
  return nasrt_model_load_ex(path, &o, error);
}

nasrt_model* nasrt_model_load_ex(const char* path, const nasrt_options* options, char** error) {
  if (error) *error = nullptr;
  if (!path) {
    set_error(error, "path: NULL");
    return nullptr;
  }
  nasrt_options o;
  nasrt_options_init(&o);
  if (options) o = *options;
  try {
    auto m = std::make_unique<nasrt_model>();
    m->path = path;
    auto model = std::make_shared<const nasrt::LoadedModel>(nasrt::load_model(path));
    nasrt::SessionOptions so;
    so.threads = nasrt::session_threads(*model, path, o.threads);
    if (o.ncores < 0 || (o.ncores > 0 && !o.cores))
      throw nasrt::ModelError("cores: ncores > 0 needs a cores array");
    so.cores.assign(o.cores, o.cores + o.ncores);
    so.backend = nasrt::parse_backend(o.backend ? o.backend : "auto");
    so.balance = o.balance != 0;
    so.adapt = o.fixed_threads == 0;
    so.tune = o.tune != 0;
    m->session =
        std::make_unique<nasrt::Session>(std::move(model), path, nasrt::tuning_path(path), so);
    for (const auto& k : m->session->executor().kernels())
      m->kernel_backends.push_back(nasrt::backend_name(k.backend));
    return m.release();
  } catch (const nasrt::ModelError& e) {
    set_error(error, e.what());
  } catch (const std::invalid_argument& e) {
    set_error(error, std::string(path) + ": " + e.what());
  } catch (const std::exception& e) {
    set_error(error, std::string(path) + ": " + e.what());
  } catch (...) {
    set_error(error, std::string(path) + ": unknown error");
  }
  return nullptr;
}

int nasrt_model_input_shape(const nasrt_model* m, int* c, int* h, int* w) {
  if (!m) return -1;
  if (c) *c = m->session->model().net.in_c;
  if (h) *h = m->session->model().net.in_h;
  if (w) *w = m->session->model().net.in_w;
  return 0;
}

int nasrt_model_classes(const nasrt_model* m) { return m ? m->session->executor().classes() : -1; }
int nasrt_model_paths(const nasrt_model* m) { return m ? m->session->executor().paths() : -1; }
int nasrt_model_threads(const nasrt_model* m) { return m ? m->session->executor().threads() : -1; }
int nasrt_model_pinned_core(const nasrt_model* m, int slot) {
  if (!m || slot < 0 || slot >= m->session->executor().threads()) return -2;
  return m->session->executor().pinned_cores()[slot];
}

int nasrt_model_run(nasrt_model* m, const float* input, int batch, float* logits, char** error) {
  if (error) *error = nullptr;
  if (!m || (batch > 0 && (!input || !logits)) || batch < 0) {
    set_error(error, "run: needs a model, batch >= 0 and input/logits buffers");
    return -1;
  }
  try {
    m->session->executor().run(input, batch, logits);
    return 0;
  } catch (const std::exception& e) {
    set_error(error, m->path + ": " + e.what());
  } catch (...) {
    set_error(error, m->path + ": unknown error");
  }
  return -1;
}

const char* nasrt_model_metadata(const nasrt_model* m, const char* key) {
  if (!m || !key) return nullptr;
  auto it = m->session->model().metadata.find(key);
  return it == m->session->model().metadata.end() ? nullptr : it->second.c_str();
}

int nasrt_model_kernels(const nasrt_model* m) {
  return m ? static_cast<int>(m->session->executor().kernels().size()) : 0;
}
const char* nasrt_model_kernel_name(const nasrt_model* m, int i) {
  if (!m || i < 0 || i >= nasrt_model_kernels(m)) return nullptr;
  return m->session->executor().kernels()[i].name.c_str();
}
const char* nasrt_model_kernel_backend(const nasrt_model* m, int i) {
  if (!m || i < 0 || i >= nasrt_model_kernels(m)) return nullptr;
  return m->kernel_backends[i].c_str();
}
const char* nasrt_model_kernel_precision(const nasrt_model* m, int i) {
  if (!m || i < 0 || i >= nasrt_model_kernels(m)) return nullptr;
  return m->session->executor().kernels()[i].precision == nasrt::Precision::Int8 ? "int8" : "fp32";
}
const char* nasrt_model_notice(const nasrt_model* m) { return m ? m->session->tuning().notice.c_str() : ""; }

void nasrt_model_free(nasrt_model* m) { delete m; }
void nasrt_error_free(char* error) { std::free(error); }

const char* nasrt_version(void) { return NASRT_VERSION; }

const char* nasrt_backends(void) {
  static const std::string s = [] {
    std::string out;
    for (nasrt::Backend b : nasrt::compiled_backends()) out += (out.empty() ? "" : ",") + nasrt::backend_name(b);
    return out;
  }();
  return s.c_str();
}

const char* nasrt_cpu_signature(void) {
  static const std::string s = nasrt::cpu_signature();
  return s.c_str();
}

}  // extern "C"
