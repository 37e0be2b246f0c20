// Minimal .npy reader: version 1-3 header, '<f4', '<f8' (converted) or '|u1', C order.
#include "tools/npy.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace nasrt_tools {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

}  // namespace

bool looks_like_image(const std::string& path) {
  const std::string p = lower(path);
  for (const char* ext : {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".pgm", ".ppm"})
    if (ends_with(p, ext)) return true;
  std::ifstream f(path, std::ios::binary);
  char m[12] = {};
  f.read(m, sizeof m);
  const std::string h(m, static_cast<size_t>(f.gcount()));
  return h.rfind("\x89PNG", 0) == 0 || h.rfind("\xFF\xD8\xFF", 0) == 0 || h.rfind("GIF8", 0) == 0 ||
         h.rfind("BM", 0) == 0 || (h.rfind("RIFF", 0) == 0 && h.size() >= 12 && h.compare(8, 4, "WEBP") == 0);
}

Array read_array(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) throw std::runtime_error(path + ": no such input file");
  if (!S_ISREG(st.st_mode)) throw std::runtime_error(path + ": not a regular file");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": cannot open input file");
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string d = ss.str();
  Array out;
  out.npy = ends_with(lower(path), ".npy");
  if (!out.npy) {
    if (d.size() % 4) throw std::runtime_error(path + ": raw input size is not a multiple of 4 bytes");
    out.data.resize(d.size() / 4);
    std::memcpy(out.data.data(), d.data(), d.size());
    return out;
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
  const bool u1 = h.find("'|u1'") != std::string::npos || h.find("'<u1'") != std::string::npos;
  if (!f4 && !f8 && !u1)
    throw std::runtime_error(path + ": .npy dtype must be float32 (normalised) or uint8 (pixels)");
  if (h.find("'fortran_order': True") != std::string::npos)
    throw std::runtime_error(path + ": .npy must be C order");
  const size_t a = h.find('('), b = h.find(')');
  if (a == std::string::npos || b == std::string::npos) throw std::runtime_error(path + ": .npy shape missing");
  size_t count = 1;
  std::stringstream dims(h.substr(a + 1, b - a - 1));
  std::string tok;
  while (std::getline(dims, tok, ',')) {
    if (tok.find_first_not_of(" ") == std::string::npos) continue;
    long n;
    try {
      n = std::stol(tok);
    } catch (const std::exception&) {
      throw std::runtime_error(path + ": bad .npy shape");
    }
    if (n < 0 || (n > 0 && count > d.size() / static_cast<size_t>(n)))  // more values than bytes
      throw std::runtime_error(path + ": bad .npy shape");
    out.shape.push_back(n);
    count *= static_cast<size_t>(n);
  }
  const size_t es = f4 ? 4 : f8 ? 8 : 1, off = hstart + hlen;
  if (d.size() - off != count * es) throw std::runtime_error(path + ": .npy data size does not match its shape");
  out.uint8 = u1;
  out.data.resize(count);
  if (f4) {
    std::memcpy(out.data.data(), d.data() + off, count * 4);
  } else if (f8) {
    for (size_t i = 0; i < count; ++i) {
      double x;
      std::memcpy(&x, d.data() + off + i * 8, 8);
      out.data[i] = static_cast<float>(x);
    }
  } else {
    for (size_t i = 0; i < count; ++i) out.data[i] = static_cast<unsigned char>(d[off + i]);
  }
  return out;
}

std::vector<float> read_floats(const std::string& path, std::vector<long>* shape) {
  Array a = read_array(path);
  if (a.uint8) throw std::runtime_error(path + ": .npy dtype uint8: expected float32 here");
  if (shape) *shape = a.shape;
  return std::move(a.data);
}

void write_floats(const std::string& path, const std::vector<float>& v) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(v.data()), static_cast<std::streamsize>(v.size() * 4));
  if (!f) throw std::runtime_error(path + ": cannot write");
}

}  // namespace nasrt_tools
