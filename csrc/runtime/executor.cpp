// Executor: memory planning, the schedule realised as ops, the path threads.
#include "runtime/executor.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <condition_variable>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <set>
#include <system_error>

#include <pthread.h>
#include <sched.h>
#include <unistd.h>

namespace nasrt {
namespace {

[[noreturn]] void bad(const std::string& what) { throw std::invalid_argument(what); }

std::string join_ints(const std::vector<int>& v) {
  std::string s;
  for (int x : v) s += (s.empty() ? "" : ",") + std::to_string(x);
  return s;
}

}  // namespace

// fork() while another thread is inside run() would leave the child's copy of
// run_mutex_ locked forever. The prepare handler takes every executor's run
// lock (so fork() waits for the runs in flight, a whole batch at most), and
// the child starts from a consistent state and marks each executor forked.
// The registry is never destroyed: an executor may be freed after static
// destruction (a C API model freed from an atexit handler).
struct ForkGuard {
  static std::mutex& mu() {
    static auto* m = new std::mutex;
    return *m;
  }
  static std::vector<Executor*>& all() {
    static auto* v = new std::vector<Executor*>;
    return *v;
  }
  static void prepare() {
    mu().lock();
    for (Executor* e : all()) e->run_mutex_.lock();
  }
  static void parent() {
    for (Executor* e : all()) e->run_mutex_.unlock();
    mu().unlock();
  }
  static void child() {
    for (Executor* e : all()) {
      e->forked_ = true;
      e->run_mutex_.unlock();
    }
    mu().unlock();
  }
  static void add(Executor* e) {
    static std::once_flag once;
    std::call_once(once, [] { pthread_atfork(&prepare, &parent, &child); });
    std::lock_guard<std::mutex> lock(mu());
    all().push_back(e);
  }
  static void remove(Executor* e) {
    std::lock_guard<std::mutex> lock(mu());
    auto& v = all();
    v.erase(std::remove(v.begin(), v.end(), e), v.end());
  }
};

void Executor::FreeDeleter::operator()(float* p) const { std::free(p); }

namespace {

// Whether this process has not said `key` yet: an int8 fallback (one backend, one reason, e.g.
// oneDNN refusing an output zero point) meets many convs of every executor, and one line says it
// (a sanitizer CI run printed it 226 times).
bool first_time(const std::string& key) {
  static auto* mu = new std::mutex;  // never destroyed: executors may load during static destruction
  static auto* said = new std::set<std::string>;
  std::lock_guard<std::mutex> lock(*mu);
  return said->insert(key).second;
}

class Seq final : public Op {
 public:
  explicit Seq(std::vector<std::unique_ptr<Op>> ops) : ops_(std::move(ops)) {}
  void run() override {
    for (auto& op : ops_) op->run();
  }

 private:
  std::vector<std::unique_ptr<Op>> ops_;
};

}  // namespace

// One backend per conv for all its row pieces and every thread count, so
// outputs stay bitwise equal between 1 and P threads. The choice must pass the
// self-check against the reference kernels on the whole conv and on the row
// pieces a split makes (always over paths_ shares, whatever the thread
// count), else the next compiled backend is tried (said on stderr; an int8 fallback once per
// process and reason).
KernelChoice Executor::resolve(const ConvSpec& c, int h, int w, int in_stride, int out_stride,
                               const ActQuant& xq) {
  if (!c.name.empty()) {
    auto it = resolved_.find(c.name);
    if (it != resolved_.end()) return it->second;
  }
  const Precision prec = int8(c) ? Precision::Int8 : Precision::Fp32;
  Backend want = backend_;
  if (want == Backend::Auto) {
    auto it = conv_backends_.find(c.name);
    want = it != conv_backends_.end() && backend_compiled(it->second) ? it->second
                                                                       : builtin_backend(prec);
  }
  const ConvGeom g = conv_geom(c, h, w, in_stride, out_stride);
  const std::vector<std::pair<int, int>> pieces = row_pieces(g.out_h(), paths_);
  std::vector<Backend> order{want};
  for (Backend b : compiled_backends())
    if (b != want) order.push_back(b);
  KernelChoice k{c.name, Backend::Reference, true, prec};  // the reference kernels are the oracle
  if (prec == Precision::Int8) {
    const Int8Conv q = int8_params(c, xq);
    try {
      validate_int8(g, q);
    } catch (const std::invalid_argument& e) {
      bad(c.name + ": " + e.what());
    }
    const std::vector<int8_t> w8 =
        oihw_to_ohwi(c.q.weight.data(), c.in_c / c.groups, c.kernel, 0, c.out_c);
    for (Backend b : order) {
      if (b == Backend::Reference) break;
      if (!find_kernels(b, Precision::Int8)) continue;
      const std::string why = check_conv_int8(b, g, q, w8.data());
      if (why.empty()) {
        k.backend = b;
        k.split_exact = conv_int8_split_exact(b, g, pieces, q, w8.data());
        break;
      }
      if (first_time(backend_name(b) + ": " + why))
        std::fprintf(stderr,
                     "nasrt: int8 conv %s (%d->%d, %dx%d, stride %d, input %dx%d): %s failed the "
                     "load-time self-check (%s); trying the next backend (said once per process "
                     "for this backend and reason)\n",
                     c.name.c_str(), c.in_c, c.out_c, c.kernel, c.kernel, c.stride, h, w,
                     backend_name(b).c_str(), why.c_str());
    }
  } else {
    const std::vector<float> w_ohwi =
        oihw_to_ohwi(c.weight.data(), c.in_c / c.groups, c.kernel, 0, c.out_c);
    for (Backend b : order) {
      if (b == Backend::Reference) break;
      const ConvCheck r = check_conv(b, g, pieces, w_ohwi.data(), c.bias.data());
      if (r.ok) {
        k.backend = b;
        k.split_exact = r.split_exact;
        break;
      }
      std::fprintf(stderr,
                   "nasrt: conv %s (%d->%d, %dx%d, stride %d, input %dx%d): %s failed the load-time "
                   "self-check (%s); trying the next backend\n",
                   c.name.c_str(), c.in_c, c.out_c, c.kernel, c.kernel, c.stride, h, w,
                   backend_name(b).c_str(), r.why.c_str());
    }
  }
  if (!c.name.empty()) resolved_.emplace(c.name, k);
  return k;
}

float* Executor::alloc(size_t n) {
  // 64-byte aligned and rounded up to whole cache lines: buffers never share a line.
  const size_t bytes = ((n + kBufferSlackFloats) * sizeof(float) + 63) / 64 * 64;
  auto* p = static_cast<float*>(std::aligned_alloc(64, bytes));
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, bytes);
  buffers_.emplace_back(p);
  return p;
}

// The form (buffer p, pixel stride) of act t that a consumer asks for: allocated on first request
// with the stride of the form its producer writes.
template <typename T>
T* Executor::form_of(Act& t, T*& p, int& stride, int other_stride) {
  if (!p) {
    stride = other_stride;
    p = alloc_as<T>(static_cast<size_t>(stride) * t.h * t.w);
  }
  return p;
}

float* Executor::f_of(int a) {
  Act& t = acts_[a];
  return form_of(t, t.f, t.f_stride, t.q_stride);
}

uint8_t* Executor::q_of(int a) {
  Act& t = acts_[a];
  return form_of(t, t.q, t.q_stride, t.f_stride);
}

std::unique_ptr<Op> Executor::with_conversions(std::unique_ptr<Op> op, int a, size_t p0,
                                               size_t p1, bool elements) {
  const Act& t = acts_[a];
  const int c = elements ? 1 : t.c;
  const int fs = elements ? 1 : t.f_stride, qs = elements ? 1 : t.q_stride;
  std::vector<std::unique_ptr<Op>> ops;
  ops.push_back(std::move(op));
  if (t.native == Precision::Fp32 && t.q)
    ops.push_back(make_quantize(t.f, fs, t.q, qs, c, p0, p1, t.aq.scale, t.aq.zero_point));
  if (t.native == Precision::Int8 && t.f)
    ops.push_back(make_dequantize(t.q, qs, t.f, fs, c, p0, p1, t.aq.scale, t.aq.zero_point));
  if (t.concat >= 0 && acts_[t.concat].native == Precision::Int8 && acts_[t.concat].f) {
    const Act& cc = acts_[t.concat];
    ops.push_back(make_dequantize(t.q, t.q_stride, cc.f + t.slice, cc.f_stride, t.c, p0, p1,
                                  t.aq.scale, t.aq.zero_point));
  }
  if (ops.size() == 1) return std::move(ops[0]);
  return std::make_unique<Seq>(std::move(ops));
}

std::unique_ptr<Op> Executor::conv_rows(const ConvSpec& c, int h, int w, int in, int out, int r0,
                                        int r1) {
  const Act& x = acts_[in];
  const Act& y = acts_[out];
  const bool i8 = int8(c);
  const int in_stride = i8 ? x.q_stride : x.f_stride, out_stride = i8 ? y.q_stride : y.f_stride;
  const ConvGeom whole = conv_geom(c, h, w, in_stride, out_stride);
  int a_in = 0;
  const ConvGeom g = conv_rows_geom(whole, r0, r1, &a_in);
  const KernelChoice k = resolve(c, h, w, in_stride, out_stride, x.aq);
  if (c.name.empty() || std::none_of(kernels_.begin(), kernels_.end(),
                                     [&](const KernelChoice& e) { return e.name == c.name; }))
    kernels_.push_back(k);
  const size_t in_off = static_cast<size_t>(a_in) * w * in_stride;
  const size_t out_off = static_cast<size_t>(r0) * whole.out_w() * out_stride;
  std::unique_ptr<Op> op;
  if (i8) {
    const std::vector<int8_t> w8 =
        oihw_to_ohwi(c.q.weight.data(), c.in_c / c.groups, c.kernel, 0, c.out_c);
    // The backend resolve checked, directly: the registry's fallback could pick another per piece.
    op = find_kernels(k.backend, Precision::Int8)
             ->make_conv_int8(g, int8_params(c, x.aq), w8.data(), x.q + in_off, y.q + out_off);
  } else {
    const std::vector<float> w_ohwi =
        oihw_to_ohwi(c.weight.data(), c.in_c / c.groups, c.kernel, 0, c.out_c);
    op = make_conv(k.backend, g, w_ohwi.data(), c.bias.data(), x.f + in_off, y.f + out_off);
  }
  const size_t ow = whole.out_w();
  return with_conversions(std::move(op), out, r0 * ow, r1 * ow, false);
}

// The merge conv over a concat whose path slices are padded from c to cp
// channels (cache-line alignment): zero weights for the padding channels.
template <typename T>
static std::vector<T> pad_concat_weight(const std::vector<T>& w, int out_c, int paths, int c,
                                        int cp) {
  std::vector<T> e(static_cast<size_t>(out_c) * paths * cp, T{0});
  for (int o = 0; o < out_c; ++o)
    for (int p = 0; p < paths; ++p)
      for (int i = 0; i < c; ++i)
        e[(static_cast<size_t>(o) * paths + p) * cp + i] = w[(static_cast<size_t>(o) * paths + p) * c + i];
  return e;
}

static ConvSpec pad_concat_input(const ConvSpec& m, int paths, int c, int cp) {
  if (c == cp) return m;
  ConvSpec e = m;
  e.in_c = paths * cp;
  if (!m.weight.empty()) e.weight = pad_concat_weight(m.weight, m.out_c, paths, c, cp);
  if (!m.q.weight.empty()) e.q.weight = pad_concat_weight(m.q.weight, m.out_c, paths, c, cp);
  return e;
}

static bool same_q(const ActQuant& a, const ActQuant& b) {
  return a.scale == b.scale && a.zero_point == b.zero_point;
}

void Executor::compile(const NetSpec& net, bool balance) {
  // The memory plan, in execution order: every conv's output act (or its path's
  // slice of a concat), every merge's, the head's. A consumer asks for the form
  // of its precision (f_of / q_of), so conversions are known before any op is made.
  struct Plan : NetVisitor {
    Executor& e;
    const NetSpec& net;
    std::vector<int> cur;  // each path's current act (the stem feeds all)
    std::vector<int> block_in, shortcut;  // each path's current block's input, projection output
    std::map<std::array<int, 4>, Placed> placed;
    std::vector<std::unique_ptr<ConvSpec>> padded;  // merge convs over padded concats
    int concat = -1;
    int slice_c = 0;
    std::vector<int> fc_in, fc_out;  // per FC: the acts read and written (-1: the logits)
    int features = -1;
    Plan(Executor& ex, const NetSpec& n)
        : e(ex), net(n), cur(ex.paths_, 0), block_in(ex.paths_, 0), shortcut(ex.paths_, -1) {}
    static std::array<int, 4> key(const NetPart& t) { return {t.kind, t.path, t.layer, t.conv}; }
    // A new act written in precision p (dense unless given a buffer).
    int new_act(int c, int h, int w, Precision p, const ActQuant& aq) {
      Act t;
      t.c = c, t.h = h, t.w = w, t.native = p, t.aq = aq;
      const size_t n = static_cast<size_t>(c) * h * w;
      if (p == Precision::Int8) t.q = e.alloc_as<uint8_t>(n), t.q_stride = c;
      else t.f = e.alloc(n), t.f_stride = c;
      e.acts_.push_back(t);
      return static_cast<int>(e.acts_.size()) - 1;
    }
    void need(int a, const ConvSpec& c) {
      if (e.int8(c)) e.q_of(a);
      else e.f_of(a);
    }
    // The output act of a path's conv or add (path `path`, layer `layer`) in precision p: dense,
    // or, for the block's output before a conv1x1 sync (to_concat), the path's slice of the concat.
    int block_out(int path, int layer, Shape o, Precision p, const ActQuant& aq, bool to_concat) {
      if (!to_concat) return new_act(o.c, o.h, o.w, p, aq);
      // Each path writes its channel slice of the shared concat buffer (no
      // copy); slices are padded to whole cache lines against false sharing. In a
      // quantised net the concat holds u8 codes: an fp32 producer quantises into it.
      slice_c = (o.c + 15) / 16 * 16;
      const int cs = e.paths_ * slice_c;
      const Precision cp = e.quantized_ ? Precision::Int8 : Precision::Fp32;
      if (concat < 0) concat = new_act(cs, o.h, o.w, cp, aq);
      Act t;
      t.c = o.c, t.h = o.h, t.w = o.w, t.native = p, t.aq = aq;
      t.concat = concat, t.slice = path * slice_c;
      const Act& cc = e.acts_[concat];
      if (!same_q(cc.aq, aq))
        bad("paths[" + std::to_string(path) + "][" + std::to_string(layer) +
            "]: the producers into a concat need one (scale, zero point)");
      if (cp == Precision::Int8) t.q = cc.q + t.slice, t.q_stride = cs;
      else t.f = cc.f + t.slice, t.f_stride = cs;
      if (cp == Precision::Int8 && p == Precision::Fp32)  // computed here, quantised into the slice
        t.f = e.alloc(static_cast<size_t>(o.c) * o.h * o.w), t.f_stride = o.c;
      e.acts_.push_back(t);
      return static_cast<int>(e.acts_.size()) - 1;
    }
    void conv(const ConvSite& s) override {
      const ConvSpec& c = *s.spec;
      // A block's first conv and its projection read the block's input; every buffer lives
      // for the whole run, so the input is still there when the shortcut and the add read it.
      if (s.kind == NetPart::Conv && s.conv == 0) block_in[s.path] = cur[s.path];
      const int in = s.kind == NetPart::Stem       ? cur[0]
                     : s.kind == NetPart::Shortcut ? block_in[s.path]
                                                   : cur[s.path];
      need(in, c);
      const Precision p = e.int8(c) ? Precision::Int8 : Precision::Fp32;
      const int out = block_out(s.path, s.layer, s.out, p, c.out_q, s.to_concat);
      Placed& pl = placed[key(s)];
      pl.conv = &c, pl.h = s.in.h, pl.w = s.in.w, pl.in = in, pl.out = out;
      if (s.kind == NetPart::Stem) cur.assign(e.paths_, out);
      else if (s.kind == NetPart::Shortcut) shortcut[s.path] = out;
      else cur[s.path] = out;
    }
    // ReLU(chain + shortcut): in a quantised net always in int8 (docs/FORMATS.md section 6), as a sum.
    void add(const AddSite& s) override {
      const int a = cur[s.path], b = s.block->shortcut ? shortcut[s.path] : block_in[s.path];
      for (int x : {a, b})
        if (e.quantized_) e.q_of(x);
        else e.f_of(x);
      Placed& pl = placed[key(s)];
      pl.add = true, pl.ins = {a, b};
      pl.h = s.out.h, pl.w = s.out.w;
      pl.out = block_out(s.path, s.layer, s.out, e.quantized_ ? Precision::Int8 : Precision::Fp32,
                         s.block->add_q, s.to_concat);
      cur[s.path] = pl.out;
    }
    void sync(int index, const SyncSpec& sync, Shape out) override {
      const int P = e.paths_;
      NetPart m;
      m.kind = NetPart::Merge, m.layer = sync.after;
      Placed& pl = placed[key(m)];
      if (sync.concat_conv) {
        padded.push_back(std::make_unique<ConvSpec>(pad_concat_input(sync.conv, P, out.c, slice_c)));
        const ConvSpec& c = *padded.back();
        need(concat, c);
        pl.conv = &c;
        pl.h = out.h, pl.w = out.w, pl.in = concat;
        pl.out = new_act(out.c, out.h, out.w, e.int8(c) ? Precision::Int8 : Precision::Fp32, c.out_q);
      } else {
        for (int p = 0; p < P; ++p) {
          if (e.quantized_) {
            e.q_of(cur[p]);
            if (!same_q(e.acts_[cur[p]].aq, e.acts_[cur[0]].aq))
              bad("syncs[" + std::to_string(index) +
                  "]: the paths' outputs into a sum need one (scale, zero point)");
          } else {
            e.f_of(cur[p]);
          }
          pl.ins.push_back(cur[p]);
        }
        pl.out = new_act(out.c, out.h, out.w, e.quantized_ ? Precision::Int8 : Precision::Fp32,
                     sync.out_q);
        pl.sum_q = sync.out_q;
      }
      concat = -1;
      cur.assign(P, pl.out);
    }
    void fc(int index, const FcSpec& fc) override {
      if (index == 0) {  // the pooled features, path order
        const Act& t = e.acts_[cur[0]];
        features = new_act(e.paths_ * t.c, 1, 1, e.quantized_ ? Precision::Int8 : Precision::Fp32,
                       net.features_q);
        for (int p = 0; p < e.paths_; ++p) {
          if (e.quantized_) e.q_of(cur[p]);
          else e.f_of(cur[p]);
        }
      }
      const int in = index == 0 ? features : fc_out.back();
      const bool i8 = e.quantized_ && fc.precision == Precision::Int8;
      if (i8) e.q_of(in);
      else e.f_of(in);
      fc_in.push_back(in);
      const bool last = index + 1 == static_cast<int>(net.head.size());
      fc_out.push_back(last ? -1 : new_act(fc.out, 1, 1, i8 ? Precision::Int8 : Precision::Fp32, fc.out_q));
    }
  };
  const int P = paths_;
  quantized_ = net.quantized;
  input_ = alloc(static_cast<size_t>(in_c_) * in_h_ * in_w_);
  Act input;
  input.c = in_c_, input.h = in_h_, input.w = in_w_, input.f = input_, input.f_stride = in_c_;
  input.aq = net.input_q;
  acts_.push_back(input);
  Plan plan(*this, net);
  walk(net, plan);
  if (acts_[0].q)
    input_quant_ = make_quantize(input_, in_c_, acts_[0].q, in_c_, in_c_, 0,
                                 static_cast<size_t>(in_h_) * in_w_, net.input_q.scale,
                                 net.input_q.zero_point);

  schedule_ = compile_schedule(net, threads_, balance, [&](const NetPart& t) {
    const Placed& pl = plan.placed.at(Plan::key(t));  // a conv's (asked for convs only)
    const bool i8 = int8(*pl.conv);
    const Act& x = acts_[pl.in];
    const Act& y = acts_[pl.out];
    return resolve(*pl.conv, pl.h, pl.w, i8 ? x.q_stride : x.f_stride,
                   i8 ? y.q_stride : y.f_stride, x.aq)
        .split_exact;
  });
  for (const auto& tags : schedule_) {
    Phase phase(P);
    for (int s = 0; s < P; ++s) {
      for (const OpTag& t : tags[s]) {
        const Placed& pl = plan.placed.at(Plan::key(t));
        const int r0 = t.first, r1 = t.first + t.rows;
        if (pl.conv) {
          phase.ops[s].push_back(conv_rows(*pl.conv, pl.h, pl.w, pl.in, pl.out, r0, r1));
        } else if (pl.add) {  // output rows [r0, r1)
          const Act &a = acts_[pl.ins[0]], &b = acts_[pl.ins[1]], &y = acts_[pl.out];
          const size_t p0 = static_cast<size_t>(r0) * pl.w, p1 = static_cast<size_t>(r1) * pl.w;
          std::unique_ptr<Op> op;
          if (quantized_)
            op = make_residual_add_int8(a.q, a.q_stride, a.aq.zero_point, a.aq.scale / y.aq.scale,
                                        b.q, b.q_stride, b.aq.zero_point, b.aq.scale / y.aq.scale,
                                        y.q, y.q_stride, y.aq.zero_point, y.c, p0, p1);
          else
            op = make_residual_add(a.f, a.f_stride, b.f, b.f_stride, y.f, y.f_stride, y.c, p0, p1);
          phase.ops[s].push_back(with_conversions(std::move(op), pl.out, p0, p1, false));
        } else if (quantized_) {
          std::vector<const uint8_t*> ins;
          for (int a : pl.ins) ins.push_back(acts_[a].q);
          const ActQuant& xq = acts_[pl.ins[0]].aq;
          phase.ops[s].push_back(with_conversions(
              make_sum_int8(ins, xq.zero_point, xq.scale / pl.sum_q.scale, pl.sum_q.zero_point,
                            acts_[pl.out].q, r0, r1),
              pl.out, r0, r1, true));
        } else {
          std::vector<const float*> ins;
          for (int a : pl.ins) ins.push_back(acts_[a].f);
          phase.ops[s].push_back(make_sum(ins, acts_[pl.out].f, r0, r1));
        }
      }
    }
    phases_.push_back(std::move(phase));
  }

  // Head on the calling thread after the final join: pool each path, concat, FCs.
  const Act& last = acts_[plan.cur[0]];
  const int feat_c = last.c, hw = last.h * last.w;
  Act& feat = acts_[plan.features];
  for (int p = 0; p < P; ++p) {
    const Act& x = acts_[plan.cur[p]];
    if (quantized_) {
      const float m = x.aq.scale / (static_cast<float>(hw) * feat.aq.scale);
      head_.push_back(with_conversions(
          make_global_avg_pool_int8(hw, feat_c, x.q_stride, x.q, x.aq.zero_point, m,
                                    feat.aq.zero_point, feat.q + p * feat_c),
          plan.features, p * feat_c, (p + 1) * feat_c, true));
    } else {
      head_.push_back(make_global_avg_pool(hw, feat_c, x.f_stride, x.f, feat.f + p * feat_c));
    }
  }
  logits_ = alloc(net.head.back().out);
  for (size_t i = 0; i < net.head.size(); ++i) {
    const FcSpec& fc = net.head[i];
    const Act& x = acts_[plan.fc_in[i]];
    const int out = plan.fc_out[i];
    if (quantized_ && fc.precision == Precision::Int8) {
      std::vector<float> m(fc.out);
      for (int c = 0; c < fc.out; ++c) m[c] = x.aq.scale * fc.q.weight_scale[c];
      if (out < 0) {
        head_.push_back(make_fc_int8_logits(fc.in, fc.out, fc.q.weight.data(), fc.q.bias,
                                            x.aq.zero_point, m, x.q, logits_));
        continue;
      }
      for (int c = 0; c < fc.out; ++c) m[c] = m[c] / fc.out_q.scale;
      head_.push_back(with_conversions(
          make_fc_int8(fc.in, fc.out, fc.relu, fc.q.weight.data(), fc.q.bias, x.aq.zero_point, m,
                       fc.out_q.zero_point, x.q, acts_[out].q),
          out, 0, fc.out, true));
    } else {
      const Backend fb = backend_ == Backend::Auto ? builtin_backend() : backend_;
      float* y = out < 0 ? logits_ : acts_[out].f;
      auto op = make_fc(fb, fc.in, fc.out, fc.relu, fc.weight.data(), fc.bias.data(), x.f, y);
      head_.push_back(out < 0 ? std::move(op) : with_conversions(std::move(op), out, 0, fc.out, true));
    }
  }
  classes_ = net.head.back().out;
}

Executor::Executor(const NetSpec& net, const ExecOptions& opt)
    : backend_(opt.backend),
      conv_backends_(opt.conv_backends),
      spin_ns_(opt.wait_spin_ns),
      adapt_on_(opt.adapt),
      idle_spin_ns_(opt.idle_spin_ns) {
  check_net(net);
  if (!backend_compiled(backend_))
    bad("backend: nasrt was built without " + backend_name(backend_));
  paths_ = static_cast<int>(net.paths.size());
  if (opt.threads < 1 || opt.threads > paths_)
    bad("threads: must be in 1.." + std::to_string(paths_) + " (one thread per path at most)");
  threads_ = opt.threads;
  in_c_ = net.in_c, in_h_ = net.in_h, in_w_ = net.in_w;
  compile(net, opt.balance);

  pinned_.assign(threads_, -1);
  owner_pid_ = getpid();
  if (threads_ > 1) {
    if (!opt.cores.empty() && static_cast<int>(opt.cores.size()) < threads_)
      bad("cores: need one core per thread");
    const std::vector<int> allowed = available_cores();
    for (size_t i = 0; i < opt.cores.size(); ++i) {
      const int c = opt.cores[i];
      if (std::find(allowed.begin(), allowed.end(), c) == allowed.end())
        bad("cores: core " + std::to_string(c) + " is not one this process may run on (" +
            join_ints(allowed) + ")");
      if (i >= 2 && i < static_cast<size_t>(threads_) &&
          std::find(opt.cores.begin() + 1, opt.cores.begin() + i, c) != opt.cores.begin() + i)
        bad("cores: core " + std::to_string(c) + " given to two worker threads");
    }
    // More threads than cores: the extra ones stay unpinned (the scheduler
    // places them; late threads' shares are taken over, so they cost little).
    const std::vector<int> cores = opt.cores.empty() ? allowed : opt.cores;
    // The job counter each worker starts from is read here, before any worker
    // exists: a worker preempted after signalling "ready" can no longer miss
    // the first job (it compares against this value, not a later read).
    const uint32_t start = job_.load(std::memory_order_acquire);
    workers_.reserve(threads_ - 1);  // emplace_back below never reallocates (or throws bad_alloc)
    for (int t = 1; t < threads_; ++t) {
      const int core = t < static_cast<int>(cores.size()) ? cores[t] : -1;
      try {
        workers_.emplace_back([this, t, core, start] {
          set_flush_denormals();
          if (core >= 0 && pin_current_thread(core)) pinned_[t] = core;
          workers_ready_.fetch_add(1);
          worker(t, start);
        });
      } catch (const std::system_error& e) {  // the OS refused a thread
        stop_workers();
        throw std::runtime_error("threads: the OS refused to start worker thread " +
                                 std::to_string(t) + " (" + e.what() +
                                 "): use fewer threads or raise the process's thread limit");
      }
    }
    while (workers_ready_.load() < threads_ - 1) std::this_thread::yield();
  }
  ForkGuard::add(this);
}

void Executor::stop_workers() {
  stop_.store(true, std::memory_order_seq_cst);
  job_.fetch_add(1, std::memory_order_seq_cst);
  futex_wake_all(&job_);
  for (auto& t : workers_) {
    // In a fork()ed child the workers do not exist: nothing to join.
    if (getpid() == owner_pid_) t.join();
    else t.detach();
  }
  workers_.clear();
}

Executor::~Executor() {
  ForkGuard::remove(this);
  stop_workers();
}

int64_t Executor::drain(Phase& ph, int share, uint64_t r) {
  ShareState& st = ph.state[share];
  OpList& ops = ph.ops[share];
  const uint64_t n = ops.size(), base = r * n, end = base + n;
  int64_t ran = 0;
  for (;;) {
    uint64_t i = st.next.load(std::memory_order_acquire);
    if (i < base || i >= end) return ran;  // all claimed (or another run's)
    if (st.done.load(std::memory_order_acquire) != i) return ran;  // its predecessor still runs
    if (!st.next.compare_exchange_weak(i, i + 1, std::memory_order_acq_rel)) continue;
    ops[i - base]->run();
    ++ran;
    // seq_cst store, then the sleeper count: pairs with finish_phase so a
    // thread going to sleep either sees this op done or gets woken.
    st.done.store(i + 1, std::memory_order_seq_cst);
    if (progress_sleepers_.load(std::memory_order_seq_cst) > 0) {
      progress_.fetch_add(1, std::memory_order_seq_cst);
      futex_wake_all(&progress_);
    }
  }
}

bool Executor::phase_done(const Phase& ph, uint64_t r, std::memory_order order) const {
  for (int s = 0; s < paths_; ++s) {
    const uint64_t n = ph.ops[s].size();
    if (ph.state[s].done.load(order) < (r + 1) * n) return false;
  }
  return true;
}

// Waits for the other shares of a phase, running any of their ops that is free
// to claim (its owner has not got to it: late or descheduled). Spins, then
// yields the core (the op we wait for may be on a thread sharing it), then
// sleeps until an op finishes.
void Executor::finish_phase(Phase& ph, int slot, uint64_t r) {
  using clock = std::chrono::steady_clock;
  clock::time_point deadline{};
  int64_t taken = 0;
  for (int i = 0;; ++i) {
    if (phase_done(ph, r)) break;
    int64_t stolen = 0;
    for (int k = 1; k < paths_; ++k) {
      const int s = (slot + k) % paths_;
      if (s % threads_ != slot) stolen += drain(ph, s, r);
    }
    if (stolen) {
      taken += stolen;
      continue;
    }
    cpu_relax();
    if (i < 256) continue;  // ~2-5 us of plain spinning: the common, short wait
    if (deadline == clock::time_point{}) deadline = clock::now() + std::chrono::nanoseconds(spin_ns_);
    if ((i & 15) == 0) {
      if (clock::now() < deadline) {
        sched_yield();
        continue;
      }
      progress_sleepers_.fetch_add(1, std::memory_order_seq_cst);
      const uint32_t seen = progress_.load(std::memory_order_seq_cst);
      // seq_cst loads: with drain's seq_cst store and sleeper check, either this
      // sees the last op done or its finisher sees us asleep and bumps progress_.
      if (!phase_done(ph, r, std::memory_order_seq_cst)) futex_wait(&progress_, seen);
      progress_sleepers_.fetch_sub(1, std::memory_order_seq_cst);
    }
  }
  if (taken) taken_over_.fetch_add(taken, std::memory_order_relaxed);
}

void Executor::run_phases(int slot, uint64_t r) {
  for (Phase& ph : phases_) {
    for (int s = slot; s < paths_; s += threads_) drain(ph, s, r);
    finish_phase(ph, slot, r);
  }
}

void Executor::worker(int slot, uint32_t seen) {
  for (;;) {
    wait_for_change(job_, seen, job_sleepers_, idle_spin_ns_);
    seen = job_.load(std::memory_order_acquire);
    if (stop_.load(std::memory_order_acquire)) return;
    run_phases(slot, job_run_.load(std::memory_order_acquire));
  }
}

// One sample on P threads, or on the caller alone: the thread count is adapted
// by measurement, in windows of kWindow samples. A window's median latency (of
// its second half: the first samples after a switch pay for waking workers) is
// compared with the other mode's last window. P threads are used while they are
// 25% faster than the caller alone (unloaded: 40-47%). On a busy core they gain
// little (the caller ends up doing the late worker's share), and a worker
// preempted in the middle of an op stalls the run for a time slice; so the
// caller runs alone, measuring P threads once more at once (the losing window
// may have been noise), then every 64th window (1.5% of the runs). While P
// threads win, a window alone is measured when their median rises 1.3x and
// every 256th window; the first baseline when a quarter of a window's runs had
// ops taken over, or after 8 windows. Medians, not means: latencies on a VM
// have millisecond outliers that must not flip the choice. The ops are the
// same either way, so the output is bitwise the same.
void Executor::run_sample() {
  using clock = std::chrono::steady_clock;
  const auto t0 = clock::now();
  Adapt& a = adapt_;
  if (a.solo) {
    solo_runs_.fetch_add(1, std::memory_order_relaxed);
    for (auto& phase : phases_)
      for (auto& ops : phase.ops)
        for (auto& op : ops) op->run();
  } else {
    const int64_t taken = taken_over_.load(std::memory_order_relaxed);
    const uint64_t r = runs_++;
    job_run_.store(r, std::memory_order_release);
    job_.fetch_add(1, std::memory_order_seq_cst);
    wake_waiters(job_, job_sleepers_);
    run_phases(0, r);
    if (taken_over_.load(std::memory_order_relaxed) != taken) ++a.late;
  }
  const int i = a.n++ - (kWindow - kHalf);
  if (i >= 0) a.ns[i] = std::chrono::duration<float, std::nano>(clock::now() - t0).count();
  if (!adapt_on_) a.n = 0;  // a fixed configuration: never leaves P threads
  if (a.n < kWindow) return;
  std::nth_element(a.ns.begin(), a.ns.begin() + kHalf / 2, a.ns.end());
  const double median = a.ns[kHalf / 2];
  const bool rise = !a.solo && a.par > 0 && median > 1.3 * a.par;
  const bool late = !a.solo && a.late * 4 > kWindow;
  a.n = 0, a.late = 0;
  (a.solo ? a.alone : a.par) = median;
  if (a.alone == 0) {  // no baseline on the caller alone yet
    a.solo = rise || late || ++a.explore >= 8;
  } else if (a.par < 0.75 * a.alone) {
    a.rechecked = false;
    a.solo = rise || ++a.explore % 256 == 0;
  } else if (a.solo && !a.rechecked) {  // P threads lost: measure them once more at once
    a.solo = false;                      // (the losing window may have been noise)
    a.rechecked = true;
  } else {
    a.solo = ++a.explore % 64 != 0;
  }
}

namespace {
// Flush-to-zero for the duration of run() on the calling thread (restored
// after): denormal activations slow the reference kernels 2-3x, and every
// thread of a run must compute alike for bitwise-equal outputs.
class FlushDenormals {
 public:
  FlushDenormals() : saved_(read_fp_mode()) { set_flush_denormals(); }
  ~FlushDenormals() { write_fp_mode(saved_); }
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;

 private:
  uint64_t saved_;
};
}  // namespace

namespace {
// Executor::run calls in flight, process-wide, and whether drain_runs closed the gate.
struct RunGate {
  std::mutex m;
  std::condition_variable cv;
  int in_flight = 0;
  bool closed = false;
};
RunGate& run_gate() {
  static RunGate* g = new RunGate;  // never destroyed: it must outlive every static destructor
  return *g;
}
class InFlight {
 public:
  InFlight() {
    RunGate& g = run_gate();
    std::unique_lock<std::mutex> lock(g.m);
    g.cv.wait(lock, [&] { return !g.closed; });  // after drain_runs: parked until the process ends
    ++g.in_flight;
  }
  ~InFlight() {
    RunGate& g = run_gate();
    std::lock_guard<std::mutex> lock(g.m);
    if (--g.in_flight == 0) g.cv.notify_all();
  }
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;
};
}  // namespace

void drain_runs(double seconds) {
  RunGate& g = run_gate();
  std::unique_lock<std::mutex> lock(g.m);
  g.closed = true;
  g.cv.wait_for(lock, std::chrono::duration<double>(seconds), [&] { return g.in_flight == 0; });
}

void Executor::run(const float* x, int n, float* y) {
  const InFlight in_flight;
  std::lock_guard<std::mutex> lock(run_mutex_);
  if (threads_ > 1 && forked_) {
    // fork() copied this executor but not its worker threads: run every path
    // on the calling thread (same ops, so the same bitwise output).
    std::fprintf(stderr, "nasrt: runtime used in a fork()ed child: running on 1 thread\n");
    threads_ = 1;
  }
  const size_t hw = static_cast<size_t>(in_h_) * in_w_;
  const size_t sample = hw * in_c_;
  // The fast backends' ReLU clamps turn NaN into a finite value, so input that
  // is non-finite, or large enough to overflow inside the net, is rejected
  // rather than returned as plausible logits.
  const size_t total = sample * static_cast<size_t>(n);
  int sane = 1;  // a branch-free AND vectorises; the offending value is looked for only if any
  for (size_t i = 0; i < total; ++i) sane &= std::fabs(x[i]) <= kMaxInput;
  for (size_t i = 0; !sane && i < total; ++i)
    if (!(std::fabs(x[i]) <= kMaxInput))
      throw std::invalid_argument(
          (std::isfinite(x[i]) ? std::string("input: holds values beyond +-1e6 (sample ")
                               : std::string("input: holds NaN or infinite values (sample ")) +
          std::to_string(i / sample) + ")");
  FlushDenormals ftz;
  for (int i = 0; i < n; ++i) {
    const float* src = x + sample * i;
    if (in_c_ == 1) {
      std::memcpy(input_, src, sample * sizeof(float));
    } else {  // NCHW -> NHWC
      for (int c = 0; c < in_c_; ++c)
        for (size_t px = 0; px < hw; ++px) input_[px * in_c_ + c] = src[c * hw + px];
    }
    if (input_quant_) input_quant_->run();
    if (threads_ > 1) {
      run_sample();
    } else {
      for (auto& phase : phases_)
        for (auto& ops : phase.ops)
          for (auto& op : ops) op->run();
    }
    for (auto& op : head_) op->run();
    for (int k = 0; k < classes_; ++k)  // overflow inside the net must not pass as an answer
      if (!std::isfinite(logits_[k]))
        throw std::runtime_error("output: NaN or infinite logits for sample " + std::to_string(i) +
                                 " (activations overflowed: are the weights sane?)");
    std::memcpy(y + static_cast<size_t>(classes_) * i, logits_, classes_ * sizeof(float));
  }
}

}  // namespace nasrt
