// pybind11 face of the runtime: lowered-net specs in, an Executor out; numpy
// arrays in and out, the GIL released while running.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/functional.h>
#include <pybind11/stl.h>

#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string_view>
#include <type_traits>
#include <variant>
#include <optional>
#include <cstring>

#include "kernels/kernels.h"
#include "kernels/registry.h"
#include "runtime/cpu.h"
#include "runtime/executor.h"
#include "runtime/model.h"
#include "runtime/profile.h"
#include "runtime/schedule.h"
#include "runtime/session.h"
#include "runtime/tune.h"

namespace py = pybind11;

namespace {
// pybind11's gil_scoped_release re-takes the GIL in a noexcept destructor. A
// daemon thread that returns from native code while the interpreter exits is
// ended by CPython with pthread_exit, whose forced unwind must not cross a
// noexcept frame (std::terminate: SIGABRT at exit). This guard lets it pass.
class ReleaseGil {
 public:
  ReleaseGil() : state_(PyEval_SaveThread()) {}
  ~ReleaseGil() noexcept(false) { PyEval_RestoreThread(state_); }
  ReleaseGil(const ReleaseGil&) = delete;
  ReleaseGil& operator=(const ReleaseGil&) = delete;

 private:
  PyThreadState* state_;
};
}  // namespace
using nasrt::Backend;

namespace {

std::map<std::string, std::string> bytes_map(const std::map<std::string, py::bytes>& in) {
  std::map<std::string, std::string> out;
  for (const auto& [name, data] : in) out.emplace(name, std::string(data));
  return out;
}

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

std::vector<float> to_vector(const FloatArray& a) {
  return std::vector<float>(a.data(), a.data() + a.size());
}

using nasrt::parse_backend;

std::map<std::string, Backend> parse_backends(const std::map<std::string, std::string>& m) {
  std::map<std::string, Backend> out;
  for (const auto& kv : m) out[kv.first] = parse_backend(kv.second);
  return out;
}

// The geometry of a test conv from its NHWC input (H, W, C) and OIHW weights.
nasrt::ConvSpec test_conv_spec(const py::array& x, const py::array& w, int stride, int groups, bool relu) {
  nasrt::ConvSpec c;
  c.in_c = static_cast<int>(x.shape(2));
  c.out_c = static_cast<int>(w.shape(0));
  c.kernel = static_cast<int>(w.shape(2));
  c.stride = stride;
  c.groups = groups;
  c.relu = relu;
  return c;
}

// One conv on an NHWC input (1, H, W, C): for testing kernels against each other.
py::array_t<float> conv2d(const FloatArray& x, const FloatArray& w, const FloatArray& b,
                          int stride, int groups, bool relu, const std::string& backend) {
  if (x.ndim() != 3 || w.ndim() != 4 || b.ndim() != 1)
    throw std::invalid_argument("conv2d: x (H,W,C), w (O,I/groups,k,k), b (O)");
  nasrt::ConvSpec c = test_conv_spec(x, w, stride, groups, relu);
  if (w.shape(1) * groups != c.in_c || w.shape(3) != c.kernel || b.shape(0) != c.out_c)
    throw std::invalid_argument("conv2d: shapes do not match");
  c.weight = to_vector(w);
  c.bias = to_vector(b);
  const nasrt::ConvGeom g =
      nasrt::conv_geom(c, static_cast<int>(x.shape(0)), static_cast<int>(x.shape(1)));
  const std::vector<float> ohwi = nasrt::oihw_to_ohwi(c.weight.data(), g.group_in, c.kernel, 0, c.out_c);
  std::vector<float> in(x.data(), x.data() + x.size());
  in.resize(in.size() + nasrt::kBufferSlackFloats);
  py::array_t<float> out({g.out_h(), g.out_w(), c.out_c});
  Backend kb = parse_backend(backend);
  if (kb == Backend::Auto) kb = nasrt::builtin_backend();
  auto op = nasrt::make_conv(kb, g, ohwi.data(), c.bias.data(), in.data(),
                             out.mutable_data());
  op->run();
  return out;
}

// One int8 conv on a u8 NHWC input (1, H, W, C), weights OIHW s8, same padding: for
// testing the int8 kernels against each other and the numpy oracle.
py::array_t<uint8_t> conv2d_int8(
    const py::array_t<uint8_t, py::array::c_style | py::array::forcecast>& x, int zx,
    const py::array_t<int8_t, py::array::c_style | py::array::forcecast>& w,
    const py::array_t<int32_t, py::array::c_style | py::array::forcecast>& bias,
    const FloatArray& m, int zy, int stride, int groups, bool relu, const std::string& backend) {
  if (x.ndim() != 3 || w.ndim() != 4 || bias.ndim() != 1 || m.ndim() != 1)
    throw std::invalid_argument("conv2d_int8: x (H,W,C), w (O,I/groups,k,k), bias (O), m (O)");
  nasrt::ConvSpec c = test_conv_spec(x, w, stride, groups, relu);
  if (groups < 1 || w.shape(1) * groups != c.in_c || c.out_c % groups != 0 ||
      w.shape(3) != c.kernel || bias.shape(0) != c.out_c || m.shape(0) != c.out_c)
    throw std::invalid_argument("conv2d_int8: shapes do not match");
  const nasrt::ConvGeom g =
      nasrt::conv_geom(c, static_cast<int>(x.shape(0)), static_cast<int>(x.shape(1)));
  const std::vector<int8_t> ohwi = nasrt::oihw_to_ohwi(w.data(), g.group_in, c.kernel, 0, c.out_c);
  nasrt::Int8Conv q{zx, zy, std::vector<int32_t>(bias.data(), bias.data() + c.out_c),
                    std::vector<float>(m.data(), m.data() + c.out_c)};
  std::vector<uint8_t> in(x.data(), x.data() + x.size());
  in.resize(in.size() + nasrt::kBufferSlackFloats * sizeof(float));
  py::array_t<uint8_t> out({g.out_h(), g.out_w(), c.out_c});
  Backend kb = parse_backend(backend);
  if (kb == Backend::Auto) kb = nasrt::builtin_backend(nasrt::Precision::Int8);
  nasrt::make_conv_int8(kb, g, q, ohwi.data(), in.data(), out.mutable_data())->run();
  return out;
}

// The non-conv int8 ops (kernels.h) on arrays, for testing them against the numpy oracle.
// Pixels are rows of a 2-D array (its width the pixel stride); output channels beyond
// `channels` keep the value `fill`, so a write past a pixel's channels shows.
using U8Array = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;

template <typename Out, typename In>
py::array_t<Out> convert_op(const py::array_t<In, py::array::c_style | py::array::forcecast>& x,
                            int channels, float scale, int zp, int out_stride, Out fill) {
  if (x.ndim() != 2 || channels < 1 || channels > x.shape(1) || out_stride < channels)
    throw std::invalid_argument("x (pixels, stride) with 1 <= channels <= both strides");
  const size_t pixels = static_cast<size_t>(x.shape(0));
  std::vector<Out> out(pixels * out_stride + nasrt::kBufferSlackFloats * 4, fill);
  std::unique_ptr<nasrt::Op> op;
  if constexpr (std::is_same_v<In, float>)
    op = nasrt::make_quantize(x.data(), static_cast<int>(x.shape(1)), out.data(), out_stride,
                              channels, 0, pixels, scale, zp);
  else
    op = nasrt::make_dequantize(x.data(), static_cast<int>(x.shape(1)), out.data(), out_stride,
                                channels, 0, pixels, scale, zp);
  op->run();
  py::array_t<Out> r({static_cast<py::ssize_t>(pixels), static_cast<py::ssize_t>(out_stride)});
  std::copy(out.begin(), out.begin() + pixels * out_stride, r.mutable_data());
  return r;
}

py::array_t<uint8_t> sum_int8_op(const std::vector<U8Array>& xs, int zx, float m, int zy,
                                 size_t begin, size_t end) {
  if (xs.empty() || end < begin) throw std::invalid_argument("xs: at least one array; begin <= end");
  std::vector<const uint8_t*> ins;
  for (const U8Array& x : xs) {
    if (static_cast<size_t>(x.size()) < end) throw std::invalid_argument("xs: shorter than end");
    ins.push_back(x.data());
  }
  py::array_t<uint8_t> out(static_cast<py::ssize_t>(end));
  std::fill(out.mutable_data(), out.mutable_data() + end, uint8_t{0xab});
  nasrt::make_sum_int8(ins, zx, m, zy, out.mutable_data(), begin, end)->run();
  return out;
}

// The residual add over pixel rows: a and b (pixels, stride) u8, `channels` of each pixel.
py::array_t<uint8_t> residual_add_int8_op(const U8Array& a, int za, float ma, const U8Array& b,
                                          int zb, float mb, int zy, int channels, int out_stride) {
  if (a.ndim() != 2 || b.ndim() != 2 || a.shape(0) != b.shape(0) || channels < 1 ||
      channels > a.shape(1) || channels > b.shape(1) || out_stride < channels)
    throw std::invalid_argument("a, b (pixels, stride) with 1 <= channels <= every stride");
  const size_t pixels = static_cast<size_t>(a.shape(0));
  std::vector<uint8_t> out(pixels * out_stride + nasrt::kBufferSlackFloats * 4, uint8_t{0xab});
  nasrt::make_residual_add_int8(a.data(), static_cast<int>(a.shape(1)), za, ma, b.data(),
                                static_cast<int>(b.shape(1)), zb, mb, out.data(), out_stride, zy,
                                channels, 0, pixels)
      ->run();
  py::array_t<uint8_t> r({static_cast<py::ssize_t>(pixels), static_cast<py::ssize_t>(out_stride)});
  std::memcpy(r.mutable_data(), out.data(), pixels * out_stride);
  return r;
}

py::array_t<uint8_t> gap_int8_op(const U8Array& x, int channels, int zx, float m, int zy) {
  if (x.ndim() != 2 || channels < 1 || channels > x.shape(1))
    throw std::invalid_argument("x (pixels, stride) with 1 <= channels <= stride");
  py::array_t<uint8_t> out(channels);
  nasrt::make_global_avg_pool_int8(static_cast<int>(x.shape(0)), channels,
                                   static_cast<int>(x.shape(1)), x.data(), zx, m, zy,
                                   out.mutable_data())
      ->run();
  return out;
}

// Hidden FC (u8 out) or, with logits, the last FC (float32 out, m the scales).
py::object fc_int8_op(const U8Array& x, const py::array_t<int8_t, py::array::c_style | py::array::forcecast>& w,
                      const std::vector<int32_t>& bias, int zx, const std::vector<float>& m,
                      int zy, bool relu, bool logits) {
  if (x.ndim() != 1 || w.ndim() != 2 || w.shape(1) != x.shape(0) ||
      bias.size() != static_cast<size_t>(w.shape(0)) || m.size() != bias.size())
    throw std::invalid_argument("fc_int8: x (in), w (out, in), bias and m (out)");
  const int in = static_cast<int>(w.shape(1)), n = static_cast<int>(w.shape(0));
  if (logits) {
    py::array_t<float> y(n);
    nasrt::make_fc_int8_logits(in, n, w.data(), bias, zx, m, x.data(), y.mutable_data())->run();
    return std::move(y);
  }
  py::array_t<uint8_t> y(n);
  nasrt::make_fc_int8(in, n, relu, w.data(), bias, zx, m, zy, x.data(), y.mutable_data())->run();
  return std::move(y);
}

// [phase][share] -> list of dicts: what each op computes (for latency models).
py::list schedule_list(const nasrt::Schedule& schedule) {
  py::list phases;
  for (const auto& phase : schedule) {
    py::list shares;
    for (const auto& share : phase) {
      py::list ops;
      for (const nasrt::OpTag& t : share) {
        static const char* kinds[] = {"stem", "conv", "merge", "shortcut", "add"};
        ops.append(py::dict(py::arg("kind") = kinds[t.kind], py::arg("path") = t.path,
                            py::arg("layer") = t.layer, py::arg("conv") = t.conv,
                            py::arg("rows") = t.rows, py::arg("total_rows") = t.total_rows));
      }
      shares.append(ops);
    }
    phases.append(shares);
  }
  return phases;
}

// [{name, precision, backend, us, shape}] of a tuning, for Python.
py::list timings_list(const std::vector<nasrt::ConvTiming>& t) {
  py::list out;
  for (const auto& c : t) {
    py::dict us;
    for (const auto& [b, v] : c.us) us[py::str(nasrt::backend_name(b))] = v;
    out.append(py::dict(py::arg("name") = c.name,
                        py::arg("precision") = c.precision == nasrt::Precision::Int8 ? "int8" : "fp32",
                        py::arg("backend") = nasrt::backend_name(c.best),
                        py::arg("us") = us,
                        py::arg("shape") = std::vector<int>{c.in_c, c.out_c, c.kernel, c.stride,
                                                            c.groups, c.h, c.w}));
  }
  return out;
}

const char* kScheduleDoc =
    "The compiled schedule: [phase][share] -> ops (dicts: kind, path, layer, conv, rows, "
    "total_rows). Share s runs on thread s % threads unless another takes it over; a phase ends "
    "when all its ops are done.";

}  // namespace

namespace {

const char* kQuantDoc =
    "A format-3 model's int8 fields as the loader parsed them (None for a float model): "
    "input / features / sums[after] / adds[paths.<p>.blocks.<l>.add]: (scale, zero_point); "
    "layers[name]: precision, out "
    "(scale, zero_point; None for the last FC) and, for int8, weight (bytes), weight_scale, bias.";

py::object quant_fields(const nasrt::LoadedModel& m) {
  const nasrt::NetSpec& n = m.net;
  if (!n.quantized) return py::none();
  auto act = [](const nasrt::ActQuant& a) -> py::object { return py::make_tuple(a.scale, a.zero_point); };
  py::dict layers, sums, adds;
  auto layer = [&](const std::string& name, nasrt::Precision p, const nasrt::Int8Weights& q,
                   py::object out) {
    py::dict d;
    d["precision"] = p == nasrt::Precision::Int8 ? "int8" : "fp32";
    d["out"] = out;
    if (p == nasrt::Precision::Int8) {
      d["weight"] = py::bytes(reinterpret_cast<const char*>(q.weight.data()), q.weight.size());
      d["weight_scale"] = q.weight_scale;
      d["bias"] = q.bias;
    }
    layers[py::str(name)] = d;
  };
  auto conv = [&](const nasrt::ConvSpec& c) { layer(c.name, c.precision, c.q, act(c.out_q)); };
  for (const auto& c : n.stem) conv(c);
  for (size_t p = 0; p < n.paths.size(); ++p)
    for (size_t l = 0; l < n.paths[p].size(); ++l) {
      const nasrt::BlockSpec& block = n.paths[p][l];
      for (const auto& c : block.convs) conv(c);
      if (block.shortcut) conv(*block.shortcut);
      if (block.residual)
        adds[py::str("paths." + std::to_string(p) + ".blocks." + std::to_string(l) + ".add")] =
            act(block.add_q);
    }
  for (const auto& s : n.syncs) {
    if (s.concat_conv) conv(s.conv);
    else sums[py::int_(s.after)] = act(s.out_q);
  }
  for (size_t i = 0; i < n.head.size(); ++i) {
    const auto& f = n.head[i];
    layer(f.name, f.precision, f.q, i + 1 == n.head.size() ? py::none() : act(f.out_q));
  }
  py::dict out;
  out["input"] = act(n.input_q);
  out["features"] = act(n.features_q);
  out["layers"] = layers;
  out["sums"] = sums;
  out["adds"] = adds;
  return out;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = R"pbdoc(nasrt C++ runtime: path-parallel executor over XNNPACK or reference kernels.)pbdoc";

  py::class_<nasrt::ConvSpec>(m, "ConvSpec", "A conv with folded BN (weight OIHW).")
      .def(py::init([](int in_c, int out_c, int kernel, int stride, int groups, bool relu,
                       const FloatArray& weight, const FloatArray& bias, std::string name) {
             nasrt::ConvSpec c;
             c.name = std::move(name);
             c.in_c = in_c, c.out_c = out_c, c.kernel = kernel, c.stride = stride;
             c.groups = groups, c.relu = relu;
             c.weight = to_vector(weight);
             c.bias = to_vector(bias);
             return c;
           }),
           py::arg("in_c"), py::arg("out_c"), py::arg("kernel"), py::arg("stride"),
           py::arg("groups"), py::arg("relu"), py::arg("weight"), py::arg("bias"),
           py::arg("name") = "");

  py::class_<nasrt::FcSpec>(m, "FcSpec", "A fully connected layer (weight [out, in]).")
      .def(py::init([](int in, int out, bool relu, const FloatArray& weight,
                       const FloatArray& bias) {
             nasrt::FcSpec f;
             f.in = in, f.out = out, f.relu = relu;
             f.weight = to_vector(weight);
             f.bias = to_vector(bias);
             return f;
           }),
           py::arg("in_features"), py::arg("out_features"), py::arg("relu"), py::arg("weight"),
           py::arg("bias"));

  py::class_<nasrt::SyncSpec>(m, "SyncSpec", "A kept sync point: sum, or conv1x1 over the concat.")
      .def(py::init([](int after, std::optional<nasrt::ConvSpec> conv) {
             nasrt::SyncSpec s;
             s.after = after;
             s.concat_conv = conv.has_value();
             if (conv) s.conv = *conv;
             return s;
           }),
           py::arg("after"), py::arg("conv") = py::none());

  py::class_<nasrt::BlockSpec>(m, "BlockSpec",
                               "A residual block: ReLU(chain + shortcut), shortcut None the identity.")
      .def(py::init([](std::vector<nasrt::ConvSpec> convs, std::optional<nasrt::ConvSpec> shortcut) {
             nasrt::BlockSpec b(std::move(convs));
             b.residual = true;
             b.shortcut = std::move(shortcut);
             return b;
           }),
           py::arg("convs"), py::arg("shortcut") = py::none());

  py::class_<nasrt::NetSpec>(m, "NetSpec",
                             "A net lowered to conv chains (a layer: a list of ConvSpec or a BlockSpec).")
      .def(py::init([](std::vector<int> input, std::vector<nasrt::ConvSpec> stem,
                       std::vector<std::vector<std::variant<std::vector<nasrt::ConvSpec>, nasrt::BlockSpec>>> paths,
                       std::vector<nasrt::SyncSpec> syncs, std::vector<nasrt::FcSpec> head) {
             if (input.size() != 3) throw std::invalid_argument("input: need [C, H, W]");
             nasrt::NetSpec n;
             n.in_c = input[0], n.in_h = input[1], n.in_w = input[2];
             n.stem = std::move(stem);
             for (auto& path : paths) {
               auto& blocks = n.paths.emplace_back();
               for (auto& layer : path)
                 if (auto* chain = std::get_if<std::vector<nasrt::ConvSpec>>(&layer))
                   blocks.emplace_back(std::move(*chain));
                 else
                   blocks.push_back(std::get<nasrt::BlockSpec>(std::move(layer)));
             }
             n.syncs = std::move(syncs);
             n.head = std::move(head);
             return n;
           }),
           py::arg("input"), py::arg("stem"), py::arg("paths"), py::arg("syncs"), py::arg("head"));

  py::class_<nasrt::Executor>(m, "Executor", R"pbdoc(
Runs a NetSpec: thread slot 0 is the calling thread (never pinned), slots
1..threads-1 are persistent workers pinned to cores[1..]. Paths are shared
round-robin over the threads, a thread that is done takes over ops a late one
has not started, and each phase (kept sync points among them) ends when all
its ops are done. adapt: run on the caller alone while P threads measure
slower (see Executor::run_sample).)pbdoc")
      .def(py::init([](const nasrt::NetSpec& net, int threads, std::vector<int> cores,
                       const std::string& backend, double wait_spin_us, double idle_spin_us,
                       bool balance, const std::map<std::string, std::string>& conv_backends,
                       bool adapt) {
             nasrt::ExecOptions o;
             o.adapt = adapt;
             o.threads = threads;
             o.cores = std::move(cores);
             o.backend = parse_backend(backend);
             o.conv_backends = parse_backends(conv_backends);
             o.wait_spin_ns = static_cast<int64_t>(wait_spin_us * 1000);
             o.idle_spin_ns = static_cast<int64_t>(idle_spin_us * 1000);
             o.balance = balance;
             return std::make_unique<nasrt::Executor>(net, o);
           }),
           py::arg("net"), py::arg("threads"), py::arg("cores"), py::arg("backend"),
           py::arg("wait_spin_us") = 500.0, py::arg("idle_spin_us") = 200.0,
           py::arg("balance") = true,
           py::arg("conv_backends") = std::map<std::string, std::string>(),
           py::arg("adapt") = true)
      .def(
          "run",
          [](nasrt::Executor& e, py::array_t<float, py::array::c_style> x, int n,
             py::array_t<float, py::array::c_style> y) {
            // The Python wrapper checks shapes; sizes are checked here too, so a
            // direct call can never read or write out of bounds.
            if (n < 0 || y.size() != static_cast<py::ssize_t>(n) * e.classes())
              throw std::invalid_argument("run: output buffer has the wrong size");
            if (x.size() != static_cast<py::ssize_t>(n) * e.input_size())
              throw std::invalid_argument("run: input has the wrong size");
            const float* xp = x.data();
            float* yp = y.mutable_data();
            ReleaseGil release;
            e.run(xp, n, yp);
          },
          py::arg("x"), py::arg("n"), py::arg("y"),
          "Runs n samples (NCHW float32, C-contiguous) into y (n x classes).")
      .def_property_readonly("threads", &nasrt::Executor::threads)
      .def_property_readonly("paths", &nasrt::Executor::paths)
      .def_property_readonly("classes", &nasrt::Executor::classes)
      .def_property_readonly("phases", &nasrt::Executor::phases)
      .def(
          "schedule", [](const nasrt::Executor& e) { return schedule_list(e.schedule()); },
          kScheduleDoc)
      .def_property_readonly("pinned_cores", &nasrt::Executor::pinned_cores)
      .def_property_readonly("taken_over", &nasrt::Executor::taken_over)
      .def_property_readonly("solo_runs", &nasrt::Executor::solo_runs)
      .def_property_readonly("backend",
                             [](const nasrt::Executor& e) { return nasrt::backend_name(e.backend()); })
      .def_property_readonly(
          "kernels",
          [](const nasrt::Executor& e) {
            std::vector<std::pair<std::string, std::string>> out;
            for (const auto& k : e.kernels()) out.emplace_back(k.name, nasrt::backend_name(k.backend));
            return out;
          },
          "(conv name, backend) of every conv, as resolved at load.")
      .def_property_readonly(
          "kernel_precisions",
          [](const nasrt::Executor& e) {
            std::vector<std::pair<std::string, std::string>> out;
            for (const auto& k : e.kernels())
              out.emplace_back(k.name, k.precision == nasrt::Precision::Int8 ? "int8" : "fp32");
            return out;
          },
          "(conv name, \"fp32\" or \"int8\") of every conv: what it computes in.");

  static py::object model_error = py::module_::import("nasrt.errors").attr("ModelError");
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const nasrt::ModelError& e) {
      PyErr_SetString(model_error.ptr(), e.what());
    }
  });
  py::class_<nasrt::LoadedModel, std::shared_ptr<nasrt::LoadedModel>>(
      m, "LoadedModel", "A model file read and validated in C++.")
      .def_readonly("net", &nasrt::LoadedModel::net)
      .def_readonly("metadata", &nasrt::LoadedModel::metadata)
      .def_property_readonly("content_hash", &nasrt::content_hash_hex)
      .def_property_readonly("quant", &quant_fields, kQuantDoc);
  m.def(
      "drain_runs",
      [](double seconds) {
        ReleaseGil release;
        nasrt::drain_runs(seconds);
      },
      py::arg("seconds"),
      "At interpreter exit: refuse new runs (their threads park) and wait for those in flight.");
  m.def(
      "load_model",
      [](const std::string& path) {
        ReleaseGil release;
        return std::make_shared<nasrt::LoadedModel>(nasrt::load_model(path));
      },
      py::arg("path"), "Reads and validates model.nasrt natively; raises nasrt.ModelError.");
  m.def(
      "load_model_bytes",
      [](const py::bytes& data, const std::string& name) {
        const std::string_view bytes = data;
        ReleaseGil release;
        return std::make_shared<nasrt::LoadedModel>(nasrt::parse_model(
            reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), name));
      },
      py::arg("data"), py::arg("name"),
      "Validates the bytes of a model file (`name` in errors); raises nasrt.ModelError.");
  py::class_<nasrt::Session>(m, "Session", R"pbdoc(
A model with its tuning policy applied and its executor built (as the C API opens
models): backend "auto" runs each conv on the choice of the tuning file beside the
model when it matches this model and CPU (else the built-in rule, and `notice`
says why a file was ignored); tune=True times every conv now and writes that
file. tuning_file "": none (tuned now, nothing kept). threads 0: min(paths, cores).)pbdoc")
      .def(py::init([](std::shared_ptr<nasrt::LoadedModel> model, const std::string& name,
                       const std::string& tuning_file, int threads, std::vector<int> cores,
                       const std::string& backend, bool balance, bool tune, bool adapt) {
             nasrt::SessionOptions o;
             o.threads = threads;
             o.cores = std::move(cores);
             o.backend = parse_backend(backend);
             o.balance = balance;
             o.tune = tune;
             o.adapt = adapt;
             ReleaseGil release;  // tuning takes seconds
             return std::make_unique<nasrt::Session>(std::move(model), name, tuning_file, o);
           }),
           py::arg("model"), py::arg("name"), py::arg("tuning_file"), py::arg("threads") = 0,
           py::arg("cores") = std::vector<int>(), py::arg("backend") = "auto",
           py::arg("balance") = true, py::arg("tune") = false, py::arg("adapt") = true)
      .def_property_readonly(
          "executor", [](nasrt::Session& s) -> nasrt::Executor& { return s.executor(); },
          py::return_value_policy::reference_internal)
      .def_property_readonly("notice",
                             [](const nasrt::Session& s) { return s.tuning().notice; })
      .def_property_readonly(
          "tuning",
          [](const nasrt::Session& s) -> py::object {
            if (s.tuning().timings.empty()) return py::none();
            return timings_list(s.tuning().timings);
          },
          "Per-conv timings ([{name, precision, backend, us, shape}]) when tuned now, else None.")
      .def_property_readonly(
          "tuning_net",
          [](const nasrt::Session& s) -> py::object {
            const nasrt::NetCheck& n = s.tuning().net;
            if (n.threads.empty()) return py::none();
            py::list runs;
            for (size_t i = 0; i < n.threads.size(); ++i)
              runs.append(py::dict(py::arg("threads") = n.threads[i],
                                   py::arg("tuned_us") = n.us[i][0],
                                   py::arg("builtin_us") = n.us[i][1]));
            return py::dict(py::arg("kept") = n.keep_tuned ? "tuned" : "builtin",
                            py::arg("runs") = runs);
          },
          "The whole-net check of a tuning made now ({kept, runs: [{threads, tuned_us, "
          "builtin_us}]}), or None when every choice is the built-in one or nothing was tuned.");
  m.def(
      "tune_convs",
      [](const nasrt::LoadedModel& model, int runs, int rounds, bool reference) {
        std::vector<nasrt::ConvTiming> t;
        {
          ReleaseGil release;
          t = nasrt::tune_convs(model.net, runs, rounds, reference);
        }
        return timings_list(t);
      },
      py::arg("model"), py::arg("runs") = 60, py::arg("rounds") = 5, py::arg("reference") = false,
      "Every conv timed in its precision on every backend that has kernels of it and passes the "
      "self-check, as `nasrt tune` does (the reference kernels too with reference=True): "
      "[{name, precision, backend (the fastest), us, shape}].");
  m.def(
      "compare_nets",
      [](const nasrt::LoadedModel& a, const nasrt::LoadedModel& b, int threads, int runs, int rounds) {
        nasrt::NetCheck n;
        {
          ReleaseGil release;
          n = nasrt::compare_nets(a.net, {}, b.net, {}, threads, runs, rounds);
        }
        py::list out;
        for (size_t i = 0; i < n.threads.size(); ++i)
          out.append(py::dict(py::arg("threads") = n.threads[i], py::arg("a_us") = n.us[i][0],
                              py::arg("b_us") = n.us[i][1]));
        return out;
      },
      py::arg("a"), py::arg("b"), py::arg("threads"), py::arg("runs") = 200, py::arg("rounds") = 5,
      "Whole-net latency of two models of one input shape under the built-in kernel rule, as "
      "`nasrt tune`'s whole-net check times it (interleaved rounds, min of round medians, batch 1) "
      "on 1 thread and on `threads`: [{threads, a_us, b_us}].");
  m.def(
      "netspec_from_graph",
      [](const std::string& graph, const std::map<std::string, FloatArray>& tensors) {
        const nasrt::TensorLookup lookup = [&](const std::string& name,
                                               const std::vector<int64_t>& shape) -> const void* {
          auto it = tensors.find(name);
          if (it == tensors.end()) throw nasrt::ModelError("graph: tensor " + name + ": missing");
          const FloatArray& a = it->second;
          std::vector<int64_t> have(a.shape(), a.shape() + a.ndim());
          if (have != shape) throw nasrt::ModelError("graph: tensor " + name + ": wrong shape");
          return a.data();
        };
        return nasrt::netspec_from_graph(graph, lookup, "graph");
      },
      py::arg("graph"), py::arg("tensors"),
      "The executor's NetSpec from a lowered graph (JSON) and its tensors.");
  m.def(
      "load_tuning",
      [](const std::string& path, const std::string& model_hash) {
        std::string notice;
        std::map<std::string, std::string> out;
        for (const auto& [k, b] : nasrt::load_tuning(path, model_hash, &notice))
          out[k] = nasrt::backend_name(b);
        return py::make_tuple(out, notice);
      },
      py::arg("path"), py::arg("model_hash"),
      "(choices by conv name, notice): empty choices and a one-line notice when the file does not apply.");
  m.def("tuning_path", &nasrt::tuning_path, py::arg("model_path"));
  m.def("cpu_signature", &nasrt::cpu_signature, "CPU model | ISA | compiled backends.");
  m.def("host_isa", &nasrt::host_isa, "avx512, avx2, avx, sse or neon.");
  m.def("cpu_model", &nasrt::cpu_model);
  m.def(
      "builtin_backend", [] { return nasrt::backend_name(nasrt::builtin_backend()); },
      "The backend every conv runs on without a tuning file (the built-in rule).");
  m.def("onednn_compiled", &nasrt::onednn_compiled, "True if built with oneDNN.");
  m.def(
      "compiled_backends",
      [] {
        std::vector<std::string> out;
        for (Backend b : nasrt::compiled_backends()) out.push_back(nasrt::backend_name(b));
        return out;
      },
      "Kernel backends in this build.");

  m.def(
      "schedule",
      [](const nasrt::NetSpec& net, int threads, bool balance) {
        return schedule_list(nasrt::compile_schedule(net, threads, balance));
      },
      py::arg("net"), py::arg("threads"), py::arg("balance") = true,
      "The schedule an Executor of `threads` threads runs, from the net alone (no buffers, no "
      "kernels; every conv counted as splittable). Same form as Executor.schedule().");
  m.def("conv2d", &conv2d, py::arg("x"), py::arg("w"), py::arg("b"), py::arg("stride"),
        py::arg("groups"), py::arg("relu"), py::arg("backend"),
        "One NHWC conv (x: H,W,C; w: OIHW) on one backend: for kernel tests.");
  m.def("conv2d_int8", &conv2d_int8, py::arg("x"), py::arg("zx"), py::arg("w"), py::arg("bias"),
        py::arg("m"), py::arg("zy"), py::arg("stride"), py::arg("groups"), py::arg("relu"),
        py::arg("backend"),
        "One int8 NHWC conv (x: H,W,C u8; w: OIHW s8; bias s32; m f32 per output channel) on "
        "one backend, falling back as at load: for kernel tests.");
  m.def("quantize_op", &convert_op<uint8_t, float>, py::arg("x"), py::arg("channels"),
        py::arg("scale"), py::arg("zp"), py::arg("out_stride"), py::arg("fill") = 0xab,
        "The int8 executor's f32 -> u8 conversion of pixel rows (kernel tests).");
  m.def("dequantize_op", &convert_op<float, uint8_t>, py::arg("x"), py::arg("channels"),
        py::arg("scale"), py::arg("zp"), py::arg("out_stride"), py::arg("fill") = -7.0f,
        "The int8 executor's u8 -> f32 conversion of pixel rows (kernel tests).");
  m.def("sum_int8_op", &sum_int8_op, py::arg("xs"), py::arg("zx"), py::arg("m"), py::arg("zy"),
        py::arg("begin"), py::arg("end"), "The int8 sum merge over [begin, end) (kernel tests).");
  m.def("residual_add_int8_op", &residual_add_int8_op, py::arg("a"), py::arg("za"), py::arg("ma"),
        py::arg("b"), py::arg("zb"), py::arg("mb"), py::arg("zy"), py::arg("channels"),
        py::arg("out_stride"),
        "The int8 residual add + ReLU of pixel rows (kernel tests); unwritten codes are 0xab.");
  m.def("gap_int8_op", &gap_int8_op, py::arg("x"), py::arg("channels"), py::arg("zx"),
        py::arg("m"), py::arg("zy"), "The int8 global average pool (kernel tests).");
  m.def("fc_int8_op", &fc_int8_op, py::arg("x"), py::arg("w"), py::arg("bias"), py::arg("zx"),
        py::arg("m"), py::arg("zy"), py::arg("relu"), py::arg("logits"),
        "The int8 FC, hidden (u8) or last (float32 logits) (kernel tests).");
  m.def(
      "profile_kit",
      [](const std::string& manifest, const std::map<std::string, py::bytes>& models,
         const std::map<std::string, std::function<double(int, int)>>& calls,
         const std::function<void()>& progress, const std::string& source) {
        const nasrt::Kit kit = nasrt::parse_kit(manifest, bytes_map(models), source);
        nasrt::ProfileHooks hooks;
        hooks.caller = "python";
        hooks.call = [&calls](const nasrt::KitProbe& p, int runs, int warmup) {
          const auto it = calls.find(p.key);
          if (it == calls.end()) throw std::invalid_argument("calls: no timer for probe " + p.key);
          return it->second(runs, warmup);  // pybind11 takes the GIL for the call
        };
        hooks.progress = progress;
        ReleaseGil release;
        return nasrt::run_kit(kit, hooks);
      },
      py::arg("manifest"), py::arg("models"), py::arg("calls"), py::arg("progress"),
      py::arg("source"),
      "Times a profile kit (kit.json text, model bytes by name) and returns lut.json's text; "
      "calls[key](runs, warmup) times each call probe from Python (median us).");
  m.def(
      "assemble_lut",
      [](const std::string& manifest, const std::map<std::string, py::bytes>& models,
         const std::map<std::string, std::vector<double>>& rounds_us, const std::string& caller) {
        return nasrt::assemble_lut(nasrt::parse_kit(manifest, bytes_map(models), "kit"), rounds_us,
                                   caller);
      },
      py::arg("manifest"), py::arg("models"), py::arg("rounds_us"), py::arg("caller"),
      "lut.json's text from planted round medians (us) per probe key: the recipe alone, for tests.");
  m.def(
      "machine_info", [] { return nasrt::machine_info_json(); },
      "The machine as the native profile records it (JSON text).");
  m.def("xnnpack_compiled", &nasrt::xnnpack_compiled, "True if built with XNNPACK.");
  m.def("available_cores", &nasrt::available_cores, "Cores this process may run on.");
}
