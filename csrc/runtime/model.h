// The native model loader: model.nasrt (safetensors + the lowered graph in its
// metadata) -> a validated NetSpec, without Python. Format: docs/FORMATS.md.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "runtime/executor.h"

namespace nasrt {

// A model file or graph that cannot be used; what() names the file and the field.
class ModelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Model file format versions this reader knows: 2 (float) and 3 (int8: NetSpec::quantized);
// version 1 files (no graph) are refused with a hint to re-export.
constexpr const char* kModelFormat = "nasrt.model";
constexpr int kModelVersion = 2;
constexpr int kModelVersionInt8 = 3;

// Sizes no real model reaches: a file past them is refused before allocating.
struct Limits {
  static constexpr uint64_t header_bytes = 64ull << 20;
  static constexpr int json_depth = 64;
  static constexpr int side = 8192;           // input height/width
  static constexpr int channels = 65536;      // any conv's in/out channels, FC widths
  static constexpr int kernel = 63;
  static constexpr int paths = 64;
  static constexpr int layers = 4096;
  static constexpr int convs_per_block = 16;
  static constexpr uint64_t weight_floats = 1ull << 28;      // 1 GiB of float32
  static constexpr uint64_t activation_floats = 1ull << 28;  // 1 GiB of float32
};

struct LoadedModel {
  NetSpec net;
  std::map<std::string, std::string> metadata;  // safetensors __metadata__
  uint64_t content_hash = 0;                    // FNV-1a 64 of the whole file
};

// content_hash as 16 hex digits: the model's identity in its tuning file.
std::string content_hash_hex(const LoadedModel& model);

// Reads and validates a model file (format 2, or 3 into a quantised NetSpec: every
// check of nasrt.quant.validate). Throws ModelError ("PATH: field: message").
LoadedModel load_model(const std::string& path);
// The same from bytes in memory; `source` names them in errors (fuzzing, tests).
LoadedModel parse_model(const uint8_t* data, size_t size, const std::string& source);

// Builds a NetSpec from the lowered graph (JSON text) and a tensor lookup
// (name, expected shape -> the float32 data, possibly unaligned; throws
// ModelError when missing or of another dtype or shape). Used by the loader
// and by Python for in-memory plans.
using TensorLookup =
    std::function<const void*(const std::string& name, const std::vector<int64_t>& shape)>;
NetSpec netspec_from_graph(const std::string& graph_json, const TensorLookup& tensors,
                           const std::string& source);

// True when the JSON text nests arrays and objects at most max_depth deep
// (brackets inside strings, escapes included, do not count). One linear scan,
// so a plain parse after it needs no depth callback: nlohmann's callback parser
// rescans the parent array after every element (quadratic on a 1 MiB header).
bool json_depth_within(const char* begin, const char* end, int max_depth);
// Bytes of a hostile file quoted in a message: printable ASCII kept, the rest as \xNN
// (a message must stay one line of valid UTF-8 for Python and terminals).
std::string printable(const std::string& s);

uint64_t fnv1a64(const uint8_t* data, size_t size, uint64_t seed = 1469598103934665603ull);

}  // namespace nasrt
