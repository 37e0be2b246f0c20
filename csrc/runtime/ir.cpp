// The net's one geometry and one walk (ir.h).
#include "runtime/ir.h"

#include <stdexcept>

namespace nasrt {
namespace {

[[noreturn]] void bad(const std::string& what) { throw std::invalid_argument(what); }

// The weights of a layer in its precision: float, or (an int8 layer of a quantised net) s8
// with a scale and an int32 bias per output.
void check_weights(const std::string& name, Precision p, bool quantized, size_t wsize, int out,
                   size_t w, size_t b, const Int8Weights& q) {
  if (p == Precision::Int8) {
    if (!quantized) bad(name + ": int8 in a net that is not quantised");
    if (q.weight.size() != wsize) bad(name + ": int8 weight has wrong size");
    if (q.weight_scale.size() != static_cast<size_t>(out) || q.bias.size() != static_cast<size_t>(out))
      bad(name + ": int8 weight_scale or bias has wrong size");
    return;
  }
  if (w != wsize) bad(name + ": weight has wrong size");
  if (b != static_cast<size_t>(out)) bad(name + ": bias has wrong size");
}

void check_conv(const ConvSpec& c, int in_c, const std::string& name, bool quantized) {
  if (c.in_c != in_c)
    bad(name + ": expects " + std::to_string(c.in_c) + " input channels, gets " +
        std::to_string(in_c));
  if (c.groups < 1 || c.in_c % c.groups || c.out_c % c.groups || c.out_c < 1)
    bad(name + ": channels not divisible by groups");
  if (c.kernel < 1 || c.kernel % 2 == 0 || c.stride < 1) bad(name + ": bad kernel/stride");
  const size_t wsize = static_cast<size_t>(c.out_c) * (c.in_c / c.groups) * c.kernel * c.kernel;
  check_weights(name, c.precision, quantized, wsize, c.out_c, c.weight.size(), c.bias.size(), c.q);
}

}  // namespace

Int8Conv int8_params(const ConvSpec& c, const ActQuant& xq) {
  Int8Conv q{xq.zero_point, c.out_q.zero_point, c.q.bias, std::vector<float>(c.out_c)};
  for (int o = 0; o < c.out_c; ++o) q.m[o] = (xq.scale * c.q.weight_scale[o]) / c.out_q.scale;
  return q;
}

ConvGeom conv_geom(const ConvSpec& c, int h, int w, int in_stride, int out_stride) {
  ConvGeom g;
  g.in_h = h;
  g.in_w = w;
  g.kernel = c.kernel;
  g.stride = c.stride;
  g.set_same_pad();
  g.groups = c.groups;
  g.group_in = c.in_c / c.groups;
  g.group_out = c.out_c / c.groups;
  g.in_stride = in_stride;
  g.out_stride = out_stride;
  g.relu = c.relu;
  return g;
}

void check_net(const NetSpec& net) {
  if (net.in_c < 1 || net.in_h < 1 || net.in_w < 1) bad("input: bad shape");
  if (net.paths.empty()) bad("paths: need at least one path");
  for (const auto& p : net.paths)
    if (p.size() != net.paths[0].size() || p.empty()) bad("paths: all paths need the same L >= 1");
}

void walk(const NetSpec& net, NetVisitor& v) {
  check_net(net);
  const int P = static_cast<int>(net.paths.size());
  Shape shared{net.in_c, net.in_h, net.in_w};
  for (size_t i = 0; i < net.stem.size(); ++i) {
    const ConvSpec& c = net.stem[i];
    check_conv(c, shared.c, "stem[" + std::to_string(i) + "]", net.quantized);
    const int oh = conv_out_size(shared.h, c.kernel, c.stride, c.kernel / 2);
    const int ow = conv_out_size(shared.w, c.kernel, c.stride, c.kernel / 2);
    if (oh < 1 || ow < 1) bad("stem: output would be empty");
    ConvSite site;
    site.kind = NetPart::Stem;
    site.layer = static_cast<int>(i);
    site.spec = &c;
    site.in = shared;
    site.out = Shape{c.out_c, oh, ow};
    v.conv(site);
    shared = site.out;
  }

  const size_t L = net.paths[0].size();
  std::vector<Shape> cur(P, shared);
  size_t next_sync = 0;
  for (size_t l = 0; l < L; ++l) {
    const SyncSpec* sync = nullptr;
    if (next_sync < net.syncs.size() && net.syncs[next_sync].after == static_cast<int>(l))
      sync = &net.syncs[next_sync++];
    Shape out{-1, 0, 0};
    for (int p = 0; p < P; ++p) {
      const BlockSpec& block = net.paths[p][l];
      const auto& chain = block.convs;
      const std::string name = "paths[" + std::to_string(p) + "][" + std::to_string(l) + "]";
      if (chain.empty()) bad(name + ": empty block");
      const bool to_concat = sync && sync->concat_conv;
      const Shape block_in = cur[p];
      Shape f = block_in;
      for (size_t j = 0; j < chain.size(); ++j) {
        const ConvSpec& c = chain[j];
        check_conv(c, f.c, name + ".conv[" + std::to_string(j) + "]", net.quantized);
        const int h = conv_out_size(f.h, c.kernel, c.stride, c.kernel / 2);
        const int w = conv_out_size(f.w, c.kernel, c.stride, c.kernel / 2);
        if (h < 1 || w < 1) bad(name + ": output would be empty");
        ConvSite site;
        site.path = p, site.layer = static_cast<int>(l), site.conv = static_cast<int>(j);
        site.spec = &c;
        site.in = f;
        site.out = Shape{c.out_c, h, w};
        site.to_concat = j + 1 == chain.size() && to_concat && !block.residual;
        v.conv(site);
        f = site.out;
      }
      if (block.residual) {
        if (chain.back().relu)
          bad(name + ".conv[" + std::to_string(chain.size() - 1) +
              "]: the last unit of a residual chain has no ReLU (it follows the add)");
        if (block.shortcut) {
          const ConvSpec& s = *block.shortcut;
          const std::string sn = name + ".shortcut";
          check_conv(s, block_in.c, sn, net.quantized);
          if (s.kernel != 1 || s.groups != 1 || s.relu || s.out_c != f.c ||
              conv_out_size(block_in.h, 1, s.stride, 0) != f.h ||
              conv_out_size(block_in.w, 1, s.stride, 0) != f.w)
            bad(sn + ": must be a 1x1 conv without ReLU to the chain's output shape");
          ConvSite site;
          site.kind = NetPart::Shortcut;
          site.path = p, site.layer = static_cast<int>(l);
          site.spec = &s;
          site.in = block_in;
          site.out = f;
          v.conv(site);
        } else if (block_in.c != f.c || block_in.h != f.h || block_in.w != f.w) {
          bad(name + ".shortcut: the identity needs the chain to keep the input's shape");
        }
        AddSite add;
        add.kind = NetPart::Add;
        add.path = p, add.layer = static_cast<int>(l);
        add.block = &block;
        add.out = f;
        add.to_concat = to_concat;
        v.add(add);
      } else if (block.shortcut) {
        bad(name + ".shortcut: only a residual block has one");
      }
      if (out.c < 0) {
        out = f;
      } else if (f.c != out.c || f.h != out.h || f.w != out.w) {
        bad(name + ": output shape differs from paths[0] at this layer");
      }
      cur[p] = f;
    }
    if (!sync) continue;
    const std::string name = "syncs[" + std::to_string(next_sync - 1) + "]";
    if (sync->concat_conv) {
      check_conv(sync->conv, P * out.c, name, net.quantized);
      if (sync->conv.kernel != 1 || sync->conv.stride != 1 || sync->conv.groups != 1 ||
          sync->conv.out_c != out.c)
        bad(name + ": merge conv must be 1x1, stride 1, to the layer's channels");
    }
    v.sync(static_cast<int>(next_sync - 1), *sync, out);
  }
  if (next_sync != net.syncs.size()) bad("syncs: unsorted, duplicate or out of range");

  // Head after the final join: pool each path, concat, FCs.
  if (net.head.empty()) bad("head: needs at least the final FC");
  int width = P * cur[0].c;
  for (size_t i = 0; i < net.head.size(); ++i) {
    const FcSpec& fc = net.head[i];
    const std::string name = "head[" + std::to_string(i) + "]";
    if (fc.in != width)
      bad(name + ": expects " + std::to_string(fc.in) + " inputs, gets " + std::to_string(width));
    check_weights(name, fc.precision, net.quantized, static_cast<size_t>(fc.in) * fc.out, fc.out,
                  fc.weight.size(), fc.bias.size(), fc.q);
    v.fc(static_cast<int>(i), fc);
    width = fc.out;
  }
}

void for_each_conv(const NetSpec& net, const std::function<void(const ConvSpec&, int, int)>& f) {
  struct Convs : NetVisitor {
    const std::function<void(const ConvSpec&, int, int)>& f;
    explicit Convs(const std::function<void(const ConvSpec&, int, int)>& fn) : f(fn) {}
    void conv(const ConvSite& s) override { f(*s.spec, s.in.h, s.in.w); }
    void sync(int, const SyncSpec& s, Shape out) override {
      if (s.concat_conv) f(s.conv, out.h, out.w);
    }
  } convs(f);
  walk(net, convs);
}

}  // namespace nasrt
