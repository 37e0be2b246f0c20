// The CPU: its identity (model, ISA, the signature a tuning is valid for), the cores
// this process may use, thread affinity, CPU relax, futex waiting and the FP mode: the
// only place that asks the OS or the CPU about either, or touches the scheduler or CPU
// control registers.
#pragma once
#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

namespace nasrt {

// The host: CPU model and the ISA the kernels can use ("avx512", "avx2", "sse", "neon", ...).
std::string cpu_model();
std::string host_isa();
// What a tuning result is valid for: CPU model + ISA + compiled backends.
std::string cpu_signature();

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

// Flush-to-zero and denormals-are-zero on the calling thread (x86 MXCSR,
// aarch64 FPCR.FZ); read/write_fp_mode save and restore the whole mode word.
void set_flush_denormals();
uint64_t read_fp_mode();
void write_fp_mode(uint64_t mode);

}  // namespace nasrt
