// Tuning: time each conv on each backend, keep the fastest; the tuning file.
#include "runtime/tune.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <memory>
#include <stdexcept>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "runtime/cpu.h"
#include "runtime/model.h"

namespace nasrt {
namespace {

using json = nlohmann::json;

std::vector<Backend> candidates(Precision precision, bool reference) {
  std::vector<Backend> out;
  for (Backend b : compiled_backends())
    if ((reference || b != Backend::Reference) && find_kernels(b, precision)) out.push_back(b);
  if (out.empty()) out.push_back(Backend::Reference);
  return out;
}

struct Probe {
  ConvTiming t;
  std::vector<float> in, out;
  std::vector<uint8_t> qin, qout;
  std::map<Backend, std::unique_ptr<Op>> ops;
  std::map<Backend, std::vector<double>> rounds;
};

// A conv's ops on every candidate of its precision. Only a backend that passes the
// load-time self-check (fp32: the whole conv and the row pieces the executor may split
// it into; int8: the whole conv) is timed, so tuning never picks a broken implementation.
void make_probe_ops(const ConvSpec& c, int h, int w, int shares, bool reference, Probe& p) {
  const ConvGeom g = conv_geom(c, h, w);
  const size_t in_n = static_cast<size_t>(c.in_c) * h * w + kBufferSlackFloats * 4;
  const size_t out_n = static_cast<size_t>(c.out_c) * g.out_h() * g.out_w() + kBufferSlackFloats * 4;
  const auto refused = [&](Backend b, const std::string& why) {
    std::fprintf(stderr, "nasrt tune: conv %s: %s failed the self-check (%s): not a candidate\n",
                 c.name.c_str(), backend_name(b).c_str(), why.c_str());
  };
  if (c.precision == Precision::Int8) {
    // The timing does not depend on the quantisation parameters' values: any valid set.
    Int8Conv q;
    q.zy = c.out_q.zero_point;
    q.bias = c.q.bias;
    q.m.assign(c.out_c, 1.0f / 256);
    const std::vector<int8_t> wt = oihw_to_ohwi(c.q.weight.data(), g.group_in, c.kernel, 0, c.out_c);
    p.qin.assign(in_n, 128);
    p.qout.assign(out_n, 0);
    for (Backend b : candidates(Precision::Int8, reference)) {
      if (b != Backend::Reference) {
        const std::string why = check_conv_int8(b, g, q, wt.data());
        if (!why.empty()) {
          refused(b, why);
          continue;
        }
      }
      p.ops[b] = make_conv_int8(b, g, q, wt.data(), p.qin.data(), p.qout.data());
    }
    if (p.ops.empty())
      p.ops[Backend::Reference] = ref::make_conv_int8(g, q, wt.data(), p.qin.data(), p.qout.data());
    return;
  }
  p.in.assign(in_n, 0.5f);
  p.out.assign(out_n, 0.0f);
  const std::vector<float> wt = oihw_to_ohwi(c.weight.data(), g.group_in, c.kernel, 0, c.out_c);
  const std::vector<std::pair<int, int>> pieces = row_pieces(g.out_h(), shares);
  for (Backend b : candidates(Precision::Fp32, reference)) {
    if (b != Backend::Reference) {
      const ConvCheck r = check_conv(b, g, pieces, wt.data(), c.bias.data());
      if (!r.ok) {
        refused(b, r.why);
        continue;
      }
    }
    p.ops[b] = make_conv(b, g, wt.data(), c.bias.data(), p.in.data(), p.out.data());
  }
  if (p.ops.empty())
    p.ops[Backend::Reference] =
        make_conv(Backend::Reference, g, wt.data(), c.bias.data(), p.in.data(), p.out.data());
}


}  // namespace

std::vector<ConvTiming> tune_convs(const NetSpec& net, int runs, int rounds, bool reference) {
  if (runs < 1 || rounds < 1) throw std::invalid_argument("tune: runs and rounds must be >= 1");
  std::vector<std::unique_ptr<Probe>> probes;
  const int shares = static_cast<int>(net.paths.size());
  for_each_conv(net, [&](const ConvSpec& c, int h, int w) {
    auto p = std::make_unique<Probe>();
    p->t = ConvTiming{c.name, c.in_c, c.out_c, c.kernel, c.stride, c.groups, h, w,
                      c.precision, {}, Backend::Auto};
    make_probe_ops(c, h, w, shares, reference, *p);
    probes.push_back(std::move(p));
  });
  std::vector<double> t;
  for (int r = 0; r < rounds; ++r)  // interleaved: a slow spell hits every candidate alike
    for (auto& p : probes)
      for (auto& [b, op] : p->ops) {
        Op* o = op.get();  // C++17 lambdas cannot capture a structured binding (clang refuses)
        p->rounds[b].push_back(round_median([o] { o->run(); }, runs, t));
      }
  std::vector<ConvTiming> out;
  for (auto& p : probes) {
    double best = 1e300;
    for (auto& [b, v] : p->rounds) {
      p->t.us[b] = *std::min_element(v.begin(), v.end());
      if (p->t.us[b] < best) best = p->t.us[b], p->t.best = b;
    }
    out.push_back(p->t);
  }
  return out;
}

std::map<std::string, Backend> choices(const std::vector<ConvTiming>& t) {
  std::map<std::string, Backend> out;
  for (const ConvTiming& c : t) out[c.name] = c.best;
  return out;
}

std::string tuning_path(const std::string& model_path) { return model_path + ".tune.json"; }

namespace {

bool pid_alive(long pid) { return pid > 0 && (::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM); }

// "<dir>/" and "<name>" of path (dir "" for a bare name).
std::pair<std::string, std::string> split_path(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos) return {"", path};
  return {path.substr(0, slash + 1), path.substr(slash + 1)};
}

// Temp files ".<name>.<pid>.<n>.tmp" of writers of `path` that were killed
// (their pid is gone), as nasrt/_io.py names and removes them.
void remove_stale_temps(const std::string& dir, const std::string& name) {
  DIR* d = ::opendir(dir.empty() ? "." : dir.c_str());
  if (!d) return;
  const std::string prefix = "." + name + ".";
  while (const dirent* e = ::readdir(d)) {
    const std::string f = e->d_name;
    if (f.size() <= prefix.size() + 4 || f.compare(0, prefix.size(), prefix) != 0 ||
        f.compare(f.size() - 4, 4, ".tmp") != 0)
      continue;
    const std::string rest = f.substr(prefix.size());
    const std::string pid = rest.substr(0, rest.find('.'));
    if (pid.empty() || pid.size() > 9 || pid.find_first_not_of("0123456789") != std::string::npos)
      continue;
    if (!pid_alive(std::stol(pid))) ::unlink((dir + f).c_str());  // a link itself, never its target
  }
  ::closedir(d);
}

bool write_all(int fd, const std::string& text) {
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

void save_tuning(const std::string& path, const std::string& model_hash,
                 const std::vector<ConvTiming>& t, const NetCheck* net) {
  const auto us3 = [](double v) { return std::round(v * 1000) / 1000; };
  json convs = json::object();
  for (const ConvTiming& c : t) {
    json us = json::object();
    for (const auto& [b, v] : c.us) us[backend_name(b)] = us3(v);
    json e = {{"backend", backend_name(c.best)},
              {"us", us},
              {"shape", {c.in_c, c.out_c, c.kernel, c.stride, c.groups, c.h, c.w}}};
    if (c.precision == Precision::Int8) e["precision"] = "int8";
    convs[c.name] = e;
  }
  json doc = {{"format", "nasrt.tune"}, {"version", 1},        {"model", model_hash},
              {"cpu", cpu_signature()}, {"isa", host_isa()}, {"convs", convs}};
  if (net) {
    json n = json::array();
    for (size_t i = 0; i < net->threads.size(); ++i)
      n.push_back({{"threads", net->threads[i]},
                   {"tuned_us", us3(net->us[i][0])},
                   {"builtin_us", us3(net->us[i][1])}});
    doc["net"] = {{"kept", net->keep_tuned ? "tuned" : "builtin"}, {"runs", n}};
  }
  atomic_write_text(path, doc.dump(2) + "\n", "the tuning file");
}

void atomic_write_text(const std::string& path, const std::string& text, const std::string& what) {
  const auto [dir, name] = split_path(path);
  const auto failed = [&](const std::string& why) {
    return std::runtime_error(path + ": cannot write " + what + " (" + why + ")");
  };
  remove_stale_temps(dir, name);
  // Exclusive create, no symlink followed: a file or link planted at the temp
  // name is never written through, the next name is tried instead.
  std::string tmp;
  int fd = -1;
  for (int n = 0; n < 100 && fd < 0; ++n) {
    tmp = dir + "." + name + "." + std::to_string(::getpid()) + "." + std::to_string(n) + ".tmp";
    fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST) throw failed(std::strerror(errno));
  }
  if (fd < 0) throw failed("no free temp file name");
  const bool ok = write_all(fd, text) && ::fsync(fd) == 0;
  const int saved = errno;
  if (::close(fd) != 0 || !ok) {
    ::unlink(tmp.c_str());
    throw failed(std::strerror(ok ? errno : saved));
  }
  // rename replaces a link at `path` itself; its target is left alone.
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int e = errno;
    ::unlink(tmp.c_str());
    throw failed(std::strerror(e));
  }
  // The rename itself survives a power cut only once the directory is synced.
  const int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

std::map<std::string, Backend> load_tuning(const std::string& path, const std::string& model_hash,
                                           std::string* notice) {
  const auto ignored = [&](const std::string& why) {
    if (notice) *notice = path + ": ignored (" + why + "); run `nasrt tune` to redo it";
    return std::map<std::string, Backend>();
  };
  // Symlinks are followed (a tuning file shared between copies of a model is
  // legitimate); O_NONBLOCK so a FIFO cannot block the open; only a regular
  // file of bounded size is read (not /dev/zero, not a FIFO).
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return {};  // no tuning file: the built-in choice, silently
    return ignored(std::string("cannot open it: ") + std::strerror(errno));
  }
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return ignored("not a regular file");
  if (st.st_size > static_cast<off_t>(kTuningFileBytes)) return ignored("larger than 16 MiB");
  std::string text(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < text.size()) {
    const ssize_t n = ::read(fd, &text[got], text.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return ignored("cannot read it");
    got += static_cast<size_t>(n);
  }
  return parse_tuning(text, path, model_hash, notice);
}

std::map<std::string, Backend> parse_tuning(const std::string& text, const std::string& path,
                                            const std::string& model_hash, std::string* notice) {
  std::map<std::string, Backend> out;
  const auto ignored = [&](const std::string& why) {
    if (notice) *notice = path + ": ignored (" + why + "); run `nasrt tune` to redo it";
    return std::map<std::string, Backend>();
  };
  if (text.size() > kTuningFileBytes) return ignored("larger than 16 MiB");
  if (!json_depth_within(text.data(), text.data() + text.size(), 16))
    return ignored("not valid JSON (nested too deeply)");
  json doc;
  try {
    doc = json::parse(text);
  } catch (const std::exception&) {
    return ignored("not valid JSON");
  }
  try {
    if (!doc.is_object() || doc.value("format", "") != "nasrt.tune" || doc.value("version", 0) != 1)
      return ignored("not a nasrt tuning file of version 1");
    if (doc.value("model", "") != model_hash) return ignored("made for another model file");
    if (doc.value("cpu", "") != cpu_signature())
      return ignored("made on another CPU or build: " + printable(doc.value("cpu", std::string("?"))));
    const json& convs = doc.at("convs");
    if (!convs.is_object()) return ignored("convs: not an object");
    for (auto it = convs.begin(); it != convs.end(); ++it) {
      const Backend b = parse_backend(it.value().at("backend").get<std::string>());
      if (b == Backend::Auto || !backend_compiled(b))
        return ignored("convs." + printable(it.key()) + ".backend: not in this build");
      const std::string prec = it.value().value("precision", std::string("fp32"));
      if (prec != "fp32" && prec != "int8")
        return ignored("convs." + printable(it.key()) + ".precision: not fp32 or int8");
      if (!find_kernels(b, prec == "int8" ? Precision::Int8 : Precision::Fp32))
        return ignored("convs." + printable(it.key()) + ".backend: has no " + prec + " kernels");
      out[it.key()] = b;
    }
  } catch (const std::exception&) {
    return ignored("malformed entries");
  }
  return out;
}

}  // namespace nasrt
