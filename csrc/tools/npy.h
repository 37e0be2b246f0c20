// Input files for the native tools: .npy (float32, float64 or uint8, C order) or raw float32 .bin.
#pragma once
#include <string>
#include <vector>

namespace nasrt_tools {

struct Array {
  std::vector<float> data;  // uint8 arrays hold their pixel values 0..255
  std::vector<long> shape;  // empty for raw .bin
  bool npy = false;
  bool uint8 = false;
};

// Reads `path`; throws std::runtime_error naming the file.
Array read_array(const std::string& path);
// Float input only (a uint8 .npy is an error). `shape` gets the .npy shape (empty for .bin).
std::vector<float> read_floats(const std::string& path, std::vector<long>* shape);
void write_floats(const std::string& path, const std::vector<float>& v);
// The image formats nasrt-run refuses (it does not decode): by magic bytes or name.
bool looks_like_image(const std::string& path);

}  // namespace nasrt_tools
