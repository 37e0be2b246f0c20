// The C API (include/nasrt/nasrt.h) over the native loader, tuner and executor.
#include "nasrt/nasrt.h"

#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "runtime/cpu.h"
#include "runtime/executor.h"
#include "runtime/model.h"
#include "runtime/tune.h"

#ifndef NASRT_VERSION
#define NASRT_VERSION "0.0.0"
#endif

struct nasrt_model {
  std::string path;
  nasrt::LoadedModel model;
  std::unique_ptr<nasrt::Executor> exec;
  std::string notice;
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
    m->model = nasrt::load_model(path);
    const int paths = static_cast<int>(m->model.net.paths.size());
    int threads = o.threads;
    if (threads == 0)
      threads = std::max(1, std::min(paths, static_cast<int>(nasrt::available_cores().size())));
    if (threads < 1 || threads > paths)
      throw nasrt::ModelError(std::string(path) + ": threads: must be in 1.." +
                              std::to_string(paths) + " (the model has " + std::to_string(paths) +
                              " paths), got " + std::to_string(o.threads));
    if (o.ncores < 0 || (o.ncores > 0 && !o.cores))
      throw nasrt::ModelError("cores: ncores > 0 needs a cores array");
    nasrt::ExecOptions eo;
    eo.threads = threads;
    eo.cores.assign(o.cores, o.cores + o.ncores);
    eo.backend = nasrt::parse_backend(o.backend ? o.backend : "auto");
    eo.balance = o.balance != 0;
    eo.adapt = o.fixed_threads == 0;
    if (eo.backend == nasrt::Backend::Auto) {
      const std::string hash = [&] {
        char buf[17];
        std::snprintf(buf, sizeof buf, "%016llx",
                      static_cast<unsigned long long>(m->model.content_hash));
        return std::string(buf);
      }();
      const std::string tpath = nasrt::tuning_path(path);
      if (o.tune) {
        const auto t = nasrt::tune_convs(m->model.net);
        eo.conv_backends = nasrt::choices(t);
        try {
          nasrt::save_tuning(tpath, hash, t);
        } catch (const std::exception& e) {
          m->notice = std::string(e.what()) + ": the tuning is used now but not kept";
        }
      } else {
        eo.conv_backends = nasrt::load_tuning(tpath, hash, &m->notice);
      }
    }
    m->exec = std::make_unique<nasrt::Executor>(m->model.net, eo);
    for (const auto& k : m->exec->kernels()) m->kernel_backends.push_back(nasrt::backend_name(k.backend));
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
  if (c) *c = m->model.net.in_c;
  if (h) *h = m->model.net.in_h;
  if (w) *w = m->model.net.in_w;
  return 0;
}

int nasrt_model_classes(const nasrt_model* m) { return m ? m->exec->classes() : -1; }
int nasrt_model_paths(const nasrt_model* m) { return m ? m->exec->paths() : -1; }
int nasrt_model_threads(const nasrt_model* m) { return m ? m->exec->threads() : -1; }
int nasrt_model_pinned_core(const nasrt_model* m, int slot) {
  if (!m || slot < 0 || slot >= m->exec->threads()) return -2;
  return m->exec->pinned_cores()[slot];
}

int nasrt_model_run(nasrt_model* m, const float* input, int batch, float* logits, char** error) {
  if (error) *error = nullptr;
  if (!m || (batch > 0 && (!input || !logits)) || batch < 0) {
    set_error(error, "run: needs a model, batch >= 0 and input/logits buffers");
    return -1;
  }
  try {
    m->exec->run(input, batch, logits);
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
  auto it = m->model.metadata.find(key);
  return it == m->model.metadata.end() ? nullptr : it->second.c_str();
}

int nasrt_model_kernels(const nasrt_model* m) {
  return m ? static_cast<int>(m->exec->kernels().size()) : 0;
}
const char* nasrt_model_kernel_name(const nasrt_model* m, int i) {
  if (!m || i < 0 || i >= nasrt_model_kernels(m)) return nullptr;
  return m->exec->kernels()[i].name.c_str();
}
const char* nasrt_model_kernel_backend(const nasrt_model* m, int i) {
  if (!m || i < 0 || i >= nasrt_model_kernels(m)) return nullptr;
  return m->kernel_backends[i].c_str();
}
const char* nasrt_model_notice(const nasrt_model* m) { return m ? m->notice.c_str() : ""; }

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
