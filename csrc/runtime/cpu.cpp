// Linux implementation of cpu.h (sched_setaffinity, futex).
#include "runtime/cpu.h"

#include <chrono>
#include <climits>

#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace nasrt {

std::vector<int> available_cores() {
  std::vector<int> cores;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) cores.push_back(c);
  }
  if (cores.empty()) cores.push_back(0);
  return cores;
}

bool pin_current_thread(int core) {
  if (core < 0 || core >= CPU_SETSIZE) return false;
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(core, &set);
  return pthread_setaffinity_np(pthread_self(), sizeof(set), &set) == 0;
}

void futex_wait(std::atomic<uint32_t>* word, uint32_t expected) {
  static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t), "futex word");
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT_PRIVATE, expected, nullptr,
          nullptr, 0);
}

void futex_wake_all(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr,
          nullptr, 0);
}

void wait_for_change(std::atomic<uint32_t>& word, uint32_t seen, std::atomic<int>& sleepers,
                     int64_t spin_ns) {
  using clock = std::chrono::steady_clock;
  const auto deadline = clock::now() + std::chrono::nanoseconds(spin_ns);
  for (int i = 0;; ++i) {
    if (word.load(std::memory_order_acquire) != seen) return;
    cpu_relax();
    // Reading the clock costs ~20 ns: check it every 64 spins only.
    if ((i & 63) == 63 && clock::now() >= deadline) break;
  }
  // seq_cst on both sides (sleepers++ then load word / store word then load
  // sleepers) so a waker never misses a sleeper.
  sleepers.fetch_add(1, std::memory_order_seq_cst);
  while (word.load(std::memory_order_seq_cst) == seen) futex_wait(&word, seen);
  sleepers.fetch_sub(1, std::memory_order_seq_cst);
}

void Barrier::wait() {
  if (n_ <= 1) return;
  const uint32_t gen = generation_.load(std::memory_order_acquire);
  if (arrived_.fetch_add(1, std::memory_order_acq_rel) == n_ - 1) {
    arrived_.store(0, std::memory_order_relaxed);
    generation_.store(gen + 1, std::memory_order_seq_cst);
    wake_waiters(generation_, sleepers_);
    return;
  }
  wait_for_change(generation_, gen, sleepers_, spin_ns_);
}

}  // namespace nasrt
