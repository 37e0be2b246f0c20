// The lowered net: what the model loader builds, the schedule compiles and the
// executor runs (nasrt/contract/lowering.py writes it as the model file's nasrt.graph).
// One ConvSpec -> ConvGeom and one walk over the net in execution order, with
// every shape resolved and checked, for all of them.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace nasrt {

// One activation tensor of a quantised net (docs/FORMATS.md section 6): real =
// scale * (q - zero_point), q u8.
struct ActQuant {
  float scale = 1.0f;
  int zero_point = 0;
};

// A layer's int8 form (model format 3): s8 weights in the float tensor's layout,
// symmetric per output channel, and the int32 bias in units of sx * weight_scale[c]
// (sx: the scale of the tensor the layer reads).
struct Int8Weights {
  std::vector<int8_t> weight;
  std::vector<float> weight_scale;  // [out]
  std::vector<int32_t> bias;        // [out]
};

// A convolution with folded BN: weight OIHW [out_c, in_c/groups, k, k], bias [out_c].
// In a quantised net (NetSpec::quantized) precision says which form it computes in
// (Int8: q holds the weights and weight/bias are empty) and out_q is its output tensor's
// (scale, zero point), whatever the precision: an fp32 conv's output is quantised by its
// int8 consumers with it (the input rule).
struct ConvSpec {
  std::string name;  // tensor prefix in the model file: the conv's identity for tuning
  int in_c = 0, out_c = 0, kernel = 1, stride = 1, groups = 1;
  bool relu = true;
  std::vector<float> weight, bias;
  Precision precision = Precision::Fp32;
  Int8Weights q;
  ActQuant out_q;
};

// weight [out, in], bias [out]; precision, q and out_q as for ConvSpec (the last FC's
// out_q is unused: its int8 form writes float logits, float32(acc) * (sx * sw[c])).
struct FcSpec {
  std::string name;
  int in = 0, out = 0;
  bool relu = false;
  std::vector<float> weight, bias;  // [out, in], [out]
  Precision precision = Precision::Fp32;
  Int8Weights q;
  ActQuant out_q;
};

// A kept sync point after block `after`: sum of the paths, or a 1x1 conv over
// their channel concatenation (path order). In a quantised net a sum is always int8
// (its inputs share one (scale, zero point), out_q is the sum's); the producers into a
// concat write the concat's codes with their own out_q (all equal) and the merge conv
// is a ConvSpec like any other.
struct SyncSpec {
  int after = 0;
  bool concat_conv = false;
  ConvSpec conv;  // used when concat_conv
  ActQuant out_q;  // a quantised net's sum merge
};

// One block of a path: its conv chain (conv = 1 unit, sepconv = depthwise + pointwise,
// dconv = two kxk convs) and, for a residual block (plan "residual": true), the shortcut
// and the add: output = ReLU(chain(x) + S(x)), the chain's last unit without ReLU, S the
// identity (no shortcut) or the 1x1 projection `shortcut` (stride = the chain's, no ReLU).
// In a quantised net add_q is the add's output (paths.<p>.blocks.<l>.add): the block's output.
struct BlockSpec {
  std::vector<ConvSpec> convs;
  bool residual = false;
  std::optional<ConvSpec> shortcut;  // residual only; none: the identity
  ActQuant add_q;
  BlockSpec() = default;
  explicit BlockSpec(std::vector<ConvSpec> chain) : convs(std::move(chain)) {}  // a plain block
  // The (scale, zero point) of the block's output: the add's, or the chain's last unit's.
  const ActQuant& out_q() const { return residual ? add_q : convs.back().out_q; }
};

// The net as the executor sees it: every block already lowered to a chain of
// convs, as the model file's nasrt.graph holds it (nasrt/contract/lowering.py writes it,
// model.cpp reads it).
struct NetSpec {
  int in_c = 0, in_h = 0, in_w = 0;
  std::vector<ConvSpec> stem;                 // empty: no stem
  std::vector<std::vector<BlockSpec>> paths;  // [path][layer]
  std::vector<SyncSpec> syncs;                // sorted by `after`
  std::vector<FcSpec> head;                   // hidden FCs (ReLU) then the final FC
  // A quantised net (model format 3): every tensor has its (scale, zero point), the global
  // average pool is int8 into `features`, each conv and FC has its precision.
  bool quantized = false;
  ActQuant input_q, features_q;
};

// Conv c over an (h, w) input, same padding; pixels of in_stride / out_stride
// floats (a channel slice of a wider buffer: the concat of a conv1x1 sync).
ConvGeom conv_geom(const ConvSpec& c, int h, int w, int in_stride, int out_stride);
// Dense input and output.
inline ConvGeom conv_geom(const ConvSpec& c, int h, int w) {
  return conv_geom(c, h, w, c.in_c, c.out_c);
}

// The requantisation of int8 conv c reading a tensor quantised by xq (FORMATS.md section 6):
// M[c] = (sx * sw[c]) / sy in float32. The executor and the latency probes both use it.
Int8Conv int8_params(const ConvSpec& c, const ActQuant& xq);

// A feature map: channels and spatial size.
struct Shape {
  int c = 0, h = 0, w = 0;
};

// Which part of the net a conv (or a scheduled op) computes.
// Shortcut and Add belong to a residual block: its 1x1 projection (run after the chain, on
// the block's input) and the add + ReLU (split by output rows like a conv).
struct NetPart {
  enum Kind { Stem = 0, Conv = 1, Merge = 2, Shortcut = 3, Add = 4 };
  int kind = Conv;
  int path = -1;   // Conv, Shortcut, Add: the path
  int layer = -1;  // Conv, Shortcut, Add, Merge: the layer (block); Stem: the stem conv's index
  int conv = 0;    // Conv: index in the block's conv chain
};

// A conv as the walk meets it (Stem, Conv or Shortcut; a conv1x1 sync is met by sync()).
struct ConvSite : NetPart {
  const ConvSpec* spec = nullptr;
  Shape in, out;
  // The block's output (its last conv, not in a residual block) before a conv1x1 sync:
  // the path's part of the merge's concat input.
  bool to_concat = false;
};

// A residual block's add as the walk meets it, after its chain and shortcut: ReLU(chain +
// shortcut) of shape `out` (also the shape of the block's input for the identity).
struct AddSite : NetPart {
  const BlockSpec* block = nullptr;
  Shape out;
  bool to_concat = false;  // as ConvSite's: the add's output is the block's
};

// Callbacks of walk(), in execution order: the stem convs, then per layer
// every path's block (path order: its conv chain, for a residual block then its
// projection and its add) and the layer's sync if kept, then the head's FCs.
struct NetVisitor {
  virtual ~NetVisitor() = default;
  virtual void conv(const ConvSite&) {}
  virtual void add(const AddSite&) {}
  // The kept sync `index` after its layer; out: the shape of each path's (and the merge's) output.
  virtual void sync(int /*index*/, const SyncSpec&, Shape) {}
  virtual void fc(int /*index*/, const FcSpec&) {}
};

// Input shape, at least one path, every path of the same L >= 1 layers: throws
// std::invalid_argument naming the part.
void check_net(const NetSpec& net);
// check_net, then visits the net, checking every conv, sync and FC against the
// shapes before it (std::invalid_argument naming the part, e.g.
// "paths[1][2].conv[0]: bad kernel/stride") before visiting it.
void walk(const NetSpec& net, NetVisitor& v);
// Every conv of the net once, in execution order, with its input size: the
// stem's, the paths' (a residual block's projection after its chain) and each conv1x1
// sync's merge conv (as given: unpadded).
void for_each_conv(const NetSpec& net, const std::function<void(const ConvSpec&, int h, int w)>& f);

}  // namespace nasrt
