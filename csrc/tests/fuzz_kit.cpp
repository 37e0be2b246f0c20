// libFuzzer target: any bytes given to the profile kit's manifest reader must give a kit
// or a one-line ModelError naming the manifest, never a crash, a sanitizer report or a
// hang. No model files: a manifest valid up to them ends at the first model it names.
#include <cstddef>
#include <cstdint>
#include <string>

#include "runtime/profile.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    nasrt::parse_kit(text, {}, "fuzz/kit.json");
  } catch (const nasrt::ModelError& e) {
    const std::string what = e.what();
    if (what.rfind("fuzz/kit.json: ", 0) != 0 || what.find('\n') != std::string::npos) __builtin_trap();
  }
  return 0;
}
