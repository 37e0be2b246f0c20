// The lowered net: what the model loader builds, the schedule compiles and the
// executor runs (nasrt/contract/lowering.py writes it as the model file's nasrt.graph).
// One ConvSpec -> ConvGeom and one walk over the net in execution order, with
// every shape resolved and checked, for all of them.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace nasrt {

// A convolution with folded BN: weight OIHW [out_c, in_c/groups, k, k], bias [out_c].
struct ConvSpec {
  std::string name;  // tensor prefix in the model file: the conv's identity for tuning
  int in_c = 0, out_c = 0, kernel = 1, stride = 1, groups = 1;
  bool relu = true;
  std::vector<float> weight, bias;
};

struct FcSpec {
  std::string name;
  int in = 0, out = 0;
  bool relu = false;
  std::vector<float> weight, bias;  // [out, in], [out]
};

// A kept sync point after block `after`: sum of the paths, or a 1x1 conv over
// their channel concatenation (path order).
struct SyncSpec {
  int after = 0;
  bool concat_conv = false;
  ConvSpec conv;  // used when concat_conv
};

// The net as the executor sees it: every block already lowered to a chain of
// convs (conv = 1, sepconv = depthwise + pointwise), as the model file's
// nasrt.graph holds it (nasrt/contract/lowering.py writes it, model.cpp reads it).
struct NetSpec {
  int in_c = 0, in_h = 0, in_w = 0;
  std::vector<ConvSpec> stem;                           // empty: no stem
  std::vector<std::vector<std::vector<ConvSpec>>> paths;  // [path][layer] -> conv chain
  std::vector<SyncSpec> syncs;                          // sorted by `after`
  std::vector<FcSpec> head;                             // hidden FCs (ReLU) then the final FC
};

// Conv c over an (h, w) input, same padding; pixels of in_stride / out_stride
// floats (a channel slice of a wider buffer: the concat of a conv1x1 sync).
ConvGeom conv_geom(const ConvSpec& c, int h, int w, int in_stride, int out_stride);
// Dense input and output.
inline ConvGeom conv_geom(const ConvSpec& c, int h, int w) {
  return conv_geom(c, h, w, c.in_c, c.out_c);
}

// A feature map: channels and spatial size.
struct Shape {
  int c = 0, h = 0, w = 0;
};

// Which part of the net a conv (or a scheduled op) computes.
struct NetPart {
  enum Kind { Stem = 0, Conv = 1, Merge = 2 };
  int kind = Conv;
  int path = -1;   // Conv: the path
  int layer = -1;  // Conv, Merge: the layer (block); Stem: the stem conv's index
  int conv = 0;    // Conv: index in the block's conv chain
};

// A conv as the walk meets it (Stem or Conv; a conv1x1 sync is met by sync()).
struct ConvSite : NetPart {
  const ConvSpec* spec = nullptr;
  Shape in, out;
  // The block's last conv before a conv1x1 sync: its output is the path's part
  // of the merge's concat input.
  bool to_concat = false;
};

// Callbacks of walk(), in execution order: the stem convs, then per layer
// every path's conv chain (path order) and the layer's sync if kept, then the
// head's FCs.
struct NetVisitor {
  virtual ~NetVisitor() = default;
  virtual void conv(const ConvSite&) {}
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
// stem's, the paths' and each conv1x1 sync's merge conv (as given: unpadded).
void for_each_conv(const NetSpec& net, const std::function<void(const ConvSpec&, int h, int w)>& f);

}  // namespace nasrt
