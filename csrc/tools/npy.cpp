// Minimal .npy reader: version 1-3 header, '<f4' (or '<f8', converted), C order.
#include "tools/npy.h"

#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace nasrt_tools {

std::vector<float> read_floats(const std::string& path, std::vector<long>* shape) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": cannot open input file");
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string d = ss.str();
  if (shape) shape->clear();
  const bool npy = path.size() > 4 && path.substr(path.size() - 4) == ".npy";
  if (!npy) {
    if (d.size() % 4) throw std::runtime_error(path + ": raw input size is not a multiple of 4 bytes");
    std::vector<float> v(d.size() / 4);
    std::memcpy(v.data(), d.data(), d.size());
    return v;
  }
  if (d.size() < 10 || d.compare(0, 6, "\x93NUMPY") != 0)
    throw std::runtime_error(path + ": not a .npy file");
  const int major = static_cast<unsigned char>(d[6]);
  size_t hlen, hstart;
  if (major == 1) {
    hlen = static_cast<unsigned char>(d[8]) | static_cast<unsigned char>(d[9]) << 8;
    hstart = 10;
  } else {
    if (d.size() < 12) throw std::runtime_error(path + ": truncated .npy header");
    hlen = 0;
    for (int i = 3; i >= 0; --i) hlen = hlen << 8 | static_cast<unsigned char>(d[8 + i]);
    hstart = 12;
  }
  if (hstart + hlen > d.size()) throw std::runtime_error(path + ": truncated .npy header");
  const std::string h = d.substr(hstart, hlen);
  const bool f4 = h.find("'<f4'") != std::string::npos, f8 = h.find("'<f8'") != std::string::npos;
  if (!f4 && !f8) throw std::runtime_error(path + ": .npy dtype must be float32 (or float64)");
  if (h.find("'fortran_order': True") != std::string::npos)
    throw std::runtime_error(path + ": .npy must be C order");
  const size_t a = h.find('('), b = h.find(')');
  if (a == std::string::npos || b == std::string::npos) throw std::runtime_error(path + ": .npy shape missing");
  size_t count = 1;
  std::stringstream dims(h.substr(a + 1, b - a - 1));
  std::string tok;
  while (std::getline(dims, tok, ',')) {
    if (tok.find_first_not_of(" ") == std::string::npos) continue;
    const long n = std::stol(tok);
    if (n < 0) throw std::runtime_error(path + ": bad .npy shape");
    if (shape) shape->push_back(n);
    count *= static_cast<size_t>(n);
  }
  const size_t es = f4 ? 4 : 8, off = hstart + hlen;
  if (d.size() - off != count * es) throw std::runtime_error(path + ": .npy data size does not match its shape");
  std::vector<float> v(count);
  if (f4) {
    std::memcpy(v.data(), d.data() + off, count * 4);
  } else {
    for (size_t i = 0; i < count; ++i) {
      double x;
      std::memcpy(&x, d.data() + off + i * 8, 8);
      v[i] = static_cast<float>(x);
    }
  }
  return v;
}

void write_floats(const std::string& path, const std::vector<float>& v) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * 4));
  if (!f) throw std::runtime_error(path + ": cannot write");
}

}  // namespace nasrt_tools
