// Thread affinity, CPU relax and futex waiting: the only place that touches the OS scheduler.
#pragma once
#include <atomic>
#include <cstdint>
#include <vector>

namespace nasrt {

// Cores this process may run on (sched_getaffinity), ascending.
std::vector<int> available_cores();

// Pins the calling thread to one core. Returns false (and leaves it unpinned) on failure.
bool pin_current_thread(int core);

// Tells the CPU we are spinning (x86 pause / arm yield).
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
  asm volatile("yield");
#endif
}

// Sleeps while *word == expected (spurious returns allowed; callers loop).
void futex_wait(std::atomic<uint32_t>* word, uint32_t expected);
// Wakes every thread sleeping on word.
void futex_wake_all(std::atomic<uint32_t>* word);

// Waits until word != seen: spins for up to spin_ns, then sleeps on a futex.
// `sleepers` counts threads asleep on `word` so wakers skip the syscall when none are.
void wait_for_change(std::atomic<uint32_t>& word, uint32_t seen, std::atomic<int>& sleepers,
                     int64_t spin_ns);
// Publishes a change of word (already stored) to sleeping waiters.
inline void wake_waiters(std::atomic<uint32_t>& word, std::atomic<int>& sleepers) {
  if (sleepers.load(std::memory_order_seq_cst) > 0) futex_wake_all(&word);
}

// Sense-reversing barrier for n threads: bounded spin (cheap when the threads
// arrive close together, 0.05-0.6 us here), then futex sleep so a long wait
// does not burn a core (pthread_barrier_wait costs 22-31 us here).
class Barrier {
 public:
  Barrier(int n, int64_t spin_ns) : n_(n), spin_ns_(spin_ns) {}
  void wait();

 private:
  const int n_;
  const int64_t spin_ns_;
  alignas(64) std::atomic<int> arrived_{0};
  alignas(64) std::atomic<uint32_t> generation_{0};
  std::atomic<int> sleepers_{0};
};

}  // namespace nasrt
