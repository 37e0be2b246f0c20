// Model + tuning policy + executor (session.h).
#include "runtime/session.h"

#include <algorithm>
#include <exception>
#include <utility>

#include "runtime/cpu.h"

namespace nasrt {

NetCheck check_whole_net(const NetSpec& net, const std::map<std::string, Backend>& tuned,
                         int threads, int runs, int rounds) {
  NetCheck out;
  out.threads = {1};
  if (threads > 1) out.threads.push_back(threads);
  const std::vector<float> x(static_cast<size_t>(net.in_c) * net.in_h * net.in_w, 0.5f);
  std::vector<float> y;
  std::vector<double> t;
  for (int n : out.threads) {
    std::array<std::unique_ptr<Executor>, 2> ex;
    for (int k = 0; k < 2; ++k) {
      ExecOptions o;
      o.threads = n;
      o.adapt = false;  // the configuration as given, on n threads
      if (k == 0) o.conv_backends = tuned;
      ex[k] = std::make_unique<Executor>(net, o);
    }
    y.resize(ex[0]->classes());
    std::array<double, 2> best{1e300, 1e300};
    for (int r = 0; r < rounds; ++r)
      for (int k = 0; k < 2; ++k)
        best[k] = std::min(best[k],
                           round_median([&] { ex[k]->run(x.data(), 1, y.data()); }, runs, t));
    out.us.push_back(best);
    if (best[0] > best[1]) out.keep_tuned = false;
  }
  return out;
}

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
