// Model + tuning policy + executor (session.h).
#include "runtime/session.h"

#include <algorithm>
#include <exception>
#include <utility>

#include "runtime/cpu.h"

namespace nasrt {

Tuning tuning_for(const LoadedModel& model, const std::string& tuning_file, bool tune) {
  Tuning t;
  const std::string hash = content_hash_hex(model);
  if (tune) {
    t.timings = tune_convs(model.net);
    t.conv_backends = choices(t.timings);
    NetCheck& net = t.net;
    const bool differs = std::any_of(t.timings.begin(), t.timings.end(), [](const ConvTiming& c) {
      return c.best != builtin_backend(c.precision);
    });
    if (differs) {
      net = check_whole_net(model.net, t.conv_backends, session_threads(model, "tune", 0));
      if (!net.keep_tuned) {  // the file records the choice that runs: the built-in one
        for (ConvTiming& c : t.timings)
          if (c.us.count(builtin_backend(c.precision))) c.best = builtin_backend(c.precision);
        t.conv_backends = choices(t.timings);
      }
    }
    if (tuning_file.empty()) return t;
    try {
      save_tuning(tuning_file, hash, t.timings, differs ? &net : nullptr);
    } catch (const std::exception& e) {
      t.notice = std::string(e.what()) + ": the tuning is used now but not kept";
    }
  } else if (!tuning_file.empty()) {
    t.conv_backends = load_tuning(tuning_file, hash, &t.notice);
  }
  return t;
}

int session_threads(const LoadedModel& model, const std::string& name, int requested) {
  const int paths = static_cast<int>(model.net.paths.size());
  int threads = requested;
  if (threads == 0)
    threads = std::max(1, std::min(paths, static_cast<int>(available_cores().size())));
  if (threads < 1 || threads > paths)
    throw ModelError(name + ": threads: must be in 1.." + std::to_string(paths) + " (the model has " +
                     std::to_string(paths) + " paths), got " + std::to_string(requested));
  return threads;
}

Session::Session(std::shared_ptr<const LoadedModel> model, const std::string& name,
                 const std::string& tuning_file, const SessionOptions& opt)
    : model_(std::move(model)), name_(name) {
  ExecOptions eo;
  eo.threads = session_threads(*model_, name_, opt.threads);
  eo.cores = opt.cores;
  eo.backend = opt.backend;
  eo.balance = opt.balance;
  eo.adapt = opt.adapt;
  if (eo.backend == Backend::Auto) {
    tuning_ = tuning_for(*model_, tuning_file, opt.tune);
    eo.conv_backends = tuning_.conv_backends;
  }
  exec_ = std::make_unique<Executor>(model_->net, eo);
}

}  // namespace nasrt
