// Compile and balance (schedule.h): phases and shares from the net alone.
#include "runtime/schedule.h"

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

namespace nasrt {
namespace {

// Share p of n units split into `shares` near-equal contiguous ranges.
std::pair<int, int> share_range(int n, int p, int shares) {
  return {static_cast<int>(static_cast<int64_t>(n) * p / shares),
          static_cast<int>(static_cast<int64_t>(n) * (p + 1) / shares)};
}

// Static time estimate of one conv (ns), calibrated on XNNPACK on an AVX-512
// host (docs/DESIGN.md): ~55 MACs/ns once a group has >= 16 output channels,
// proportionally less below; depthwise is memory-bound (~6 MACs/ns). Static,
// so the schedule depends on the plan alone and every thread count runs the
// same ops (bitwise-equal outputs).
double estimate_ns(const ConvSpec& c, int h, int w) {
  const double oh = conv_out_size(h, c.kernel, c.stride, c.kernel / 2);
  const double ow = conv_out_size(w, c.kernel, c.stride, c.kernel / 2);
  const int gin = c.in_c / c.groups, gout = c.out_c / c.groups;
  const double macs = oh * ow * c.out_c * gin * c.kernel * c.kernel;
  const double rate = gin == 1 && gout == 1 ? 6.0 : 55.0 * std::min(1.0, gout / 16.0);
  return 300.0 + macs / rate;
}

// A residual add of n elements (ns): a guess of the order of a depthwise conv's per-tap
// rate, not measured (elementwise over three tensors, memory-bound).
double estimate_add_ns(const Shape& out) {
  return 300.0 + static_cast<double>(out.c) * out.h * out.w / 6.0;
}

// A phase join plus a split op's fixed costs, in the units of estimate_ns.
constexpr double kSplitOverheadNs = 1500.0;

using Phase = std::vector<std::vector<OpTag>>;  // [share] -> ops

class Compiler : public NetVisitor {
 public:
  Compiler(int paths, bool balance, const SplitExact& split_exact)
      : paths_(paths), balance_(balance), split_exact_(split_exact), segment_(paths) {}

  void conv(const ConvSite& s) override {
    OpTag tag;
    static_cast<NetPart&>(tag) = s;
    if (s.kind == NetPart::Stem) {  // every stem conv split by output rows over the P shares
      Phase phase(paths_);
      add_split(phase, s.out.h, tag);
      phases_.push_back(std::move(phase));
    } else {  // a path's conv or a residual block's projection
      segment_[s.path].push_back(Unit{s.out.h, estimate_ns(*s.spec, s.in.h, s.in.w), tag});
    }
  }

  void add(const AddSite& s) override {
    OpTag tag;
    static_cast<NetPart&>(tag) = s;
    segment_[s.path].push_back(Unit{s.out.h, estimate_add_ns(s.out), tag});
  }

  void sync(int, const SyncSpec& sync, Shape out) override {
    flush_segment();
    Phase merge(paths_);
    OpTag mtag;
    mtag.kind = OpTag::Merge;
    mtag.layer = sync.after;
    if (sync.concat_conv) {
      add_split(merge, out.h, mtag);
    } else {
      const int n = out.c * out.h * out.w;
      for (int p = 0; p < paths_; ++p) {
        auto [b, e] = share_range(n, p, paths_);
        mtag.first = b, mtag.rows = e - b, mtag.total_rows = n;
        if (e > b) merge[p].push_back(mtag);
      }
    }
    phases_.push_back(std::move(merge));
  }

  Schedule finish() {
    flush_segment();
    return std::move(phases_);
  }

 private:
  // An op of one path inside a segment (a conv, a projection or a residual add), not yet
  // placed in a phase.
  struct Unit {
    int out_h;
    double cost_ns;  // static estimate, see estimate_ns
    OpTag tag;
  };

  // Adds the op `tag` of oh output rows to `phase`, split by output rows over all shares:
  // each share writes its own contiguous block, so threads never share a cache line.
  void add_split(Phase& phase, int oh, OpTag tag) {
    tag.total_rows = oh;
    // A path conv that balancing splits only with threads > 1: where its pieces are
    // not bitwise the whole conv (oneDNN may block a piece differently), it runs
    // whole on its own path's share, so 1 and P threads stay bitwise equal. Stem
    // and merge convs are split the same way on every thread count; a residual add
    // is elementwise, its pieces always its rows.
    const bool path_conv = tag.kind == OpTag::Conv || tag.kind == OpTag::Shortcut;
    if (path_conv && split_exact_ && !split_exact_(tag)) {
      tag.rows = oh;
      phase[tag.path].push_back(tag);
      return;
    }
    for (int p = 0; p < paths_; ++p) {
      auto [r0, r1] = share_range(oh, p, paths_);
      tag.first = r0, tag.rows = r1 - r0;
      if (r1 > r0) phase[p].push_back(tag);
    }
  }

  // Turns the segment (per-path op chains between two phase joins) into phases:
  // leading ops of the most loaded path become row-split phases that every
  // share helps with, while that shortens the estimated critical path.
  void flush_segment() {
    const int P = paths_;
    auto& seg = segment_;
    std::vector<size_t> next(P, 0);
    std::vector<double> rem(P, 0.0);
    for (int p = 0; p < P; ++p)
      for (const Unit& u : seg[p]) rem[p] += u.cost_ns;
    while (balance_ && P > 1) {
      const int m = static_cast<int>(std::max_element(rem.begin(), rem.end()) - rem.begin());
      if (next[m] == seg[m].size()) break;
      const Unit& u = seg[m][next[m]];
      double others = 0.0;
      for (int p = 0; p < P; ++p)
        if (p != m) others = std::max(others, rem[p]);
      const double before = rem[m];
      const double after = u.cost_ns / P + kSplitOverheadNs + std::max(rem[m] - u.cost_ns, others);
      if (after >= before) break;
      Phase split(P);
      add_split(split, u.out_h, u.tag);
      phases_.push_back(std::move(split));
      rem[m] -= u.cost_ns;
      ++next[m];
    }
    Phase rest(P);
    bool any = false;
    for (int p = 0; p < P; ++p) {
      for (size_t i = next[p]; i < seg[p].size(); ++i) {
        const Unit& u = seg[p][i];
        OpTag tag = u.tag;
        tag.rows = tag.total_rows = u.out_h;
        rest[p].push_back(tag);
        any = true;
      }
      seg[p].clear();
    }
    if (any) phases_.push_back(std::move(rest));
  }

  const int paths_;
  const bool balance_;
  const SplitExact& split_exact_;
  std::vector<std::vector<Unit>> segment_;
  Schedule phases_;
};

}  // namespace

Schedule compile_schedule(const NetSpec& net, int threads, bool balance,
                          const SplitExact& split_exact) {
  check_net(net);
  const int paths = static_cast<int>(net.paths.size());
  if (threads < 1 || threads > paths)
    throw std::invalid_argument("threads: must be in 1.." + std::to_string(paths) +
                                " (one thread per path at most)");
  // One thread gains nothing from splits, only their overhead (~5% measured).
  // Row-split convs compute every output pixel exactly as the unsplit conv
  // does, so outputs stay bitwise equal across thread counts (tested).
  Compiler c(paths, balance && threads > 1, split_exact);
  walk(net, c);
  return c.finish();
}

}  // namespace nasrt
