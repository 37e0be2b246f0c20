// The schedule: the net compiled into phases of per-share op lists and
// balanced, from the net alone (no buffers, no kernels). The executor realises
// it; latency models read it (_core.schedule, predict_schedule_latency).
#pragma once
#include <functional>
#include <vector>

#include "runtime/ir.h"

namespace nasrt {

// What one scheduled op computes: a stem conv, one conv of a path's block, or a
// sync merge, over `rows` of its `total_rows` output rows from row `first` (a
// sum merge: elements).
struct OpTag : NetPart {
  int first = 0, rows = 0, total_rows = 0;
};

// [phase][share] -> ops in order. Share s runs on thread s % threads unless
// another thread takes it over; a phase ends when all its ops are done.
using Schedule = std::vector<std::vector<std::vector<OpTag>>>;

// Whether balancing may split the path conv `part` by output rows (its
// kernel's row pieces are bitwise its rows); else it runs whole on its path.
using SplitExact = std::function<bool(const NetPart& part)>;

// Stem convs and sync merges split by output rows over the P shares; per
// segment between kept syncs, the leading ops (convs, a residual block's projection and
// add) of the most loaded path moved into row-split phases while that shortens the
// estimated critical path
// (balance, threads > 1 only); the rest one phase, each path on its share.
// threads: 1..paths. Throws std::invalid_argument naming the part (walk()).
// No split_exact: every conv may be split.
Schedule compile_schedule(const NetSpec& net, int threads, bool balance,
                          const SplitExact& split_exact = nullptr);

}  // namespace nasrt
