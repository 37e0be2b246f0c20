// Input files for the native tools: .npy (float32, C order) or raw float32 .bin.
#pragma once
#include <string>
#include <vector>

namespace nasrt_tools {

// Reads `path`; throws std::runtime_error naming the file. `shape` gets the
// .npy shape (empty for .bin).
std::vector<float> read_floats(const std::string& path, std::vector<long>* shape);
void write_floats(const std::string& path, const std::vector<float>& v);

}  // namespace nasrt_tools
