// One model ready to run: the model read (a file or bytes), the tuning policy
// applied, the executor built. The C API and the Python Runtime both open
// models through it, so the policy has one owner.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "runtime/executor.h"
#include "runtime/model.h"
#include "runtime/tune.h"

namespace nasrt {

// The per-conv kernel choice of a model run with Backend::Auto.
struct Tuning {
  std::map<std::string, Backend> conv_backends;  // empty: the built-in rule for every conv
  std::vector<ConvTiming> timings;               // when tuned now
  NetCheck net;  // when tuned now and a choice differs from the built-in rule (else no threads)
  std::string notice;  // one line: why the tuning file was ignored, or why a tuning was not kept
};
// tune: every conv timed now on every backend, the result written to
// tuning_file (a failure to write is a notice: the tuning is used, not kept);
// else tuning_file read when it was made for this model and CPU (else a
// notice, silence when it does not exist). tuning_file "": none (in-memory
// models; tuned now, nothing kept).
Tuning tuning_for(const LoadedModel& model, const std::string& tuning_file, bool tune);

// The whole net with the tuned choices against the built-in rule, on 1 thread and on
// `threads`: per-conv timings in isolation miss what a choice costs between convs
// (layouts, caches, mixed precision), so the tuning is kept only when it is not slower
// on either. us: min over rounds of the round median, [tuned, built-in] per thread count.
NetCheck check_whole_net(const NetSpec& net, const std::map<std::string, Backend>& tuned,
                         int threads, int runs = 200, int rounds = 5);
// The same measurement for two nets of one input shape (each with its backend choices; empty:
// the built-in rule), e.g. two precision choices of one model (`nasrt quantize --fp32-layers
// auto`): us[i] = [a, b] on threads[i]; keep_tuned: a is not slower than b on any of them.
// Throws std::invalid_argument when the inputs differ.
NetCheck compare_nets(const NetSpec& a, const std::map<std::string, Backend>& a_backends,
                      const NetSpec& b, const std::map<std::string, Backend>& b_backends,
                      int threads, int runs = 200, int rounds = 5);

// requested threads, 0 = min(paths, available cores); throws ModelError
// ("NAME: threads: must be in 1..P (the model has P paths), got N").
int session_threads(const LoadedModel& model, const std::string& name, int requested);

struct SessionOptions {
  int threads = 0;  // see session_threads
  std::vector<int> cores;
  Backend backend = Backend::Auto;  // Auto: per conv, the tuning's choice or the built-in rule
  bool balance = true;
  bool adapt = true;
  bool tune = false;
};

class Session {
 public:
  // A model read by load_model (its tuning file: tuning_path(path)) or by parse_model
  // from bytes (tuning_file ""), named `name` in errors. The caller reads it first: the
  // C API checks its options against it, the Python Runtime its plan.
  Session(std::shared_ptr<const LoadedModel> model, const std::string& name,
          const std::string& tuning_file, const SessionOptions& opt);

  const LoadedModel& model() const { return *model_; }
  const std::string& name() const { return name_; }
  const Tuning& tuning() const { return tuning_; }
  Executor& executor() { return *exec_; }
  const Executor& executor() const { return *exec_; }

 private:
  std::shared_ptr<const LoadedModel> model_;
  std::string name_;
  Tuning tuning_;
  std::unique_ptr<Executor> exec_;
};

}  // namespace nasrt
