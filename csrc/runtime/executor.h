// The path-parallel executor: realises the net's schedule (runtime/schedule.h)
// as phases of per-share op lists at load, then runs them on pinned persistent
// threads. Every op is
// claimed before it runs, so a thread whose core is busy never stalls a run:
// the caller or another thread takes over its share (docs/DESIGN.md).
#pragma once
#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/registry.h"
#include "runtime/cpu.h"
#include "runtime/ir.h"
#include "runtime/schedule.h"

namespace nasrt {

// Inputs beyond +-kMaxInput are rejected by run(): normalised images are within
// +-10, and values near FLT_MAX overflow inside the net, where the fast
// backends' ReLU clamps would turn the NaN into plausible logits.
constexpr float kMaxInput = 1e6f;

struct ExecOptions {
  int threads = 1;          // 1 .. number of paths
  std::vector<int> cores;   // cores[t] pins thread slot t >= 1; slot 0 is the caller, unpinned
  // Auto: per conv, the tuned choice in conv_backends (by ConvSpec::name) if
  // present, else builtin_backend's rule. Anything else forces that backend.
  Backend backend = Backend::Auto;
  std::map<std::string, Backend> conv_backends;
  int64_t wait_spin_ns = 500000;  // inside a run: spin/yield this long for another thread's op, then sleep
  int64_t idle_spin_ns = 200000;     // workers spin this long for the next run, then sleep
  bool balance = true;               // split convs of the slowest path across all threads
  // Measure P threads against the caller alone and run alone while P threads
  // lose (see Executor::run_sample); off: always P threads (latency probes,
  // benchmarks of a fixed configuration).
  bool adapt = true;
};

// Which backend runs each conv (by name), as resolved at load.
struct KernelChoice {
  std::string name;
  Backend backend;
  // The backend passed the load-time self-check and its row pieces are bitwise
  // the rows of the whole conv: balancing may split it (else it runs whole).
  bool split_exact = true;
  Precision precision = Precision::Fp32;  // what the conv computes in (a quantised net's int8 convs)
};

// Before the process's static destructors run (oneDNN's free its JIT code): refuse new
// Executor::run calls (a caller then waits forever, so a thread left running at exit parks
// instead of touching freed code) and wait up to `seconds` for those in flight. Python calls
// it at interpreter exit: a daemon thread inside run() used to crash the exit (SIGSEGV).
void drain_runs(double seconds);

class Executor {
 public:
  // Validates the spec (throws std::invalid_argument naming the part) and plans
  // all memory; starts threads-1 pinned workers.
  Executor(const NetSpec& net, const ExecOptions& opt);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // x: n samples, NCHW contiguous; y: n x classes. Thread-safe (calls are serialised).
  void run(const float* x, int n, float* y);

  int threads() const { return threads_; }
  int paths() const { return paths_; }
  int classes() const { return classes_; }
  // Floats of one input sample (C*H*W).
  int64_t input_size() const { return static_cast<int64_t>(in_c_) * in_h_ * in_w_; }
  // The requested backend (Auto when chosen per conv); kernels() has the result.
  Backend backend() const { return backend_; }
  const std::vector<KernelChoice>& kernels() const { return kernels_; }
  // Core each thread slot is pinned to (-1: the caller, or pinning failed).
  const std::vector<int>& pinned_cores() const { return pinned_; }
  // Ops run since load by a thread other than their share's own (that thread
  // was late, e.g. its core was busy). Diagnostics and tests.
  int64_t taken_over() const { return taken_over_.load(std::memory_order_relaxed); }
  // Samples the caller ran alone, because P threads measured slower (see
  // run_sample) or to measure that.
  int64_t solo_runs() const { return solo_runs_.load(std::memory_order_relaxed); }
  int phases() const { return static_cast<int>(phases_.size()); }
  // The schedule this executor realises: compile_schedule's, where a conv
  // whose kernel's row pieces are not bitwise its rows runs whole.
  const Schedule& schedule() const { return schedule_; }

 private:
  using OpList = std::vector<std::unique_ptr<Op>>;
  // Claim state of one share, monotonic over runs: run r owns the op indices
  // [r*n, (r+1)*n) of a share of n ops. `next` is the next index to claim and
  // `done` counts finished ops; op i may be claimed once done == i (ops of a
  // share are a chain). A thread still working on an old run can therefore
  // never claim an op of a newer one. One cache line each.
  struct alignas(64) ShareState {
    std::atomic<uint64_t> next{0};
    std::atomic<uint64_t> done{0};
  };
  struct Phase {  // one op list per share (path): schedule_'s phase realised
    explicit Phase(int shares) : ops(shares), state(shares) {}
    std::vector<OpList> ops;
    std::vector<ShareState> state;
  };

  struct FreeDeleter {
    void operator()(float* p) const;
  };
  float* alloc(size_t n);
  template <typename T>  // n elements of T in an alloc() buffer
  T* alloc_as(size_t n) {
    return reinterpret_cast<T*>(alloc((n * sizeof(T) + sizeof(float) - 1) / sizeof(float)));
  }
  // One activation tensor, NHWC: in its producer's precision (`native`) and, where a
  // consumer of the other precision reads it, a converted copy that the producer's op
  // writes for the same rows right after computing them. Pixel strides in elements.
  struct Act {
    int c = 0, h = 0, w = 0;
    Precision native = Precision::Fp32;
    float* f = nullptr;
    int f_stride = 0;
    uint8_t* q = nullptr;
    int q_stride = 0;
    ActQuant aq;
    int concat = -1;  // a producer into a concat: the concat's Act (its float copy, if any,
    int slice = 0;    // is written with the slice), and the slice's first channel
  };
  std::vector<Act> acts_;  // [0]: the net input
  // The float / u8 form of act a, allocated (same pixel stride) on first request.
  float* f_of(int a);
  uint8_t* q_of(int a);
  template <typename T>
  T* form_of(Act& t, T*& p, int& stride, int other_stride);
  // op, then the conversions of act a's pixels [p0, p1) into its other forms (elements
  // [p0, p1) of a dense act with `elements`).
  std::unique_ptr<Op> with_conversions(std::unique_ptr<Op> op, int a, size_t p0, size_t p1,
                                       bool elements);
  // Output rows [r0, r1) of conv c over act `in` (h, w) into act `out`, with its conversions.
  std::unique_ptr<Op> conv_rows(const ConvSpec& c, int h, int w, int in, int out, int r0, int r1);
  bool int8(const ConvSpec& c) const { return quantized_ && c.precision == Precision::Int8; }
  // Where a scheduled part reads and writes (the memory plan of compile).
  struct Placed {
    const ConvSpec* conv = nullptr;  // null: a sum merge or a residual add
    bool add = false;                // a residual add: ins = {chain output, shortcut}
    int h = 0, w = 0;                // the conv's input
    int in = -1;                     // act read
    std::vector<int> ins;            // a sum merge's inputs, path order
    int out = -1;                    // act written
    ActQuant sum_q;                  // a quantised sum's output
  };
  // Plans every buffer, compiles the schedule and makes its ops, then the head's.
  void compile(const NetSpec& net, bool balance);
  // Runs the phases of run r from thread `slot`: its own shares first, then
  // any op of another share that is free to claim, until each phase is done.
  void run_phases(int slot, uint64_t r);
  void run_sample();
  // Claims and runs the ready ops of one share; returns how many it ran.
  int64_t drain(Phase& ph, int share, uint64_t r);
  bool phase_done(const Phase& ph, uint64_t r,
                  std::memory_order order = std::memory_order_acquire) const;
  void finish_phase(Phase& ph, int slot, uint64_t r);
  void worker(int slot, uint32_t start_job);
  void stop_workers();
  // fork(): pthread_atfork handlers keep every executor's run lock consistent.
  friend struct ForkGuard;

  int paths_ = 0, threads_ = 1, classes_ = 0;
  int in_c_ = 0, in_h_ = 0, in_w_ = 0;
  Backend backend_;
  std::map<std::string, Backend> conv_backends_;
  std::vector<KernelChoice> kernels_;  // in the order their first ops are made
  std::map<std::string, KernelChoice> resolved_;  // by conv name
  // The backend of conv c over an (h, w) input, checked against the reference
  // kernels for the whole conv and its row pieces (falls back when it fails).
  // xq: the input's quantisation (an int8 conv's zx, sx).
  KernelChoice resolve(const ConvSpec& c, int h, int w, int in_stride, int out_stride,
                       const ActQuant& xq);
  std::vector<std::unique_ptr<float, FreeDeleter>> buffers_;
  float* input_ = nullptr;   // NHWC copy of one sample
  bool quantized_ = false;
  std::unique_ptr<Op> input_quant_;  // quantises input_ for the int8 convs that read it
  float* logits_ = nullptr;
  Schedule schedule_;
  std::vector<Phase> phases_;
  OpList head_;
  std::vector<int> pinned_;

  std::mutex run_mutex_;
  // Under run_mutex_: parallel runs so far (the run index r), and the state of
  // the adaptation to late threads (run_sample).
  uint64_t runs_ = 0;
  std::atomic<int64_t> solo_runs_{0};  // also read by other threads (diagnostics)
  static constexpr int kWindow = 256, kHalf = kWindow / 2;
  struct Adapt {
    bool solo = false;    // the mode of the current window
    int n = 0, late = 0;  // runs in the window; of them, runs with ops taken over
    std::array<float, kHalf> ns{};  // latencies of the window's second half
    double par = 0, alone = 0;      // the modes' last window medians (0: none yet)
    unsigned explore = 0;
    bool rechecked = false;  // P threads lost twice in a row
  } adapt_;
  int64_t spin_ns_;
  bool adapt_on_ = true;
  alignas(64) std::atomic<uint32_t> job_{0};
  std::atomic<uint64_t> job_run_{0};  // r of the job that job_ announces
  std::atomic<int> job_sleepers_{0};
  std::atomic<bool> stop_{false};
  // Bumped after an op finishes while a thread sleeps waiting for one.
  alignas(64) std::atomic<uint32_t> progress_{0};
  std::atomic<int> progress_sleepers_{0};
  std::atomic<int64_t> taken_over_{0};
  int64_t idle_spin_ns_;
  std::vector<std::thread> workers_;
  std::atomic<int> workers_ready_{0};
  int owner_pid_ = 0;   // the process that started the workers
  bool forked_ = false;  // set in a fork()ed child: its workers do not exist
};

}  // namespace nasrt
