// Model + tuning policy + executor (session.h).
#include "runtime/session.h"

#include <algorithm>
#include <exception>
#include <stdexcept>
#include <utility>

#include "runtime/cpu.h"

namespace nasrt {

NetCheck compare_nets(const NetSpec& a, const std::map<std::string, Backend>& a_backends,
                      const NetSpec& b, const std::map<std::string, Backend>& b_backends,
                      int threads, int runs, int rounds) {
  if (a.in_c != b.in_c || a.in_h != b.in_h || a.in_w != b.in_w)
    throw std::invalid_argument("compare_nets: the two nets take different inputs");
  NetCheck out;
  out.threads = {1};
  if (threads > 1) out.threads.push_back(threads);
  const std::vector<float> x(static_cast<size_t>(a.in_c) * a.in_h * a.in_w, 0.5f);
  std::vector<float> y;
  std::vector<double> t;
  const std::array<const NetSpec*, 2> nets{&a, &b};
  const std::array<const std::map<std::string, Backend>*, 2> backends{&a_backends, &b_backends};
  for (int n : out.threads) {
    std::array<std::unique_ptr<Executor>, 2> ex;
    for (int k = 0; k < 2; ++k) {
      ExecOptions o;
      o.threads = n;
      o.adapt = false;  // the configuration as given, on n threads
      o.conv_backends = *backends[k];
      ex[k] = std::make_unique<Executor>(*nets[k], o);
    }
    y.resize(std::max(ex[0]->classes(), ex[1]->classes()));
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

NetCheck check_whole_net(const NetSpec& net, const std::map<std::string, Backend>& tuned,
                         int threads, int runs, int rounds) {
  return compare_nets(net, tuned, net, {}, threads, runs, rounds);
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
