// libFuzzer target: any bytes given to the tuning-file reader must give a map of
// choices or a one-line notice, never a crash, a sanitizer report or a hang.
// "@CPU@" in the input stands for this host's signature and "@MODEL@" for the
// model hash, so a seed corpus reaches past the host and model checks.
#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/cpu.h"
#include "runtime/tune.h"

namespace {

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size()))
    s.replace(at, from.size(), to);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string cpu = nasrt::cpu_signature();
  std::string text(reinterpret_cast<const char*>(data), size);
  replace_all(text, "@CPU@", cpu);
  replace_all(text, "@MODEL@", "0123456789abcdef");
  std::string notice;
  const auto choices = nasrt::parse_tuning(text, "fuzz.tune.json", "0123456789abcdef", &notice);
  // Exactly one of: choices, a notice naming the file, or neither (an empty convs object).
  if (!choices.empty() && !notice.empty()) __builtin_trap();
  if (!notice.empty() && notice.rfind("fuzz.tune.json: ignored (", 0) != 0) __builtin_trap();
  return 0;
}
