// libFuzzer target: any text given to the lowered-graph reader (the JSON inside a
// model's nasrt.graph, also what Python hands netspec_from_graph) must give a
// ModelError or a NetSpec, never a crash, a sanitizer report or a hang. Tensors
// are zeros of the shape asked for, up to 1 M floats (a larger one is refused).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::vector<float> zeros(1u << 20, 0.0f);
  const std::string text(reinterpret_cast<const char*>(data), size);
  const nasrt::TensorLookup lookup = [](const std::string& name, const std::vector<int64_t>& shape) {
    uint64_t n = 1;
    for (int64_t d : shape) {
      n *= static_cast<uint64_t>(d);
      if (n > zeros.size()) throw nasrt::ModelError("fuzz: tensor " + name + ": too large for the fuzzer");
    }
    return static_cast<const void*>(zeros.data());
  };
  try {
    nasrt::netspec_from_graph(text, lookup, "fuzz.nasrt");
  } catch (const nasrt::ModelError&) {
  }
  return 0;
}
