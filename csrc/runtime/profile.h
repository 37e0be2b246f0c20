// Latency probes for `nasrt profile`: time the runtime's own ops and executor in C++.
#pragma once
#include <vector>

#include "kernels/kernels.h"
#include "kernels/registry.h"
#include "runtime/executor.h"

namespace nasrt {

// Median ns of running a conv chain (one block) on an (h, w) input, on a thread
// pinned to `core` (core < 0: on the calling thread, unpinned).
double time_conv_chain(const std::vector<ConvSpec>& chain, int h, int w, int runs, int warmup,
                       Backend backend, int core = -1);

// Median ns of the head: global average pool of `paths` maps of (hw, channels), then the FCs;
// pinned like time_conv_chain.
double time_head(const std::vector<FcSpec>& fcs, int paths, int hw, int channels, int runs,
                 int warmup, Backend backend, int core = -1);

// Median ns of Executor::run on one zero sample (no Python in the loop).
double time_executor(Executor& exec, int in_size, int runs, int warmup);

}  // namespace nasrt
