// Linux implementation of cpu.h (/proc/cpuinfo, cpuid, sched_setaffinity, futex, FP control
// registers).
#include "runtime/cpu.h"

#include <chrono>
#include <climits>
#include <fstream>

#include <linux/futex.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kernels/registry.h"

namespace nasrt {

std::string cpu_model() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  std::string part;
  while (std::getline(f, line)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon), val = line.substr(colon + 1);
    key.erase(key.find_last_not_of(" \t") + 1);
    val.erase(0, val.find_first_not_of(" \t"));
    if (key == "model name") return val;
    if (key == "CPU part" && part.empty()) part = "arm part " + val;
  }
  return part.empty() ? "unknown" : part;
}

std::string host_isa() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return "avx512";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx2";
  if (__builtin_cpu_supports("avx")) return "avx";
  return "sse";
#elif defined(__aarch64__)
  return "neon";
#else
  return "generic";
#endif
}

std::string cpu_signature() {
  std::string s = cpu_model() + " | " + host_isa() + " |";
  for (Backend b : compiled_backends()) s += " " + backend_name(b);
  return s;
}

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

#if defined(__x86_64__) || defined(__i386__)
uint64_t read_fp_mode() { return _mm_getcsr(); }
void write_fp_mode(uint64_t mode) { _mm_setcsr(static_cast<unsigned>(mode)); }
void set_flush_denormals() { _mm_setcsr(_mm_getcsr() | 0x8040u); }  // FTZ (bit 15) | DAZ (bit 6)
#elif defined(__aarch64__)
uint64_t read_fp_mode() {
  uint64_t fpcr;
  asm volatile("mrs %0, fpcr" : "=r"(fpcr));
  return fpcr;
}
void write_fp_mode(uint64_t mode) { asm volatile("msr fpcr, %0" : : "r"(mode)); }
void set_flush_denormals() { write_fp_mode(read_fp_mode() | (uint64_t{1} << 24)); }  // FPCR.FZ
#else
uint64_t read_fp_mode() { return 0; }
void write_fp_mode(uint64_t) {}
void set_flush_denormals() {}
#endif

}  // namespace nasrt
