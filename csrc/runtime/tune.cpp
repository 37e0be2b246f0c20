// Tuning: time each conv on each backend, keep the fastest; the tuning file.
#include "runtime/tune.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>

#include <unistd.h>

#include <nlohmann/json.hpp>

namespace nasrt {
namespace {

using json = nlohmann::json;

std::vector<Backend> candidates() {
  std::vector<Backend> out;
  for (Backend b : compiled_backends())
    if (b != Backend::Reference) out.push_back(b);
  if (out.empty()) out.push_back(Backend::Reference);
  return out;
}

struct Probe {
  ConvTiming t;
  std::vector<float> in, out;
  std::map<Backend, std::unique_ptr<Op>> ops;
  std::map<Backend, std::vector<double>> rounds;
};

}  // namespace

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

std::vector<ConvTiming> tune_convs(const NetSpec& net, int runs, int rounds) {
  if (runs < 1 || rounds < 1) throw std::invalid_argument("tune: runs and rounds must be >= 1");
  std::vector<std::unique_ptr<Probe>> probes;
  auto add = [&](const ConvSpec& c, int h, int w) {
    auto p = std::make_unique<Probe>();
    p->t = ConvTiming{c.name, c.in_c, c.out_c, c.kernel, c.stride, c.groups, h, w, {}, Backend::Auto};
    ConvGeom g;
    g.in_h = h, g.in_w = w, g.kernel = c.kernel, g.stride = c.stride;
    g.set_same_pad();
    g.groups = c.groups, g.group_in = c.in_c / c.groups, g.group_out = c.out_c / c.groups;
    g.in_stride = c.in_c, g.out_stride = c.out_c, g.relu = c.relu;
    p->in.assign(static_cast<size_t>(c.in_c) * h * w + kBufferSlackFloats, 0.5f);
    p->out.assign(static_cast<size_t>(c.out_c) * g.out_h() * g.out_w() + kBufferSlackFloats, 0.0f);
    const std::vector<float> wt = oihw_to_ohwi(c.weight.data(), g.group_in, c.kernel, 0, c.out_c);
    for (Backend b : candidates())
      p->ops[b] = make_conv(b, g, wt.data(), c.bias.data(), p->in.data(), p->out.data());
    probes.push_back(std::move(p));
    return std::make_pair(g.out_h(), g.out_w());
  };
  int h = net.in_h, w = net.in_w;
  for (const ConvSpec& c : net.stem) std::tie(h, w) = add(c, h, w);
  const size_t L = net.paths.empty() ? 0 : net.paths[0].size();
  std::vector<std::pair<int, int>> at(net.paths.size(), {h, w});
  size_t s = 0;
  for (size_t l = 0; l < L; ++l) {
    for (size_t p = 0; p < net.paths.size(); ++p)
      for (const ConvSpec& c : net.paths[p][l]) at[p] = add(c, at[p].first, at[p].second);
    if (s < net.syncs.size() && net.syncs[s].after == static_cast<int>(l)) {
      if (net.syncs[s].concat_conv) add(net.syncs[s].conv, at[0].first, at[0].second);
      ++s;
    }
  }
  using clock = std::chrono::steady_clock;
  std::vector<double> t(runs);
  for (int r = 0; r < rounds; ++r) {  // interleaved: a slow spell hits every candidate alike
    for (auto& p : probes) {
      for (auto& [b, op] : p->ops) {
        op->run();  // warm
        for (int i = 0; i < runs; ++i) {
          const auto t0 = clock::now();
          op->run();
          t[i] = std::chrono::duration<double, std::micro>(clock::now() - t0).count();
        }
        std::nth_element(t.begin(), t.begin() + runs / 2, t.end());
        p->rounds[b].push_back(t[runs / 2]);
      }
    }
  }
  std::vector<ConvTiming> out;
  for (auto& p : probes) {
    double best = 1e300;
    for (auto& [b, v] : p->rounds) {
      p->t.us[b] = *std::min_element(v.begin(), v.end());
      if (p->t.us[b] < best) best = p->t.us[b], p->t.best = b;
    }
    out.push_back(p->t);
  }
  return out;
}

std::map<std::string, Backend> choices(const std::vector<ConvTiming>& t) {
  std::map<std::string, Backend> out;
  for (const ConvTiming& c : t) out[c.name] = c.best;
  return out;
}

std::string tuning_path(const std::string& model_path) { return model_path + ".tune.json"; }

void save_tuning(const std::string& path, const std::string& model_hash,
                 const std::vector<ConvTiming>& t) {
  json convs = json::object();
  for (const ConvTiming& c : t) {
    json us = json::object();
    for (const auto& [b, v] : c.us) us[backend_name(b)] = std::round(v * 1000) / 1000;
    convs[c.name] = {{"backend", backend_name(c.best)},
                     {"us", us},
                     {"shape", {c.in_c, c.out_c, c.kernel, c.stride, c.groups, c.h, c.w}}};
  }
  const json doc = {{"format", "nasrt.tune"}, {"version", 1},        {"model", model_hash},
                    {"cpu", cpu_signature()}, {"isa", host_isa()}, {"convs", convs}};
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f << doc.dump(2) << "\n";
    f.flush();
    if (!f) {
      std::remove(tmp.c_str());
      throw std::runtime_error(path + ": cannot write the tuning file");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw std::runtime_error(path + ": cannot write the tuning file");
  }
}

std::map<std::string, Backend> load_tuning(const std::string& path, const std::string& model_hash,
                                           std::string* notice) {
  std::map<std::string, Backend> out;
  std::ifstream f(path, std::ios::binary);
  if (!f) return out;  // no tuning file: the built-in choice, silently
  std::stringstream ss;
  ss << f.rdbuf();
  const std::string text = ss.str();
  const auto ignored = [&](const std::string& why) {
    if (notice) *notice = path + ": ignored (" + why + "); run `nasrt tune` to redo it";
    return std::map<std::string, Backend>();
  };
  if (text.size() > (16u << 20)) return ignored("larger than 16 MiB");
  json doc;
  const json::parser_callback_t depth = [](int d, json::parse_event_t, json&) {
    if (d > 16) throw std::runtime_error("nested too deeply");
    return true;
  };
  try {
    doc = json::parse(text, depth);
  } catch (const std::exception&) {
    return ignored("not valid JSON");
  }
  try {
    if (!doc.is_object() || doc.value("format", "") != "nasrt.tune" || doc.value("version", 0) != 1)
      return ignored("not a nasrt tuning file of version 1");
    if (doc.value("model", "") != model_hash) return ignored("made for another model file");
    if (doc.value("cpu", "") != cpu_signature())
      return ignored("made on another CPU or build: " + doc.value("cpu", std::string("?")));
    const json& convs = doc.at("convs");
    if (!convs.is_object()) return ignored("convs: not an object");
    for (auto it = convs.begin(); it != convs.end(); ++it) {
      const Backend b = parse_backend(it.value().at("backend").get<std::string>());
      if (b == Backend::Auto || !backend_compiled(b))
        return ignored("convs." + it.key() + ".backend: not in this build");
      out[it.key()] = b;
    }
  } catch (const std::exception&) {
    return ignored("malformed entries");
  }
  return out;
}

}  // namespace nasrt
