// model.nasrt reader: safetensors header, metadata, the lowered graph, tensors.
#include "runtime/model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <cerrno>
#include <set>
#include <tuple>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "nasrt/metadata_keys.h"

namespace nasrt {
namespace {

using json = nlohmann::json;

[[noreturn]] void fail(const std::string& source, const std::string& field, const std::string& msg) {
  throw ModelError(source + ": " + field + ": " + msg);
}

}  // namespace

std::string printable(const std::string& s) {
  std::string out;
  for (unsigned char ch : s) {
    if (ch >= 0x20 && ch < 0x7f) {
      out += static_cast<char>(ch);
    } else {
      char buf[5];
      std::snprintf(buf, sizeof buf, "\\x%02x", ch);
      out += buf;
    }
  }
  return out;
}

namespace {

// Parses JSON text with a nesting limit (no recursion blow-up on hostile input).
json parse_json(const char* begin, const char* end, const std::string& source,
                const std::string& field) {
  if (!json_depth_within(begin, end, Limits::json_depth))
    fail(source, field, "JSON nested deeper than " + std::to_string(Limits::json_depth));
  try {
    return json::parse(begin, end);
  } catch (const json::exception& e) {
    fail(source, field, "not valid JSON (" + printable(e.what()) + ")");
  }
}

// Reads the fields of the lowered graph, naming each one in errors.
class GraphReader {
 public:
  GraphReader(const std::string& source) : source_(source + ": " NASRT_KEY_GRAPH) {}

  const json& member(const json& obj, const char* key, const std::string& where) const {
    if (!obj.is_object()) fail(source_, where, "must be an object");
    auto it = obj.find(key);
    if (it == obj.end()) fail(source_, where + "." + key, "missing");
    return *it;
  }
  const json& list(const json& v, const std::string& where, size_t max) const {
    if (!v.is_array()) fail(source_, where, "must be a list");
    if (v.size() > max) fail(source_, where, "more than " + std::to_string(max) + " entries");
    return v;
  }
  int integer(const json& obj, const char* key, const std::string& where, int lo, int hi) const {
    const json& v = member(obj, key, where);
    if (!v.is_number_integer() || v.get<int64_t>() < lo || v.get<int64_t>() > hi)
      fail(source_, where + "." + key,
           "must be an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
               v.dump().substr(0, 40));
    return static_cast<int>(v.get<int64_t>());
  }
  bool boolean(const json& obj, const char* key, const std::string& where) const {
    const json& v = member(obj, key, where);
    if (!v.is_boolean()) fail(source_, where + "." + key, "must be true or false");
    return v.get<bool>();
  }
  std::string name(const json& obj, const std::string& where) const {
    const json& v = member(obj, "name", where);
    if (!v.is_string() || v.get<std::string>().empty() || v.get<std::string>().size() > 256)
      fail(source_, where + ".name", "must be a tensor name prefix");
    return v.get<std::string>();
  }
  const std::string& source() const { return source_; }

 private:
  std::string source_;
};

// "'name'" as Python's repr writes a plain name, for fields like activations['stem'].
std::string py_repr(const std::string& name) { return "'" + printable(name) + "'"; }

// Model format 3's metadata nasrt.quant, every field checked as nasrt.quant does.
struct Quant {
  int bits = 8;
  std::set<std::string> fp32;
  std::map<std::string, ActQuant> acts;
};

constexpr const char* kQuantField = "metadata " NASRT_KEY_QUANT;

Quant parse_quant(const std::string& text, const std::string& source) {
  const json d = parse_json(text.data(), text.data() + text.size(), source, kQuantField);
  auto bad = [&](const std::string& field, const std::string& msg) {
    fail(source, kQuantField, field + ": " + msg);
  };
  if (!d.is_object()) fail(source, kQuantField, "must be a JSON object");
  static const char* const keys[] = {"weight_bits", "method", "fp32", "activations"};
  for (const char* k : keys)
    if (!d.contains(k)) bad(k, "missing");
  for (auto it = d.begin(); it != d.end(); ++it)
    if (it.key() != "fp32_choice" &&
        std::find_if(std::begin(keys), std::end(keys),
                     [&](const char* k) { return it.key() == k; }) == std::end(keys))
      bad(printable(it.key()), "unknown field");
  // How the fp32 list was chosen (optional, for people): only its rule is checked.
  if (d.contains("fp32_choice")) {
    const json& c = d["fp32_choice"];
    static const char* const rules[] = {"default", "none", "given", "auto"};
    if (!c.is_object() || !c.contains("rule") || !c["rule"].is_string() ||
        std::find(std::begin(rules), std::end(rules), c["rule"].get<std::string>()) == std::end(rules))
      bad("fp32_choice", "must be an object whose rule is default, none, given or auto");
  }
  Quant q;
  const json& bits = d["weight_bits"];
  if (!bits.is_number_integer() || (bits.get<int64_t>() != 8 && bits.get<int64_t>() != 7))
    bad("weight_bits", "must be 8 or 7, got " + printable(bits.dump().substr(0, 40)));
  q.bits = static_cast<int>(bits.get<int64_t>());
  if (!d["method"].is_string() || d["method"].get<std::string>().empty())
    bad("method", "must be the calibration method's name");
  const json& fp32 = d["fp32"];
  if (!fp32.is_array()) bad("fp32", "must be a list of layer names");
  for (const json& v : fp32) {
    if (!v.is_string()) bad("fp32", "must be a list of layer names");
    q.fp32.insert(v.get<std::string>());
  }
  const json& acts = d["activations"];
  if (!acts.is_object()) bad("activations", "must be an object");
  for (auto it = acts.begin(); it != acts.end(); ++it) {
    const std::string where = "activations[" + py_repr(it.key()) + "]";
    const json& a = it.value();
    if (!a.is_object() || a.size() != 2 || !a.contains("scale") || !a.contains("zero_point"))
      bad(where, "must be {\"scale\": number, \"zero_point\": integer}");
    const json& s = a["scale"];
    const json& z = a["zero_point"];
    if (!s.is_number()) bad(where + ".scale", "must be a number, got " + printable(s.dump().substr(0, 40)));
    // The float32 value is the scale: a double beyond float range, or 0 in float32, is refused.
    const double sd = s.get<double>();
    if (!(std::isfinite(sd) && std::fabs(sd) <= 3.4028234663852886e38) ||
        !(static_cast<float>(sd) > 0.0f))
      bad(where + ".scale", "must be finite and > 0 in float32, got " + printable(s.dump().substr(0, 40)));
    if (!z.is_number_integer() || (z.is_number_unsigned() ? z.get<uint64_t>() > 255 : true))
      bad(where + ".zero_point",
          "must be an integer in [0, 255], got " + printable(z.dump().substr(0, 40)));
    q.acts[it.key()] = ActQuant{static_cast<float>(sd), static_cast<int>(z.get<uint64_t>())};
  }
  return q;
}

// A tensor as stored: its dtype code (F32, I8, I32) and data (possibly unaligned).
using RawLookup = std::function<const void*(const std::string& name, const std::vector<int64_t>& shape,
                                            const std::string& dtype, const std::string& why)>;

struct Shape {
  int c, h, w;
};

std::string shape_text(Shape s) {
  return std::to_string(s.c) + "x" + std::to_string(s.h) + "x" + std::to_string(s.w);
}

class GraphBuilder {
 public:
  // quant: format 3's parameters (the layers' precision), or null for a float model.
  GraphBuilder(const GraphReader& r, const RawLookup& t, const Quant* quant)
      : r_(r), tensors_(t), quant_(quant) {}

  // A conv unit on an input of shape `in` with its tensors; *out: its output shape.
  ConvSpec conv(const json& u, const std::string& where, Shape in, Shape* out) {
    ConvSpec c = unit(u, where, in, out);
    weights(c);
    return c;
  }

  // A conv unit's fields alone (no tensors read yet), checked against its input.
  ConvSpec unit(const json& u, const std::string& where, Shape in, Shape* out) {
    ConvSpec c;
    c.name = r_.name(u, where);
    c.in_c = r_.integer(u, "in", where, 1, Limits::channels);
    c.out_c = r_.integer(u, "out", where, 1, Limits::channels);
    c.kernel = r_.integer(u, "kernel", where, 1, Limits::kernel);
    c.stride = r_.integer(u, "stride", where, 1, Limits::kernel);
    c.groups = r_.integer(u, "groups", where, 1, Limits::channels);
    c.relu = r_.boolean(u, "relu", where);
    if (c.kernel % 2 == 0) fail(r_.source(), where + ".kernel", "must be odd");
    if (c.in_c % c.groups || c.out_c % c.groups)
      fail(r_.source(), where + ".groups", "must divide in and out");
    if (c.in_c != in.c)
      fail(r_.source(), where + ".in",
           "is " + std::to_string(c.in_c) + " but the input has " + std::to_string(in.c) +
               " channels");
    const int pad = c.kernel / 2;
    *out = Shape{c.out_c, conv_out_size(in.h, c.kernel, c.stride, pad),
                 conv_out_size(in.w, c.kernel, c.stride, pad)};
    if (out->h < 1 || out->w < 1) fail(r_.source(), where, "output would be empty");
    activation(*out, where);
    return c;
  }

  // A unit's tensors, by its name.
  void weights(ConvSpec& c) {
    layer(c.name, {c.out_c, c.in_c / c.groups, c.kernel, c.kernel}, &c.weight, &c.bias,
          &c.precision, &c.q);
  }

  FcSpec fc(const json& u, const std::string& where, int in) {
    FcSpec f;
    f.name = r_.name(u, where);
    f.in = r_.integer(u, "in", where, 1, Limits::channels * Limits::paths);
    f.out = r_.integer(u, "out", where, 1, Limits::channels);
    f.relu = r_.boolean(u, "relu", where);
    if (f.in != in)
      fail(r_.source(), where + ".in",
           "is " + std::to_string(f.in) + " but the features have " + std::to_string(in));
    layer(f.name, {f.out, f.in}, &f.weight, &f.bias, &f.precision, &f.q);
    return f;
  }

  // An activation tensor of shape s (a conv's output, a residual add's), counted against the limit.
  void activation(Shape s, const std::string& where) {
    activations_ += static_cast<uint64_t>(s.c) * s.h * s.w;
    if (activations_ > Limits::activation_floats)
      fail(r_.source(), where, "activations exceed the 1 GiB limit");
  }

  const std::set<std::string>& used() const { return used_; }

 private:
  // A layer's tensors: float weight and bias, or (format 3, not in the fp32 list) the
  // int8 weight, its per-channel scale and the int32 bias, each value checked.
  void layer(const std::string& name, const std::vector<int64_t>& shape, std::vector<float>* w,
             std::vector<float>* b, Precision* precision, Int8Weights* q) {
    const bool fp32 = !quant_ || quant_->fp32.count(name);
    const std::string why = !quant_ ? ""
                            : fp32  ? "the layer is in " + std::string(kQuantField) + "'s fp32 list"
                                    : "an int8 layer: not in " + std::string(kQuantField) + "'s fp32 list";
    if (fp32) {
      *w = finite(name + ".weight", tensor<float>(name + ".weight", shape, "F32", why));
      *b = finite(name + ".bias", tensor<float>(name + ".bias", {shape[0]}, "F32", why));
      return;
    }
    *precision = Precision::Int8;
    q->weight = tensor<int8_t>(name + ".weight", shape, "I8", why);
    q->weight_scale = tensor<float>(name + ".weight_scale", {shape[0]}, "F32", why);
    q->bias = tensor<int32_t>(name + ".bias", {shape[0]}, "I32", why);
    const int qmax = quant_->bits == 7 ? 64 : 127;  // symmetric: -128 never
    int worst = 0;
    for (int8_t v : q->weight) worst = std::max(worst, std::abs(static_cast<int>(v)));
    if (worst > qmax)
      throw ModelError(source_of_tensors() + ": tensor " + name + ".weight: |w| must be <= " +
                       std::to_string(qmax) + " for " + std::to_string(quant_->bits) +
                       "-bit weights (-128 never), got " + std::to_string(worst));
    for (float s : q->weight_scale)
      if (!(std::isfinite(s) && s > 0.0f))
        throw ModelError(source_of_tensors() + ": tensor " + name +
                         ".weight_scale: every channel's scale must be finite and > 0");
    for (int32_t v : q->bias)
      if (v == INT32_MIN)
        throw ModelError(source_of_tensors() + ": tensor " + name +
                         ".bias: -2^31 is outside the symmetric int32 range");
  }

  std::vector<float> finite(const std::string& name, std::vector<float> v) const {
    for (float x : v)
      if (!std::isfinite(x))
        throw ModelError(source_of_tensors() + ": tensor " + name + ": holds NaN or infinite values");
    return v;
  }

  template <class T>
  std::vector<T> tensor(const std::string& name, const std::vector<int64_t>& shape,
                        const char* dtype, const std::string& why) {
    uint64_t n = 1;
    for (int64_t d : shape) n *= static_cast<uint64_t>(d);
    weights_ += n;
    if (weights_ > Limits::weight_floats) fail(r_.source(), name, "weights exceed the 1 GiB limit");
    if (!used_.insert(name).second) fail(r_.source(), name, "used twice");
    const void* p = tensors_(name, shape, dtype, why);
    std::vector<T> v(n);
    std::memcpy(v.data(), p, n * sizeof(T));
    return v;
  }
  std::string source_of_tensors() const {
    const std::string& s = r_.source();
    return s.substr(0, s.size() - std::string(": " NASRT_KEY_GRAPH).size());
  }

  const GraphReader& r_;
  const RawLookup& tensors_;
  const Quant* quant_;
  std::set<std::string> used_;
  uint64_t activations_ = 0, weights_ = 0;
};

// One layer of a path on an input of shape *at (set to its output): a plain block is the
// list of its units, a residual block {"convs": [unit, ...], "shortcut": unit or null}.
BlockSpec block(const json& v, const std::string& wl, const GraphReader& r, GraphBuilder& b,
                Shape* at) {
  const Shape in = *at;
  if (!v.is_object()) {
    if (!v.is_array())
      fail(r.source(), wl, "must be a list of units or a residual block {\"convs\", \"shortcut\"}");
    const json& chain = r.list(v, wl, Limits::convs_per_block);
    if (chain.empty()) fail(r.source(), wl, "empty block");
    std::vector<ConvSpec> convs;
    for (size_t j = 0; j < chain.size(); ++j)
      convs.push_back(b.conv(chain[j], wl + "[" + std::to_string(j) + "]", *at, at));
    return BlockSpec(std::move(convs));
  }
  for (auto it = v.begin(); it != v.end(); ++it)
    if (it.key() != "convs" && it.key() != "shortcut")
      fail(r.source(), wl + "." + printable(it.key()), "unknown field (a residual block has convs, shortcut)");
  BlockSpec blk;
  blk.residual = true;
  const std::string wc = wl + ".convs";
  const json& chain = r.list(r.member(v, "convs", wl), wc, Limits::convs_per_block);
  if (chain.empty()) fail(r.source(), wc, "empty block");
  int64_t stride = 1;  // saturated: beyond any side, and a unit's stride is <= 63
  for (size_t j = 0; j < chain.size(); ++j) {
    blk.convs.push_back(b.conv(chain[j], wc + "[" + std::to_string(j) + "]", *at, at));
    stride = std::min<int64_t>(stride * blk.convs.back().stride, int64_t{1} << 20);
  }
  if (blk.convs.back().relu)
    fail(r.source(), wc + "[" + std::to_string(chain.size() - 1) + "].relu",
         "must be false (the last unit of a residual chain: the ReLU follows the add)");
  const json& sc = r.member(v, "shortcut", wl);
  const std::string ws = wl + ".shortcut";
  // The identity exactly where plan-v1 has it (stride 1, channels kept), not wherever the shapes
  // agree: a stride-2 block on a 1x1 map keeps the shape and still has its projection.
  const bool same = stride == 1 && in.c == at->c;
  if (sc.is_null()) {
    if (!same)
      fail(r.source(), ws,
           "null (the identity) needs stride 1 and the input's channels, but the chain maps " + shape_text(in) +
               " to " + shape_text(*at) + " at stride " + std::to_string(stride) + ": a 1x1 projection is required");
    b.activation(*at, wl);  // the add's output
    return blk;
  }
  if (!sc.is_object()) fail(r.source(), ws, "must be a conv unit or null (the identity)");
  if (same)
    fail(r.source(), ws,
         "must be null (the identity): the chain has stride 1 and keeps the input's " + std::to_string(in.c) +
             " channels");
  Shape out{};
  blk.shortcut = b.unit(sc, ws, in, &out);
  ConvSpec& s = *blk.shortcut;
  if (s.kernel != 1) fail(r.source(), ws + ".kernel", "must be 1, got " + std::to_string(s.kernel));
  if (s.groups != 1) fail(r.source(), ws + ".groups", "must be 1, got " + std::to_string(s.groups));
  if (s.relu) fail(r.source(), ws + ".relu", "must be false (the ReLU follows the add)");
  if (s.stride != stride)
    fail(r.source(), ws + ".stride",
         "must be the chain's total stride " + std::to_string(stride) + ", got " + std::to_string(s.stride));
  if (s.out_c != at->c)
    fail(r.source(), ws + ".out",
         "must be the chain's output channels " + std::to_string(at->c) + ", got " + std::to_string(s.out_c));
  if (out.h != at->h || out.w != at->w)  // unreachable with odd kernels: kept as the contract
    fail(r.source(), ws, "output " + shape_text(out) + " differs from the chain's " + shape_text(*at));
  b.weights(s);  // after the checks: a wrong kernel is named as such, not as a tensor's shape
  b.activation(*at, wl);
  return blk;
}

// pool_pixels: the spatial size of every path's last map (what the global average pool sums).
NetSpec build(const json& g, const GraphReader& r, GraphBuilder& b, int* pool_pixels) {
  NetSpec net;
  const json& input = r.list(r.member(g, "input", "graph"), "input", 3);
  if (input.size() != 3) fail(r.source(), "input", "must be [channels, height, width]");
  for (const json& v : input)
    if (!v.is_number_integer() || v.get<int64_t>() < 1 ||
        v.get<int64_t>() > std::max(Limits::side, Limits::channels))
      fail(r.source(), "input", "must be positive integers, height and width <= 8192");
  net.in_c = input[0].get<int>(), net.in_h = input[1].get<int>(), net.in_w = input[2].get<int>();
  if (net.in_h > Limits::side || net.in_w > Limits::side)
    fail(r.source(), "input", "height and width must be <= 8192");

  Shape cur{net.in_c, net.in_h, net.in_w};
  const json& stem = r.list(r.member(g, "stem", "graph"), "stem", Limits::convs_per_block);
  for (size_t i = 0; i < stem.size(); ++i)
    net.stem.push_back(b.conv(stem[i], "stem[" + std::to_string(i) + "]", cur, &cur));

  const json& paths = r.list(r.member(g, "paths", "graph"), "paths", Limits::paths);
  if (paths.empty()) fail(r.source(), "paths", "needs at least one path");
  const json& syncs = r.list(r.member(g, "syncs", "graph"), "syncs", Limits::layers);
  size_t L = 0;
  for (size_t p = 0; p < paths.size(); ++p) {
    const std::string wp = "paths[" + std::to_string(p) + "]";
    r.list(paths[p], wp, Limits::layers);
    if (p == 0) L = paths[0].size();
    if (paths[p].size() != L || L == 0)
      fail(r.source(), wp, "all paths need the same number (>= 1) of layers");
  }
  net.paths.assign(paths.size(), {});
  size_t next_sync = 0;
  std::vector<Shape> at(paths.size(), cur);
  for (size_t l = 0; l < L; ++l) {
    Shape out0{};
    for (size_t p = 0; p < paths.size(); ++p) {
      const std::string wl = "paths[" + std::to_string(p) + "][" + std::to_string(l) + "]";
      net.paths[p].push_back(block(paths[p][l], wl, r, b, &at[p]));
      if (p == 0) out0 = at[0];
      else if (at[p].c != out0.c || at[p].h != out0.h || at[p].w != out0.w)
        fail(r.source(), wl, "output shape differs from paths[0][" + std::to_string(l) + "]");
    }
    if (next_sync < syncs.size()) {
      const std::string ws = "syncs[" + std::to_string(next_sync) + "]";
      const json& s = syncs[next_sync];
      const int after = r.integer(s, "after", ws, 0, static_cast<int>(L) - 1);
      if (after == static_cast<int>(l)) {
        SyncSpec sync;
        sync.after = after;
        const json& merge = r.member(s, "merge", ws);
        if (merge == "conv1x1") {
          sync.concat_conv = true;
          const Shape concat{static_cast<int>(paths.size()) * out0.c, out0.h, out0.w};
          Shape merged{};
          sync.conv = b.conv(r.member(s, "conv", ws), ws + ".conv", concat, &merged);
          if (sync.conv.kernel != 1 || sync.conv.stride != 1 || sync.conv.groups != 1 ||
              merged.c != out0.c)
            fail(r.source(), ws + ".conv", "must be 1x1, stride 1, to the layer's channels");
        } else if (merge != "sum") {
          fail(r.source(), ws + ".merge", "must be \"sum\" or \"conv1x1\"");
        }
        net.syncs.push_back(std::move(sync));
        for (Shape& a : at) a = out0;
        ++next_sync;
      } else if (after < static_cast<int>(l)) {
        fail(r.source(), ws + ".after", "syncs must be sorted by after, without duplicates");
      }
    }
  }
  if (next_sync != syncs.size())
    fail(r.source(), "syncs[" + std::to_string(next_sync) + "]", "unsorted, duplicate or out of range");

  const json& head = r.list(r.member(g, "head", "graph"), "head", Limits::convs_per_block);
  if (head.empty()) fail(r.source(), "head", "needs at least the final FC");
  *pool_pixels = at[0].h * at[0].w;
  int width = static_cast<int>(paths.size()) * at[0].c;
  for (size_t i = 0; i < head.size(); ++i) {
    net.head.push_back(b.fc(head[i], "head[" + std::to_string(i) + "]", width));
    width = net.head.back().out;
  }
  return net;
}

// Format 3: every activation's (scale, zero point) onto the net, checked as
// nasrt.quant.validate does (the names of nasrt/quant/graph.py).
void quantize(NetSpec& net, const Quant& q, int pool_pixels, const std::string& source) {
  struct Layer {
    std::string name, in;
    Precision precision;
    const Int8Weights* w;
    ActQuant* out;  // null: the last FC (float logits)
  };
  std::vector<Layer> layers;
  std::vector<std::string> order;  // every activation, in net order
  std::set<std::string> relu;      // written by a ReLU: zero point 0
  std::vector<std::vector<std::string>> groups;  // tensors that meet at a merge
  std::vector<std::pair<SyncSpec*, std::string>> sums;  // with the sum's first input
  auto tensor = [&](const std::string& k, bool r) {
    order.push_back(k);
    if (r) relu.insert(k);
  };
  auto conv = [&](ConvSpec& c, const std::string& in) {
    layers.push_back({c.name, in, c.precision, &c.q, &c.out_q});
    tensor(c.name, c.relu);
    return c.name;
  };
  tensor("input", false);
  std::string cur = "input";
  for (ConvSpec& c : net.stem) cur = conv(c, cur);
  std::vector<std::string> at(net.paths.size(), cur);
  size_t next_sync = 0;
  // A residual block's add: its output is the block's, its inputs the chain's output and
  // the shortcut's (the projection's, or for the identity the block's input).
  std::vector<std::tuple<BlockSpec*, std::string, std::string, std::string>> adds;  // block, add, a, b
  for (size_t l = 0; l < net.paths[0].size(); ++l) {
    for (size_t p = 0; p < net.paths.size(); ++p) {
      BlockSpec& blk = net.paths[p][l];
      const std::string in = at[p];
      for (ConvSpec& c : blk.convs) at[p] = conv(c, at[p]);
      if (!blk.residual) continue;
      const std::string b = blk.shortcut ? conv(*blk.shortcut, in) : in;
      const std::string add = "paths." + std::to_string(p) + ".blocks." + std::to_string(l) + ".add";
      tensor(add, true);
      adds.emplace_back(&blk, add, at[p], b);
      at[p] = add;
    }
    if (next_sync == net.syncs.size() || net.syncs[next_sync].after != static_cast<int>(l)) continue;
    SyncSpec& s = net.syncs[next_sync++];
    const std::string key = "syncs." + std::to_string(l);
    std::vector<std::string> g;
    if (s.concat_conv) {
      g.push_back(key + ".concat");
      tensor(key + ".concat", false);
    }
    for (const std::string& a : at)
      if (std::find(g.begin(), g.end(), a) == g.end()) g.push_back(a);
    groups.push_back(g);
    if (s.concat_conv) {
      cur = conv(s.conv, key + ".concat");
    } else {
      tensor(key, false);
      sums.emplace_back(&s, at[0]);
      cur = key;
    }
    for (std::string& a : at) a = cur;
  }
  tensor("features", false);
  std::string h = "features";
  for (size_t i = 0; i < net.head.size(); ++i) {
    FcSpec& f = net.head[i];
    const bool last = i + 1 == net.head.size();
    layers.push_back({f.name, h, f.precision, &f.q, last ? nullptr : &f.out_q});
    if (!last) {
      tensor(f.name, f.relu);
      h = f.name;
    }
  }

  auto bad = [&](const std::string& field, const std::string& msg) {
    fail(source, kQuantField, field + ": " + msg);
  };
  auto field = [](const std::string& k) { return "activations[" + py_repr(k) + "]"; };
  const std::set<std::string> known(order.begin(), order.end());
  for (const std::string& k : order)
    if (!q.acts.count(k)) bad(field(k), "missing");
  for (const auto& kv : q.acts)
    if (!known.count(kv.first)) bad(field(kv.first), "not a tensor of the plan");
  for (const std::string& k : relu)
    if (q.acts.at(k).zero_point != 0)
      bad(field(k) + ".zero_point",
          "must be 0 after a ReLU, got " + std::to_string(q.acts.at(k).zero_point));
  for (const auto& g : groups)
    for (size_t i = 1; i < g.size(); ++i) {
      const ActQuant &a = q.acts.at(g[0]), &b = q.acts.at(g[i]);
      if (a.scale != b.scale || a.zero_point != b.zero_point)
        bad(field(g[i]), "must have the scale and zero point of " + py_repr(g[0]) +
                             " (they meet at a merge)");
    }
  for (const std::string& name : q.fp32)
    if (std::none_of(layers.begin(), layers.end(), [&](const Layer& l) { return l.name == name; }))
      bad("fp32", py_repr(name) + " is not a conv or FC of the plan");

  // Every requantisation multiplier, in float32 as the rule computes it (docs/FORMATS.md
  // section 6): a backend cannot run one outside [2^-32, 256).
  auto check_m = [&](float m, const std::string& where) {
    if (!(std::isfinite(m) && m >= 0x1p-32f && m < 256.0f)) {
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.3g", static_cast<double>(m));
      bad(where, std::string("requantisation multiplier ") + buf + " outside [2^-32, 256)");
    }
  };
  for (Layer& l : layers) {
    if (l.out) *l.out = q.acts.at(l.name);
    if (l.precision != Precision::Int8 || !l.out) continue;
    const float sx = q.acts.at(l.in).scale, sy = l.out->scale;
    for (float sw : l.w->weight_scale) check_m(sx * sw / sy, "layers[" + py_repr(l.name) + "]");
  }
  for (auto& [blk, add, a, b] : adds) {
    blk->add_q = q.acts.at(add);
    check_m(q.acts.at(a).scale / blk->add_q.scale, field(add) + " (Ma, from " + py_repr(a) + ")");
    check_m(q.acts.at(b).scale / blk->add_q.scale, field(add) + " (Mb, from " + py_repr(b) + ")");
  }
  for (auto& [sync, src] : sums) {
    sync->out_q = q.acts.at("syncs." + std::to_string(sync->after));
    check_m(q.acts.at(src).scale / sync->out_q.scale, field("syncs." + std::to_string(sync->after)));
  }
  net.quantized = true;
  net.input_q = q.acts.at("input");
  net.features_q = q.acts.at("features");
  for (const std::string& src : std::set<std::string>(at.begin(), at.end()))
    check_m(q.acts.at(src).scale / (static_cast<float>(pool_pixels) * net.features_q.scale),
            field("features") + " (pool of " + py_repr(src) + ")");
}

struct Dtype {
  const char* code;  // safetensors
  size_t size;
  const char* name;  // numpy's, as the Python reader says it
};
constexpr Dtype kDtypes[] = {
    {"F64", 8, "float64"}, {"I64", 8, "int64"},   {"U64", 8, "uint64"}, {"F32", 4, "float32"},
    {"I32", 4, "int32"},   {"U32", 4, "uint32"},  {"F16", 2, "float16"}, {"BF16", 2, "bfloat16"},
    {"I16", 2, "int16"},   {"U16", 2, "uint16"},  {"I8", 1, "int8"},     {"U8", 1, "uint8"},
    {"BOOL", 1, "bool"},   {"F8_E4M3", 1, "float8_e4m3"}, {"F8_E5M2", 1, "float8_e5m2"}};

const Dtype* find_dtype(const std::string& code) {
  for (const Dtype& d : kDtypes)
    if (code == d.code) return &d;
  return nullptr;
}

// CRC-32 (zlib's polynomial), as Python's zlib.crc32 writes it at export.
uint32_t crc32(const uint8_t* p, size_t n) {
  static const auto table = [] {
    std::vector<uint32_t> t(256);
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

}  // namespace

bool json_depth_within(const char* begin, const char* end, int max_depth) {
  int depth = 0;
  bool in_string = false;
  for (const char* p = begin; p < end; ++p) {
    const char ch = *p;
    if (in_string) {
      if (ch == '\\') ++p;  // the escaped character cannot end the string
      else if (ch == '"') in_string = false;
    } else if (ch == '"') {
      in_string = true;
    } else if (ch == '[' || ch == '{') {
      if (++depth > max_depth) return false;
    } else if (ch == ']' || ch == '}') {
      if (--depth < 0) return true;  // unbalanced: the parser rejects it at this byte
    }
  }
  return true;
}

uint64_t fnv1a64(const uint8_t* data, size_t size, uint64_t h) {
  for (size_t i = 0; i < size; ++i) h = (h ^ data[i]) * 1099511628211ull;
  return h;
}

NetSpec netspec_from_graph(const std::string& graph_json, const TensorLookup& tensors,
                           const std::string& source) {
  const json g = parse_json(graph_json.data(), graph_json.data() + graph_json.size(), source,
                            "metadata " NASRT_KEY_GRAPH);
  GraphReader reader(source);
  const RawLookup raw = [&](const std::string& name, const std::vector<int64_t>& shape,
                            const std::string&, const std::string&) { return tensors(name, shape); };
  GraphBuilder builder(reader, raw, nullptr);
  int pool_pixels = 0;
  return build(g, reader, builder, &pool_pixels);
}

LoadedModel parse_model(const uint8_t* data, size_t size, const std::string& source) {
  const std::string unreadable = "not a readable safetensors model file";
  if (size < 8) throw ModelError(source + ": " + unreadable + " (shorter than 8 bytes)");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | data[i];  // little-endian u64
  if (n > Limits::header_bytes || n > size - 8)
    throw ModelError(source + ": " + unreadable + " (header length " + std::to_string(n) +
                     " exceeds the file or the 64 MiB limit)");
  const char* hb = reinterpret_cast<const char*>(data + 8);
  json header;
  try {
    header = parse_json(hb, hb + n, source, "header");
  } catch (const ModelError& e) {
    throw ModelError(source + ": " + unreadable + " (" + e.what() + ")");
  }
  if (!header.is_object()) throw ModelError(source + ": " + unreadable + " (header not an object)");
  const uint8_t* base = data + 8 + n;
  const uint64_t data_size = size - 8 - n;

  LoadedModel m;
  struct Entry {
    std::string dtype;
    std::vector<int64_t> shape;
    const uint8_t* ptr;
  };
  std::map<std::string, Entry> entries;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const json& v = it.value();
    if (it.key() == "__metadata__") {
      if (!v.is_object()) fail(source, "__metadata__", "must be an object of strings");
      for (auto kv = v.begin(); kv != v.end(); ++kv) {
        if (!kv.value().is_string()) fail(source, "metadata " + kv.key(), "must be a string");
        m.metadata[kv.key()] = kv.value().get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor " + it.key();
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") ||
        !v.contains("data_offsets") || !v["dtype"].is_string() || !v["shape"].is_array() ||
        !v["data_offsets"].is_array() || v["data_offsets"].size() != 2 || v["shape"].size() > 8)
      throw ModelError(source + ": " + unreadable + " (" + where + ": bad entry)");
    Entry e;
    e.dtype = v["dtype"].get<std::string>();
    uint64_t count = 1;
    for (const json& d : v["shape"]) {
      if (!d.is_number_unsigned() || d.get<uint64_t>() > (1ull << 40))
        throw ModelError(source + ": " + unreadable + " (" + where + ": bad shape)");
      e.shape.push_back(d.get<int64_t>());
      count *= d.get<uint64_t>();
      if (count > (1ull << 40)) throw ModelError(source + ": " + unreadable + " (" + where + ": bad shape)");
    }
    const json& off = v["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      throw ModelError(source + ": " + unreadable + " (" + where + ": bad data_offsets)");
    const uint64_t b = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    const Dtype* dt = find_dtype(e.dtype);
    const size_t es = dt ? dt->size : 0;
    if (es == 0 || b > end || end > data_size || end - b != count * es)
      throw ModelError(source + ": " + unreadable + " (" + where +
                       ": data_offsets do not match its dtype, shape or the file size)");
    e.ptr = base + b;
    entries.emplace(it.key(), std::move(e));
  }

  auto meta = [&](const std::string& key) -> const std::string* {
    auto it = m.metadata.find(key);
    return it == m.metadata.end() ? nullptr : &it->second;
  };
  const std::string* fmt = meta(NASRT_KEY_FORMAT);
  if (!fmt || *fmt != kModelFormat)
    fail(source, "metadata " NASRT_KEY_FORMAT,
         std::string("expected '") + kModelFormat + "', got " + (fmt ? "'" + *fmt + "'" : "None") +
             " (not a nasrt model)");
  const std::string* ver = meta(NASRT_KEY_VERSION);
  if (ver && *ver == "1")
    fail(source, "metadata " NASRT_KEY_VERSION,
         "format 1 predates the native loader (no lowered graph): re-export it with nasrt >= "
         "0.2 (`nasrt upgrade " + source + "`)");
  if (!ver || (*ver != std::to_string(kModelVersion) && *ver != std::to_string(kModelVersionInt8)))
    fail(source, "metadata " NASRT_KEY_VERSION,
         "unsupported version " + (ver ? "'" + printable(*ver) + "'" : std::string("None")) +
             " (this reader knows " + std::to_string(kModelVersion) + " and " +
             std::to_string(kModelVersionInt8) + ")");
  const std::string* graph = meta(NASRT_KEY_GRAPH);
  if (!graph) fail(source, "metadata " NASRT_KEY_GRAPH, "missing");
  std::unique_ptr<Quant> quant;
  if (*ver == std::to_string(kModelVersionInt8)) {
    const std::string* q = meta(NASRT_KEY_QUANT);
    if (!q) fail(source, kQuantField, "missing");
    quant = std::make_unique<Quant>(parse_quant(*q, source));
  }

  const RawLookup lookup = [&](const std::string& name, const std::vector<int64_t>& shape,
                               const std::string& dtype, const std::string& why) {
    const Dtype* want = find_dtype(dtype);
    auto it = entries.find(name);
    if (it == entries.end())
      throw ModelError(source + ": tensor " + name + ": missing (expected " +
                       (why.empty() ? "" : std::string(want->name) + " of ") + "shape " +
                       shape_str(shape) + ")");
    if (it->second.dtype != dtype)
      throw ModelError(source + ": tensor " + name + ": dtype " +
                       find_dtype(it->second.dtype)->name + ", expected " + want->name +
                       (why.empty() ? "" : " (" + why + ")"));
    if (it->second.shape != shape)
      throw ModelError(source + ": tensor " + name + ": shape " + shape_str(it->second.shape) +
                       ", expected " + shape_str(shape));
    return static_cast<const void*>(it->second.ptr);
  };
  GraphReader reader(source);
  GraphBuilder builder(reader, lookup, quant.get());
  const json g = parse_json(graph->data(), graph->data() + graph->size(), source,
                            "metadata " NASRT_KEY_GRAPH);
  int pool_pixels = 0;
  m.net = build(g, reader, builder, &pool_pixels);
  for (const auto& kv : entries)
    if (!builder.used().count(kv.first))
      throw ModelError(source + ": tensor " + kv.first + ": not part of the plan");
  if (quant) quantize(m.net, *quant, pool_pixels, source);
  // Last, so a structural error is reported as such rather than as a bad checksum.
  const std::string* crc = meta(NASRT_KEY_DATA_CRC32);
  char have[9];
  std::snprintf(have, sizeof have, "%08x", crc32(base, data_size));
  if (!crc) fail(source, "metadata " NASRT_KEY_DATA_CRC32, "missing");
  if (*crc != have)
    fail(source, "metadata " NASRT_KEY_DATA_CRC32,
         "tensor data checksum mismatch (file altered or damaged)");
  m.content_hash = fnv1a64(data, size);
  return m;
}

LoadedModel load_model(const std::string& path) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below.
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    if (errno == EISDIR) throw ModelError(path + ": is a directory, expected a model.nasrt file");
    throw ModelError(path + ": no such model file (or not readable)");
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st;
  if (::fstat(fd, &st) != 0) throw ModelError(path + ": cannot read the model file");
  if (S_ISDIR(st.st_mode)) throw ModelError(path + ": is a directory, expected a model.nasrt file");
  if (!S_ISREG(st.st_mode))
    throw ModelError(path + ": not a regular file, expected a model.nasrt file");
  // Never more than the file holds: its size, read in full (a shorter read is an error).
  std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size));
  size_t got = 0;
  while (got < bytes.size()) {
    const ssize_t n = ::read(fd, bytes.data() + got, bytes.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw ModelError(path + ": cannot read the model file (shorter than its size)");
    got += static_cast<size_t>(n);
  }
  return parse_model(bytes.data(), bytes.size(), path);
}

std::string content_hash_hex(const LoadedModel& model) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(model.content_hash));
  return std::string(buf);
}

}  // namespace nasrt
