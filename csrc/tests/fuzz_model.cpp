// libFuzzer target: any bytes given to the native model loader must give a
// ModelError or a model, never a crash, a sanitizer report or a hang.
#include <cstddef>
#include <cstdint>

#include "runtime/model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    nasrt::parse_model(data, size, "fuzz.nasrt");
  } catch (const nasrt::ModelError&) {
  }
  return 0;
}
