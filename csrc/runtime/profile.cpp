// The profile kit's one timing routine (profile.h): probes built from the kit's models with
// the runtime's own ops, timed warm in interleaved rounds (median of each round), and the
// table assembled by the kit's recipe.
#include "runtime/profile.h"

#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <fstream>
#include <memory>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "kernels/registry.h"
#include "runtime/cpu.h"
#include "runtime/executor.h"

namespace nasrt {
namespace {

using json = nlohmann::json;

template <typename F>
double median_ns(F&& f, int runs, int warmup) {
  for (int i = 0; i < warmup; ++i) f();
  std::vector<double> t(runs);
  for (int i = 0; i < runs; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    t[i] = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
  }
  std::nth_element(t.begin(), t.begin() + runs / 2, t.end());
  return t[runs / 2];
}

// Runs f on a fresh thread pinned to `core`. A helper thread, so the caller's own affinity
// is never touched: threads the caller spawns meanwhile would inherit a temporary pin.
template <typename F>
double on_core(int core, F&& f) {
  double result = 0.0;
  std::exception_ptr error;
  std::thread t([&] {
    try {
      if (!pin_current_thread(core))
        throw std::invalid_argument("cannot pin a thread to core " + std::to_string(core));
      set_flush_denormals();  // as the executor's threads
      result = f();
    } catch (...) {
      error = std::current_exception();
    }
  });
  t.join();
  if (error) std::rethrow_exception(error);
  return result;
}

[[noreturn]] void fail(const std::string& source, const std::string& field, const std::string& msg) {
  throw ModelError(source + ": " + field + ": " + msg);
}

std::string brief(const json& v) { return printable(v.dump()).substr(0, 40); }

bool is_int(const json& v) { return v.is_number_integer(); }

const char* const kRecipeFields[] = {"ops_us", "units_us", "barrier_us", "stem_us",
                                     "head_us", "sync_us", "overhead_us"};
const char* const kKinds[] = {"convs", "head", "executor", "call"};

bool good_model_name(const std::string& n) {
  if (n.empty() || n.size() > 255 || n[0] == '.') return false;
  return std::all_of(n.begin(), n.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  });
}

// An entry: {"probe": A[, "minus": B][, "plus": C[, "coef": c]]} or a constant >= 0;
// else a list or an object of entries (the table's own shape).
void check_recipe(const json& v, const std::string& field, const std::set<std::string>& keys,
                  const std::string& source) {
  if (v.is_number()) {
    if (!std::isfinite(v.get<double>()) || v.get<double>() < 0)
      fail(source, field, "a constant must be a finite number >= 0, got " + brief(v));
  } else if (v.is_object() && v.contains("probe")) {
    for (auto it = v.begin(); it != v.end(); ++it) {
      const std::string& k = it.key();
      if (k == "coef") {
        if (!it->is_number() || !std::isfinite(it->get<double>()) || !v.contains("plus"))
          fail(source, field + ".coef", "must be a finite number, with plus");
      } else if (k == "probe" || k == "minus" || k == "plus") {
        if (!it->is_string() || !keys.count(it->get<std::string>()))
          fail(source, field + "." + k, "not a probe of the kit: " + brief(*it));
      } else {
        fail(source, field + "." + printable(k), "unknown field (known: probe, minus, plus, coef)");
      }
    }
  } else if (v.is_object()) {
    for (auto it = v.begin(); it != v.end(); ++it)
      check_recipe(*it, field + "." + printable(it.key()), keys, source);
  } else if (v.is_array()) {
    for (size_t i = 0; i < v.size(); ++i)
      check_recipe(v[i], field + "[" + std::to_string(i) + "]", keys, source);
  } else {
    fail(source, field, "must be an entry {\"probe\": ...}, a number, a list or an object, got " +
                            brief(v));
  }
}

json eval_recipe(const json& v, const std::map<std::string, double>& best) {
  if (v.is_number()) return v;
  if (v.is_object() && v.contains("probe")) {
    double x = best.at(v["probe"].get<std::string>());
    if (v.contains("minus")) x = std::max(0.0, x - best.at(v["minus"].get<std::string>()));
    if (v.contains("plus")) x += v.value("coef", 1.0) * best.at(v["plus"].get<std::string>());
    return x;
  }
  json out = v.is_array() ? json::array() : json::object();
  if (v.is_array())
    for (const json& e : v) out.push_back(eval_recipe(e, best));
  else
    for (auto it = v.begin(); it != v.end(); ++it) out[it.key()] = eval_recipe(*it, best);
  return out;
}

size_t path_convs(const NetSpec& net) {
  size_t n = 0;
  for (const auto& block : net.paths[0]) n += block.convs.size();
  return n;
}

bool has_residual(const NetSpec& net) {
  for (const auto& path : net.paths)
    for (const auto& block : path)
      if (block.residual) return true;
  return false;
}

Kit parse_kit_with(const std::string& text, const std::function<LoadedModel(const std::string&)>& load,
                   const std::string& source, const std::string& dir) {
  if (text.size() > kKitManifestBytes) fail(source, "format", "larger than 16 MiB");
  if (!json_depth_within(text.data(), text.data() + text.size(), 64))
    fail(source, "format", "not valid JSON (nested deeper than 64)");
  json doc;
  try {
    doc = json::parse(text);
  } catch (const std::exception&) {
    fail(source, "format", "not valid JSON");
  }
  if (!doc.is_object() || doc.value("format", json()) != "nasrt.profile-kit" ||
      doc.value("version", json()) != 1)
    fail(source, "format", "not a nasrt profile kit (expected \"nasrt.profile-kit\" version 1)");
  const std::set<std::string> top{"format", "version", "precision", "settings", "table", "probes", "recipe"};
  for (auto it = doc.begin(); it != doc.end(); ++it)
    if (!top.count(it.key()))
      fail(source, printable(it.key()),
           "unknown field (known: format, version, precision, settings, table, probes, recipe)");
  for (const char* k : {"precision", "settings", "table", "probes", "recipe"})
    if (!doc.contains(k)) fail(source, k, "missing");
  Kit kit;
  kit.source = source, kit.dir = dir, kit.manifest = text;
  if (doc["precision"] != "fp32" && doc["precision"] != "int8")
    fail(source, "precision", "must be fp32 or int8, got " + brief(doc["precision"]));
  kit.precision = doc["precision"];

  const json& s = doc["settings"];
  if (!s.is_object()) fail(source, "settings", "must be an object");
  const std::set<std::string> known{"threads", "runs", "rounds", "warmup", "span_s", "single_thread_core"};
  for (auto it = s.begin(); it != s.end(); ++it)
    if (!known.count(it.key()))
      fail(source, "settings." + printable(it.key()),
           "unknown field (known: threads, runs, rounds, warmup, span_s, single_thread_core)");
  const auto integer = [&](const char* k, int lo, int hi) {
    const json v = s.value(k, json());
    if (!is_int(v) || v.get<int64_t>() < lo || v.get<int64_t>() > hi)
      fail(source, std::string("settings.") + k,
           "must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " + brief(v));
    return v.get<int>();
  };
  kit.threads = integer("threads", 1, 9999);
  kit.rounds = integer("rounds", 1, 1000000);
  kit.runs = integer("runs", kit.rounds, 100000000);
  kit.warmup = integer("warmup", 0, 100000000);
  const json span = s.value("span_s", json());
  if (!span.is_number() || !std::isfinite(span.get<double>()) || span.get<double>() < 0 ||
      span.get<double>() > 86400)
    fail(source, "settings.span_s", "must be a number of seconds in [0, 86400], got " + brief(span));
  kit.span_s = span;
  if (!s.value("single_thread_core", json()).is_null()) kit.core = integer("single_thread_core", 0, 1 << 20);

  const json& t = doc["table"];
  if (!t.is_object() || t.size() != 3 || !t.value("nasrt_version", json()).is_string() ||
      !t.value("space", json()).is_object() || !t.value("layers", json()).is_array())
    fail(source, "table", "must be {\"nasrt_version\": string, \"space\": object, \"layers\": list}");

  const json& probes = doc["probes"];
  if (!probes.is_array() || probes.empty() || probes.size() > 1000000)
    fail(source, "probes", "must be a non-empty list");
  std::set<std::string> keys;
  for (size_t i = 0; i < probes.size(); ++i) {
    const std::string f = "probes[" + std::to_string(i) + "]";
    const json& p = probes[i];
    if (!p.is_object()) fail(source, f, "must be an object");
    for (auto it = p.begin(); it != p.end(); ++it)
      if (it.key() != "key" && it.key() != "model" && it.key() != "time" && it.key() != "threads" &&
          it.key() != "convs")
        fail(source, f + "." + printable(it.key()), "unknown field (known: key, model, time, threads, convs)");
    KitProbe pr;
    if (!p.value("key", json()).is_string() || p["key"].get<std::string>().empty())
      fail(source, f + ".key", "must be a non-empty string");
    pr.key = p["key"];
    if (!keys.insert(pr.key).second) fail(source, f + ".key", "a second probe " + brief(p["key"]));
    if (!p.value("model", json()).is_string() || !good_model_name(p["model"]))
      fail(source, f + ".model", "must be a file name in the kit (letters, digits, . _ -), got " +
                                     brief(p.value("model", json())));
    pr.model = p["model"];
    const json kind = p.value("time", json());
    const auto k = std::find(std::begin(kKinds), std::end(kKinds), kind);
    if (!kind.is_string() || k == std::end(kKinds))
      fail(source, f + ".time", "must be convs, head, executor or call, got " + brief(kind));
    pr.kind = static_cast<KitProbe::Kind>(k - std::begin(kKinds));
    const bool threaded = pr.kind == KitProbe::Exec || pr.kind == KitProbe::Call;
    if (threaded != p.contains("threads"))
      fail(source, f + ".threads", threaded ? "missing" : "only executor and call probes have threads");
    if (threaded) {
      if (!is_int(p["threads"]) || p["threads"].get<int64_t>() < 1 || p["threads"].get<int64_t>() > 9999)
        fail(source, f + ".threads", "must be an integer in [1, 9999], got " + brief(p["threads"]));
      pr.threads = p["threads"];
    }
    if ((pr.kind == KitProbe::Convs) != p.contains("convs"))
      fail(source, f + ".convs", pr.kind == KitProbe::Convs ? "missing" : "only convs probes have convs");
    if (pr.kind == KitProbe::Convs) {
      const json& c = p["convs"];
      if (!c.is_array() || c.empty() || c.size() > 4096)
        fail(source, f + ".convs", "must be a non-empty list of conv indices");
      for (size_t j = 0; j < c.size(); ++j) {
        if (!is_int(c[j]) || c[j].get<int64_t>() < 0 || c[j].get<int64_t>() > 1 << 20 ||
            (j > 0 && c[j].get<int64_t>() != pr.convs.back() + 1))
          fail(source, f + ".convs", "must be consecutive ascending conv indices, got " + brief(c));
        pr.convs.push_back(c[j]);
      }
    }
    kit.probes.push_back(pr);
  }

  const json& recipe = doc["recipe"];
  if (!recipe.is_object()) fail(source, "recipe", "must be an object");
  for (auto it = recipe.begin(); it != recipe.end(); ++it)
    if (std::find(std::begin(kRecipeFields), std::end(kRecipeFields), it.key()) == std::end(kRecipeFields))
      fail(source, "recipe." + printable(it.key()),
           "unknown field (known: ops_us, units_us, barrier_us, stem_us, head_us, sync_us, overhead_us)");
  for (const char* k : kRecipeFields) {
    if (!recipe.contains(k)) fail(source, std::string("recipe.") + k, "missing");
    check_recipe(recipe[k], std::string("recipe.") + k, keys, source);
  }

  // The models, each checked against what its probes time.
  for (size_t i = 0; i < kit.probes.size(); ++i) {
    const KitProbe& pr = kit.probes[i];
    const std::string f = "probes[" + std::to_string(i) + "]";
    auto it = kit.models.find(pr.model);
    if (it == kit.models.end()) it = kit.models.emplace(pr.model, load(pr.model)).first;
    const NetSpec& net = it->second.net;
    if (net.quantized != (kit.precision == "int8"))
      fail(source, f + ".model",
           pr.model + " is " + (net.quantized ? "an int8 model (format 3)" : "an fp32 model (format 2)") +
               ", the kit's precision is " + kit.precision);
    const int paths = static_cast<int>(net.paths.size());
    if ((pr.kind == KitProbe::Convs || pr.kind == KitProbe::Head) && (!net.stem.empty() || !net.syncs.empty()))
      fail(source, f + ".model", pr.model + ": a " + kKinds[pr.kind] + " probe's net has no stem and no syncs");
    if (pr.kind == KitProbe::Convs && paths != 1)
      fail(source, f + ".model", pr.model + ": a convs probe's net has one path, this one " + std::to_string(paths));
    // Its convs are timed as one chain, each reading the previous one's output: no shortcut, no add.
    if (pr.kind == KitProbe::Convs && has_residual(net))
      fail(source, f + ".model", pr.model + ": a convs probe's net has no residual blocks");
    if (pr.kind == KitProbe::Convs && static_cast<size_t>(pr.convs.back()) >= path_convs(net))
      fail(source, f + ".convs", "conv " + std::to_string(pr.convs.back()) + " of a path of " +
                                     std::to_string(path_convs(net)) + " convs");
    if (pr.threads > paths)
      fail(source, f + ".threads", "must be in 1.." + std::to_string(paths) + " (the model's paths), got " +
                                       std::to_string(pr.threads));
  }
  return kit;
}

// One tensor of a probe in the precision its producer computes in, and the other form when
// a consumer needs it (converted by an op right after the producer, as the executor does).
struct Tensor {
  size_t n = 0;
  bool int8 = false;
  ActQuant aq;
  float* f = nullptr;
  uint8_t* q = nullptr;
};

// The ops of a single-thread probe and the memory they run on.
class Chain {
 public:
  Tensor make(size_t n, bool int8, ActQuant aq) {
    Tensor t{n, int8, aq};
    if (int8)
      t.q = u8(n);
    else
      t.f = f32(n);
    return t;
  }
  // t's form of the given precision, converted after its producer's ops so far.
  void need(Tensor& t, bool int8) {
    if (int8 && !t.q) {
      t.q = u8(t.n);
      ops.push_back(make_quantize(t.f, 1, t.q, 1, 1, 0, t.n, t.aq.scale, t.aq.zero_point));
    } else if (!int8 && !t.f) {
      t.f = f32(t.n);
      ops.push_back(make_dequantize(t.q, 1, t.f, 1, 1, 0, t.n, t.aq.scale, t.aq.zero_point));
    }
  }
  void run() {
    for (auto& op : ops) op->run();
  }
  std::vector<std::unique_ptr<Op>> ops;

 private:
  float* f32(size_t n) { return fb_.emplace_back(n + kBufferSlackFloats, 0.5f).data(); }
  uint8_t* u8(size_t n) { return qb_.emplace_back(n + 4 * kBufferSlackFloats, uint8_t{3}).data(); }
  std::vector<std::vector<float>> fb_;
  std::vector<std::vector<uint8_t>> qb_;
};

struct PathConvs : NetVisitor {
  std::vector<ConvSite> sites;  // every path's chain convs, path-major within a layer
  void conv(const ConvSite& s) override {
    if (s.kind == NetPart::Conv) sites.push_back(s);
  }
};

bool int8_conv(const NetSpec& net, const ConvSpec& c) {
  return net.quantized && c.precision == Precision::Int8;
}

void add_conv(Chain& ch, const NetSpec& net, const ConvSite& s, Tensor& x, Tensor& y) {
  const ConvSpec& c = *s.spec;
  const ConvGeom g = conv_geom(c, s.in.h, s.in.w);
  if (int8_conv(net, c)) {
    ch.need(x, true);
    const std::vector<int8_t> w = oihw_to_ohwi(c.q.weight.data(), c.in_c / c.groups, c.kernel, 0, c.out_c);
    ch.ops.push_back(make_conv_int8(builtin_backend(Precision::Int8), g, int8_params(c, x.aq), w.data(),
                                    x.q, y.q));
  } else {
    ch.need(x, false);
    const std::vector<float> w = oihw_to_ohwi(c.weight.data(), c.in_c / c.groups, c.kernel, 0, c.out_c);
    ch.ops.push_back(make_conv(builtin_backend(), g, w.data(), c.bias.data(), x.f, y.f));
  }
}

std::unique_ptr<Chain> conv_chain(const NetSpec& net, const std::vector<int>& which) {
  PathConvs v;
  walk(net, v);
  auto ch = std::make_unique<Chain>();
  const ConvSite& first = v.sites[which.front()];
  const ActQuant xq = which.front() == 0 ? net.input_q : v.sites[which.front() - 1].spec->out_q;
  Tensor x = ch->make(static_cast<size_t>(first.in.c) * first.in.h * first.in.w,
                      int8_conv(net, *first.spec), xq);
  for (int j : which) {
    const ConvSite& s = v.sites[j];
    Tensor y = ch->make(static_cast<size_t>(s.out.c) * s.out.h * s.out.w, int8_conv(net, *s.spec),
                        s.spec->out_q);
    add_conv(*ch, net, s, x, y);
    x = y;
  }
  return ch;
}

// The head as the executor runs it: each path's map pooled into the features, then the FCs.
std::unique_ptr<Chain> head_chain(const NetSpec& net) {
  PathConvs v;
  walk(net, v);
  const int P = static_cast<int>(net.paths.size());
  auto ch = std::make_unique<Chain>();
  const ConvSite& last = v.sites.back();
  const int c = last.out.c, hw = last.out.h * last.out.w;
  Tensor feat = ch->make(static_cast<size_t>(P) * c, net.quantized, net.features_q);
  for (int p = 0; p < P; ++p) {
    const ActQuant xq = net.paths[p].back().out_q();  // the path's last block's output
    Tensor map = ch->make(static_cast<size_t>(hw) * c, net.quantized, xq);
    if (net.quantized)
      ch->ops.push_back(make_global_avg_pool_int8(hw, c, c, map.q, xq.zero_point,
                                                  xq.scale / (static_cast<float>(hw) * feat.aq.scale),
                                                  feat.aq.zero_point, feat.q + p * c));
    else
      ch->ops.push_back(make_global_avg_pool(hw, c, c, map.f, feat.f + p * c));
  }
  Tensor x = feat;
  for (size_t i = 0; i < net.head.size(); ++i) {
    const FcSpec& fc = net.head[i];
    const bool i8 = net.quantized && fc.precision == Precision::Int8, logits = i + 1 == net.head.size();
    Tensor y = ch->make(fc.out, i8 && !logits, fc.out_q);
    ch->need(x, i8);
    if (i8) {
      std::vector<float> m(fc.out);
      for (int o = 0; o < fc.out; ++o) m[o] = x.aq.scale * fc.q.weight_scale[o];
      if (logits) {
        ch->ops.push_back(make_fc_int8_logits(fc.in, fc.out, fc.q.weight.data(), fc.q.bias, x.aq.zero_point,
                                              m, x.q, y.f));
      } else {
        for (int o = 0; o < fc.out; ++o) m[o] = m[o] / fc.out_q.scale;
        ch->ops.push_back(make_fc_int8(fc.in, fc.out, fc.relu, fc.q.weight.data(), fc.q.bias, x.aq.zero_point,
                                       m, fc.out_q.zero_point, x.q, y.q));
      }
    } else {
      ch->ops.push_back(make_fc(builtin_backend(), fc.in, fc.out, fc.relu, fc.weight.data(), fc.bias.data(),
                                x.f, y.f));
    }
    x = y;
  }
  return ch;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string read_text(const std::string& path, size_t limit, const std::string& what) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw ModelError(path + ": no such " + what + " (or not readable)");
  std::string text;
  char buf[65536];
  while (f.read(buf, sizeof buf) || f.gcount() > 0) {
    text.append(buf, static_cast<size_t>(f.gcount()));
    if (text.size() > limit) throw ModelError(path + ": format: larger than 16 MiB");
  }
  if (f.bad()) throw ModelError(path + ": cannot read the " + what);
  return text;
}

}  // namespace

Kit parse_kit(const std::string& manifest, const std::map<std::string, std::string>& models,
              const std::string& source) {
  return parse_kit_with(manifest, [&](const std::string& name) {
    const auto it = models.find(name);
    if (it == models.end()) throw ModelError(source + ": models: no model " + printable(name) + " in the kit");
    return parse_model(reinterpret_cast<const uint8_t*>(it->second.data()), it->second.size(), name);
  }, source, "");
}

Kit load_kit(const std::string& dir) {
  const std::string source = dir + "/kit.json";
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw ModelError(dir + ": not a directory, expected a profile kit (nasrt profile --kit DIR)");
  if (::stat(source.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
    throw ModelError(source + ": missing, expected the kit's manifest (nasrt profile --kit DIR)");
  return parse_kit_with(read_text(source, kKitManifestBytes, "profile kit manifest"),
                        [&](const std::string& name) { return load_model(dir + "/" + name); }, source, dir);
}

std::string run_kit(const Kit& kit, const ProfileHooks& hooks) {
  const std::vector<int> cores = available_cores();
  if (kit.threads > static_cast<int>(cores.size()))
    throw ModelError(kit.source + ": settings.threads: " + std::to_string(kit.threads) +
                     " threads, but this machine has " + std::to_string(cores.size()) +
                     " cores available: write the kit with --threads " + std::to_string(cores.size()));
  const int core = kit.core < 0 ? cores[0] : kit.core;
  const int per_round = kit.runs / kit.rounds, warmup = kit.warmup;
  std::vector<std::function<double()>> timers;  // us
  std::vector<std::unique_ptr<Chain>> chains;
  std::vector<std::unique_ptr<Executor>> execs;
  for (const KitProbe& p : kit.probes) {
    const NetSpec& net = kit.models.at(p.model).net;
    if (p.kind == KitProbe::Convs || p.kind == KitProbe::Head) {
      chains.push_back(p.kind == KitProbe::Convs ? conv_chain(net, p.convs) : head_chain(net));
      Chain* ch = chains.back().get();
      timers.push_back([=] { return on_core(core, [&] { return median_ns([&] { ch->run(); }, per_round, warmup); }) / 1e3; });
    } else if (p.kind == KitProbe::Exec) {
      ExecOptions o;
      o.threads = p.threads, o.cores = cores, o.balance = false, o.adapt = false;  // t threads, always
      execs.push_back(std::make_unique<Executor>(net, o));
      Executor* e = execs.back().get();
      auto x = std::make_shared<std::vector<float>>(e->input_size(), 0.5f);
      auto y = std::make_shared<std::vector<float>>(e->classes());
      timers.push_back([=] { return median_ns([&] { e->run(x->data(), 1, y->data()); }, per_round, warmup) / 1e3; });
    } else {
      if (!hooks.call) throw std::invalid_argument("run_kit: call probes need a caller's timer");
      timers.push_back([&hooks, &p, per_round, warmup] { return hooks.call(p, per_round, warmup); });
    }
  }
  // Every probe once per round, the rounds spread over span_s: a VM's host can slow it for
  // tens of seconds at a time, and each entry keeps its fastest round.
  std::map<std::string, std::vector<double>> rounds_us;
  const auto start = std::chrono::steady_clock::now();
  for (int r = 0; r < kit.rounds; ++r) {
    for (size_t i = 0; i < kit.probes.size(); ++i) {
      rounds_us[kit.probes[i].key].push_back(timers[i]());
      if (hooks.progress) hooks.progress();
    }
    std::this_thread::sleep_until(start + std::chrono::duration<double>(kit.span_s * (r + 1) / kit.rounds));
  }
  return assemble_lut(kit, rounds_us, hooks.caller);
}

std::string assemble_lut(const Kit& kit, const std::map<std::string, std::vector<double>>& rounds_us,
                         const std::string& caller) {
  std::map<std::string, double> best;
  std::vector<double> spreads;  // of the directly timed single-thread probes
  for (const KitProbe& p : kit.probes) {
    const auto it = rounds_us.find(p.key);
    if (it == rounds_us.end() || it->second.empty())
      throw std::invalid_argument("rounds_us: no timings of probe " + p.key);
    const double lo = *std::min_element(it->second.begin(), it->second.end());
    best[p.key] = lo;
    if (p.kind == KitProbe::Convs || p.kind == KitProbe::Head) spreads.push_back(median(it->second) / lo - 1);
  }
  const json doc = json::parse(kit.manifest);
  const json& table = doc["table"];
  json out = {{"format", "nasrt.lut"},
              {"version", 1},
              {"nasrt_version", table["nasrt_version"]},
              {"machine", json::parse(machine_info_json())},
              // Every entry is timed on the built-in backend choice of this host (no tuning file).
              {"backend", backend_name(builtin_backend(kit.precision == "int8" ? Precision::Int8 : Precision::Fp32))},
              {"precision", kit.precision},
              {"space", table["space"]},
              {"layers", table["layers"]}};
  out["settings"] = {{"threads", kit.threads},
                     {"runs", kit.runs},
                     {"rounds", kit.rounds},
                     {"warmup", kit.warmup},
                     {"span_s", kit.span_s},
                     {"statistic", "min over rounds of the round median"},
                     {"single_thread_core", kit.core < 0 ? available_cores()[0] : kit.core},
                     {"balance", false},
                     {"round_spread", spreads.empty() ? 0.0 : median(spreads)},
                     {"caller", caller}};
  for (const char* k : kRecipeFields) out[k] = eval_recipe(doc["recipe"][k], best);
  return out.dump(2) + "\n";
}

std::string machine_info_json() {
  json m = json::object();
  utsname u{};
  if (::uname(&u) == 0) {
    m["machine"] = u.machine;
    m["system"] = std::string(u.sysname) + " " + u.release;
  }
  m["cores"] = ::sysconf(_SC_NPROCESSORS_ONLN);
  m["cores_available"] = available_cores().size();
  const std::string model = cpu_model();
  if (model != "unknown") m["cpu"] = model;
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  json features = json::array();
  bool have_features = false;
  while (std::getline(f, line)) {
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string key = line.substr(0, colon), val = line.substr(colon + 1);
    key.erase(key.find_last_not_of(" \t") + 1);
    if (key == "cpu MHz" && !m.contains("mhz")) {
      try {
        m["mhz"] = std::stod(val);
      } catch (const std::exception&) {
      }
    } else if ((key == "flags" || key == "Features") && !have_features) {
      have_features = true;
      std::istringstream words(val);
      // x86: the vector ISA flags (the full list is ~150 words); aarch64: all of them.
      for (std::string w; words >> w;)
        if (key == "Features" || w.rfind("avx", 0) == 0 || w.rfind("sse4", 0) == 0 || w.rfind("amx", 0) == 0 ||
            w == "fma" || w == "f16c")
          features.push_back(w);
    }
  }
  m["features"] = features;
  m["isa"] = host_isa();
  json backends = json::array();
  for (Backend b : compiled_backends()) backends.push_back(backend_name(b));
  m["backends"] = backends;
  return m.dump();
}

}  // namespace nasrt
