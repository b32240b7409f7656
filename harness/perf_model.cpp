#include "perf_model.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <numeric>
#include <optional>
#include <set>
#include <sstream>

#include "pipeline.hpp"
#include "logits_fusion.hpp"
#include "tile_grid.hpp"
#include "nnpar/gemm_tiling.hpp"

namespace nnpar::perf {

// ---------------------------------------------------------------------------------------------
// Closed forms

double ring_allreduce_seconds(double bytes, int p, const Link& link, double call_s) {
  if (p <= 1) return 0;
  return call_s + 2.0 * (p - 1) * link.alpha_s + 2.0 * (p - 1) / p * bytes / link.bytes_per_s;
}

double tree_allreduce_seconds(double bytes, int p, const Link& link, double call_s) {
  if (p <= 1) return 0;
  return call_s + 2.0 * std::ceil(std::log2(double(p))) * link.alpha_s + 2.0 * bytes / link.bytes_per_s;
}

double p2p_seconds(double bytes, const Link& link, double call_s) {
  return call_s + link.alpha_s + bytes / link.bytes_per_s;
}

double bubble_fraction(int stages, int micro) { return ideal_bubble_fraction(stages, micro); }

const char* form_name(Form f) {
  switch (f) {
    case Form::forward: return "forward";
    case Form::weight_grad: return "weight_grad";
    case Form::input_grad: return "input_grad";
  }
  return "?";
}

// ---------------------------------------------------------------------------------------------
// Fitting

namespace {

// Non-negative least squares for a handful of unknowns: every subset of active unknowns is
// solved by the normal equations and the best feasible one kept (2^n subsets, n <= 3).
std::vector<double> nnls_small(const std::vector<std::vector<double>>& rows, const std::vector<double>& target) {
  const std::size_t n = rows.empty() ? 0 : rows[0].size();
  std::vector<double> best(n, 0.0);
  double best_residual = std::numeric_limits<double>::infinity();
  for (unsigned mask = 1; mask < (1u << n); ++mask) {
    std::vector<std::size_t> active;
    for (std::size_t k = 0; k < n; ++k)
      if (mask & (1u << k)) active.push_back(k);
    const std::size_t m = active.size();
    std::vector<std::vector<double>> a(m, std::vector<double>(m + 1, 0.0));
    for (std::size_t r = 0; r < rows.size(); ++r)
      for (std::size_t i = 0; i < m; ++i) {
        for (std::size_t j = 0; j < m; ++j) a[i][j] += rows[r][active[i]] * rows[r][active[j]];
        a[i][m] += rows[r][active[i]] * target[r];
      }
    bool singular = false;
    for (std::size_t c = 0; c < m && !singular; ++c) {
      std::size_t pivot = c;
      for (std::size_t r = c + 1; r < m; ++r)
        if (std::abs(a[r][c]) > std::abs(a[pivot][c])) pivot = r;
      if (std::abs(a[pivot][c]) < 1e-300) {
        singular = true;
        break;
      }
      std::swap(a[c], a[pivot]);
      for (std::size_t r = 0; r < m; ++r) {
        if (r == c) continue;
        const double f = a[r][c] / a[c][c];
        for (std::size_t k = c; k <= m; ++k) a[r][k] -= f * a[c][k];
      }
    }
    if (singular) continue;
    std::vector<double> x(n, 0.0);
    bool feasible = true;
    for (std::size_t i = 0; i < m; ++i) {
      x[active[i]] = a[i][m] / a[i][i];
      if (!(x[active[i]] >= 0)) feasible = false;
    }
    if (!feasible) continue;
    double residual = 0;
    for (std::size_t r = 0; r < rows.size(); ++r) {
      double v = -target[r];
      for (std::size_t k = 0; k < n; ++k) v += rows[r][k] * x[k];
      residual += v * v;
    }
    if (residual < best_residual) best_residual = residual, best = x;
  }
  return best;
}

double kernel_flops(int rows, int in, int out) { return 2.0 * rows * in * out; }
double kernel_elements(int rows, int in, int out) {
  return double(rows) * in + double(rows) * out + double(in) * out;
}

// Piecewise interpolation in a sorted (x, y) table, log-log or linear in between; outside it,
// y scales with x from the end point (above) or stays at the first point's value (below: a
// fixed per-call cost).
double interpolate(const std::vector<std::pair<double, double>>& table, double x, bool logarithmic) {
  if (table.empty()) return 0;
  if (x <= table.front().first) return table.front().second;
  if (x >= table.back().first) return table.back().second * x / table.back().first;
  auto hi = std::lower_bound(table.begin(), table.end(), x, [](const auto& p, double v) { return p.first < v; });
  auto lo = hi - 1;
  if (!logarithmic) return lo->second + (x - lo->first) / (hi->first - lo->first) * (hi->second - lo->second);
  const double t = (std::log(x) - std::log(lo->first)) / (std::log(hi->first) - std::log(lo->first));
  return std::exp(std::log(lo->second) + t * (std::log(hi->second) - std::log(lo->second)));
}
double loglog(const std::vector<std::pair<double, double>>& table, double x) { return interpolate(table, x, true); }
// A prediction row's notes, "; "-separated.
void add_note(std::string& note, const std::string& text) { note += (note.empty() ? "" : "; ") + text; }
// Linear in between: for tables whose values may be 0.
double linear_between(const std::vector<std::pair<double, double>>& table, double x) {
  return interpolate(table, x, false);
}

}  // namespace

void KernelTable::fit_points() {
  if (points.size() < 3) return;
  std::vector<std::vector<double>> rows;
  std::vector<double> target;
  for (const KernelPoint& p : points) {
    // Relative error: every point counts alike, whatever its size.
    rows.push_back({1.0 / p.seconds, kernel_flops(p.rows, p.in, p.out) / p.seconds,
                    kernel_elements(p.rows, p.in, p.out) / p.seconds});
    target.push_back(1.0);
  }
  const std::vector<double> x = nnls_small(rows, target);
  fit = {x[0], x[1], x[2]};
}

std::pair<double, double> KernelTable::fit_error() const {
  double sum = 0, worst = 0;
  for (const KernelPoint& p : points) {
    const double e = std::abs(fit.seconds(kernel_flops(p.rows, p.in, p.out), kernel_elements(p.rows, p.in, p.out)) -
                              p.seconds) / p.seconds;
    sum += e;
    worst = std::max(worst, e);
  }
  return {points.empty() ? 0 : sum / points.size(), worst};
}

double KernelTable::seconds(int rows, int in, int out) const {
  rows = std::max(rows, 1);
  auto fitted = [&](int r, int i, int o) {
    return std::max(fit.seconds(kernel_flops(r, i, o), kernel_elements(r, i, o)), 1e-12);
  };
  if (points.empty()) return fitted(rows, in, out);
  // The calibrated shape nearest to (in, out) in log space; its own curve over rows carries
  // what the fit misses (packing, tiling, cache effects), scaled to this shape by the fit.
  double best = std::numeric_limits<double>::infinity();
  int near_in = 0, near_out = 0;
  for (const KernelPoint& p : points) {
    const double d = std::pow(std::log(double(p.in) / in), 2) + std::pow(std::log(double(p.out) / out), 2);
    if (d < best) best = d, near_in = p.in, near_out = p.out;
  }
  std::vector<std::pair<double, double>> curve;
  for (const KernelPoint& p : points)
    if (p.in == near_in && p.out == near_out) curve.push_back({double(p.rows), p.seconds});
  std::sort(curve.begin(), curve.end());
  double measured;
  if (rows < curve.front().first) {
    measured = curve.front().second * fitted(rows, near_in, near_out) / fitted(int(curve.front().first), near_in, near_out);
  } else if (rows > curve.back().first) {
    measured = curve.back().second * fitted(rows, near_in, near_out) / fitted(int(curve.back().first), near_in, near_out);
  } else {
    measured = loglog(curve, rows);
  }
  if (near_in == in && near_out == out) return measured;
  return measured * fitted(rows, in, out) / fitted(rows, near_in, near_out);
}

bool KernelTable::has_shares() const {
  return !points.empty() && std::all_of(points.begin(), points.end(), [](const KernelPoint& p) { return p.share > 0; });
}

double KernelTable::share(int rows, int in, int out) const {
  if (!has_shares()) return 1;
  rows = std::max(rows, 1);
  double best = std::numeric_limits<double>::infinity();
  int near_in = 0, near_out = 0;
  for (const KernelPoint& p : points) {
    const double d = std::pow(std::log(double(p.in) / in), 2) + std::pow(std::log(double(p.out) / out), 2);
    if (d < best) best = d, near_in = p.in, near_out = p.out;
  }
  std::vector<std::pair<double, double>> curve;
  for (const KernelPoint& p : points)
    if (p.in == near_in && p.out == near_out) curve.push_back({double(p.rows), p.share});
  std::sort(curve.begin(), curve.end());
  // Outside the measured rows the end point's share holds (a share cannot grow past 1).
  if (rows <= curve.front().first) return curve.front().second;
  if (rows >= curve.back().first) return curve.back().second;
  return std::clamp(loglog(curve, rows), 0.0, 1.0);
}

std::vector<double> simulate_streams(const std::vector<StreamTask>& tasks) {
  const std::size_t n = tasks.size();
  std::vector<double> done(n, -1), left(n);
  std::map<int, std::vector<std::size_t>> streams;
  for (std::size_t i = 0; i < n; ++i) {
    left[i] = std::max(0.0, tasks[i].seconds);
    streams[tasks[i].stream].push_back(i);
    for (int a : tasks[i].after)
      if (a < 0 || std::size_t(a) >= i) throw std::logic_error("simulate_streams: a task may only wait for earlier ones");
  }
  std::map<int, std::size_t> next;
  double now = 0;
  for (std::size_t finished = 0; finished < n;) {
    std::vector<std::size_t> running;
    for (auto& [id, list] : streams) {
      const std::size_t k = next[id];
      if (k >= list.size()) continue;
      const std::size_t t = list[k];
      if (std::all_of(tasks[t].after.begin(), tasks[t].after.end(), [&](int a) { return done[a] >= 0; }))
        running.push_back(t);
    }
    if (running.empty()) throw std::logic_error("simulate_streams: the tasks wait on each other");
    double load = 0;
    for (std::size_t t : running) load += std::clamp(tasks[t].share, 1e-6, 1.0);
    const double rate = load <= 1 ? 1.0 : 1.0 / load;
    double step = std::numeric_limits<double>::infinity();
    for (std::size_t t : running) step = std::min(step, left[t] / rate);
    now += step;
    for (std::size_t t : running) {
      left[t] -= step * rate;
      if (left[t] <= 1e-15) {
        done[t] = now;
        ++next[tasks[t].stream];
        ++finished;
      }
    }
  }
  return done;
}

namespace {

// One run of the block simulator with each task's work per block given (seconds of one block
// alone on an SM).
std::vector<double> run_blocks(const std::vector<BlockTask>& tasks, const std::vector<double>& work, int sms,
                               int per_sm, double gain) {
  const std::size_t n = tasks.size();
  struct Resident {
    std::size_t task;
    double left;
  };
  std::vector<std::vector<Resident>> sm(static_cast<std::size_t>(sms));
  std::vector<double> done(n, -1);
  std::vector<int> pending(n), live(n, 0);
  std::map<int, std::vector<std::size_t>> streams;
  for (std::size_t i = 0; i < n; ++i) {
    pending[i] = std::max(0, tasks[i].blocks);
    streams[tasks[i].stream].push_back(i);
  }
  std::map<int, std::size_t> next;  // per stream: its first task not yet started
  std::vector<std::size_t> queue;   // started tasks with blocks still to dispatch, in start order
  std::size_t finished = 0;
  double now = 0;
  auto rate = [&](std::size_t m) { return (1 + gain * double(m - 1)) / double(m); };
  while (finished < n) {
    // Start every task whose stream reached it and whose dependencies are done, those that
    // became ready together in launch (index) order; a task with no work completes at once,
    // which may start more.
    for (bool more = true; more;) {
      more = false;
      std::vector<std::size_t> ready;
      for (auto& [id, list] : streams) {
        const std::size_t k = next[id];
        if (k >= list.size()) continue;
        const std::size_t t = list[k];
        // A stream's next task also waits for its predecessor to finish (in-order streams).
        if (k > 0 && done[list[k - 1]] < 0) continue;
        if (std::all_of(tasks[t].after.begin(), tasks[t].after.end(), [&](int a) { return done[a] >= 0; }))
          ready.push_back(t);
      }
      std::sort(ready.begin(), ready.end());
      for (std::size_t t : ready) {
        ++next[tasks[t].stream];
        if (pending[t] == 0 || work[t] <= 0) {
          pending[t] = 0;
          done[t] = now;
          ++finished;
          more = true;
        } else {
          queue.push_back(t);
        }
      }
    }
    if (finished == n) break;
    // Dispatch in start order: a later kernel's blocks wait while an earlier one has blocks left.
    for (std::size_t t : queue) {
      while (pending[t] > 0) {
        std::size_t best = 0;
        for (std::size_t s = 1; s < sm.size(); ++s)
          if (sm[s].size() < sm[best].size()) best = s;
        if (int(sm[best].size()) >= per_sm) break;
        sm[best].push_back({t, work[t]});
        --pending[t];
        ++live[t];
      }
      if (pending[t] > 0) break;
    }
    queue.erase(std::remove_if(queue.begin(), queue.end(), [&](std::size_t t) { return pending[t] == 0; }), queue.end());
    double step = std::numeric_limits<double>::infinity();
    for (const auto& blocks : sm)
      for (const Resident& b : blocks) step = std::min(step, b.left / rate(blocks.size()));
    if (!std::isfinite(step)) throw std::logic_error("simulate_blocks: the tasks wait on each other");
    now += step;
    for (auto& blocks : sm) {
      if (blocks.empty()) continue;
      const double r = rate(blocks.size());
      for (Resident& b : blocks) b.left -= step * r;
      for (std::size_t i = blocks.size(); i-- > 0;) {
        if (blocks[i].left > 1e-15 * std::max(1.0, work[blocks[i].task])) continue;
        const std::size_t t = blocks[i].task;
        blocks.erase(blocks.begin() + std::ptrdiff_t(i));
        if (--live[t] == 0 && pending[t] == 0) done[t] = now, ++finished;
      }
    }
  }
  return done;
}

}  // namespace

std::vector<double> simulate_blocks(const std::vector<BlockTask>& tasks, int sms, int per_sm, double gain) {
  if (sms < 1 || per_sm < 1 || gain < 0 || gain > 1)
    throw std::logic_error("simulate_blocks: needs sms >= 1, per_sm >= 1 and a gain in [0, 1]");
  for (std::size_t i = 0; i < tasks.size(); ++i)
    for (int a : tasks[i].after)
      if (a < 0 || std::size_t(a) >= i) throw std::logic_error("simulate_blocks: a task may only wait for earlier ones");
  // Work per block from each product's time alone: the simulator's own time for its blocks at
  // unit work, so a product alone reproduces its calibrated time exactly.
  std::map<int, double> unit;
  std::vector<double> work(tasks.size(), 0);
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    const int b = std::max(0, tasks[i].blocks);
    if (b == 0 || tasks[i].seconds <= 0) continue;
    if (!unit.count(b)) unit[b] = run_blocks({BlockTask{1, b, 0, {}}}, {1.0}, sms, per_sm, gain)[0];
    work[i] = tasks[i].seconds / unit[b];
  }
  return run_blocks(tasks, work, sms, per_sm, gain);
}

double StreamTable::seconds(double elements) const {
  if (elements <= 0) return 0;
  return loglog(points, elements);
}

double DeviceProfile::kernel(Form f, int rows, int in, int out) const {
  if (rows <= 0 || in <= 0 || out <= 0) return 0;
  return kernels.at(f).seconds(rows, in, out);
}

double DeviceProfile::stream(const std::string& op, double elements) const {
  auto it = streams.find(op);
  if (it == streams.end()) return 0;  // validated at load: only optional ops are missing
  return it->second.seconds(elements);
}

double DeviceProfile::barrier_seconds(int threads) const {
  if (threads <= 1 || barrier.empty()) return 0;
  if (threads >= barrier.back().first)
    return barrier.back().second * std::log2(double(threads)) / std::log2(std::max(2.0, barrier.back().first));
  std::vector<std::pair<double, double>> table = barrier;
  return loglog(table, threads);
}

double DeviceProfile::slowdown(int workers) const {
  if (workers <= 1 || concurrency.empty()) return 1;
  double s = 1;
  for (auto [t, v] : concurrency)
    if (t <= workers) s = v;
  return std::max(1.0, s);
}

std::vector<std::size_t> contradicted_points(const std::vector<std::pair<double, double>>& curve,
                                             std::vector<std::size_t>* neighbours) {
  std::vector<std::size_t> found;
  for (std::size_t i = 0; i < curve.size(); ++i)
    for (std::size_t j = i + 1; j < curve.size(); ++j)
      if (curve[i].second > (1 + kDisturbedSlower) * curve[j].second) {
        found.push_back(i);
        if (neighbours) neighbours->push_back(j);
        break;
      }
  return found;
}

std::vector<DisturbedPoint> disturbed_points(const DeviceProfile& device) {
  std::vector<DisturbedPoint> out;
  auto check = [&](const std::string& table, std::vector<std::pair<double, double>> curve) {
    std::sort(curve.begin(), curve.end());
    std::vector<std::size_t> by;
    const std::vector<std::size_t> found = contradicted_points(curve, &by);
    for (std::size_t k = 0; k < found.size(); ++k)
      out.push_back({table, curve[found[k]].first, curve[found[k]].second, curve[by[k]].first, curve[by[k]].second});
  };
  for (const auto& [form, table] : device.kernels) {
    std::map<std::pair<int, int>, std::vector<std::pair<double, double>>> curves;
    for (const KernelPoint& p : table.points) curves[{p.in, p.out}].push_back({double(p.rows), p.seconds});
    for (const auto& [shape, curve] : curves)
      check(std::string(form_name(form)) + " " + std::to_string(shape.first) + "x" + std::to_string(shape.second), curve);
  }
  for (const auto& [op, table] : device.streams) check("stream " + op, table.points);
  return out;
}

nlohmann::json disturbed_points_json(const std::vector<DisturbedPoint>& points) {
  nlohmann::json out = nlohmann::json::array();
  for (const DisturbedPoint& p : points)
    out.push_back({{"table", p.table}, {"size", p.size}, {"seconds", p.seconds}, {"neighbour_size", p.neighbour_size},
                   {"neighbour_seconds", p.neighbour_seconds}});
  return out;
}

std::string describe_disturbed(const std::vector<DisturbedPoint>& points, std::size_t shown) {
  if (points.empty()) return "";
  std::vector<DisturbedPoint> worst = points;
  std::stable_sort(worst.begin(), worst.end(), [](const auto& a, const auto& b) {
    return a.seconds / a.neighbour_seconds > b.seconds / b.neighbour_seconds;
  });
  std::string text = std::to_string(points.size()) + " calibrated point" + (points.size() == 1 ? "" : "s") +
                     " slower than a larger size (disturbed while measured?): ";
  for (std::size_t i = 0; i < std::min(shown, worst.size()); ++i) {
    const DisturbedPoint& p = worst[i];
    const char* unit = p.table.rfind("stream ", 0) == 0 ? "elements" : "rows";
    char line[256];
    std::snprintf(line, sizeof line, "%s%s %s %.0f: %.0f us, %s %.0f: %.0f us", i ? "; " : "", p.table.c_str(), unit,
                  p.size, p.seconds * 1e6, unit, p.neighbour_size, p.neighbour_seconds * 1e6);
    text += line;
  }
  if (points.size() > shown) text += "; and " + std::to_string(points.size() - shown) + " more";
  return text;
}

// ---------------------------------------------------------------------------------------------
// Loading

namespace {

struct Reader {
  const std::string& file;
  [[noreturn]] void fail(const std::string& key, const std::string& what) const {
    throw ProfileError(file + ": " + key + ": " + what);
  }
  const nlohmann::json& object(const nlohmann::json& j, const std::string& key) const {
    if (!j.is_object()) fail(key, "expected an object");
    return j;
  }
  double positive(const nlohmann::json& j, const std::string& key, bool allow_zero = false) const {
    if (!j.is_number()) fail(key, "expected a number, found " + std::string(j.type_name()));
    const double v = j.get<double>();
    if (!std::isfinite(v) || v < 0 || (!allow_zero && v == 0))
      fail(key, allow_zero ? "must be >= 0" : "must be > 0, found " + j.dump());
    return v;
  }
  int count(const nlohmann::json& j, const std::string& key) const {
    if (!j.is_number_integer() || j.get<long long>() < 1) fail(key, "expected a positive integer, found " + j.dump());
    return int(j.get<long long>());
  }
  const nlohmann::json& member(const nlohmann::json& j, const std::string& parent, const std::string& name) const {
    if (!j.contains(name)) fail(parent.empty() ? name : parent + "." + name, "missing");
    return j.at(name);
  }
  std::string text(const nlohmann::json& j, const std::string& key) const {
    if (!j.is_string()) fail(key, "expected a string");
    return j.get<std::string>();
  }
};

KernelFit read_fit(const Reader& r, const nlohmann::json& j, const std::string& key) {
  r.object(j, key);
  KernelFit f;
  f.call_s = r.positive(r.member(j, key, "call_s"), key + ".call_s", true);
  f.per_flop_s = r.positive(r.member(j, key, "per_flop_s"), key + ".per_flop_s", true);
  f.per_element_s = r.positive(r.member(j, key, "per_element_s"), key + ".per_element_s", true);
  return f;
}

std::vector<std::pair<double, double>> read_pairs(const Reader& r, const nlohmann::json& j, const std::string& key,
                                                  const char* x, const char* y) {
  if (!j.is_array() || j.empty()) r.fail(key, "expected a non-empty array of {\"" + std::string(x) + "\", \"" + y + "\"}");
  std::vector<std::pair<double, double>> out;
  for (std::size_t i = 0; i < j.size(); ++i) {
    const std::string k = key + "[" + std::to_string(i) + "]";
    r.object(j[i], k);
    out.push_back({r.positive(r.member(j[i], k, x), k + "." + x), r.positive(r.member(j[i], k, y), k + "." + y)});
  }
  std::sort(out.begin(), out.end());
  return out;
}

DeviceProfile read_device(const Reader& r, const nlohmann::json& j, const std::string& key, bool gpu) {
  r.object(j, key);
  DeviceProfile d;
  d.gpu = gpu;
  d.name = r.text(r.member(j, key, "name"), key + ".name");
  d.count = r.count(r.member(j, key, "count"), key + ".count");
  d.memory_bytes = r.positive(r.member(j, key, "memory_bytes"), key + ".memory_bytes");
  const auto& kernels = r.object(r.member(j, key, "kernels"), key + ".kernels");
  for (Form f : {Form::forward, Form::weight_grad, Form::input_grad}) {
    const std::string k = key + ".kernels." + form_name(f);
    const auto& entry = r.object(r.member(kernels, key + ".kernels", form_name(f)), k);
    KernelTable t;
    if (entry.contains("points")) {
      const auto& pts = entry.at("points");
      if (!pts.is_array() || pts.empty()) r.fail(k + ".points", "expected a non-empty array");
      for (std::size_t i = 0; i < pts.size(); ++i) {
        const std::string pk = k + ".points[" + std::to_string(i) + "]";
        r.object(pts[i], pk);
        KernelPoint p;
        p.rows = r.count(r.member(pts[i], pk, "rows"), pk + ".rows");
        p.in = r.count(r.member(pts[i], pk, "in"), pk + ".in");
        p.out = r.count(r.member(pts[i], pk, "out"), pk + ".out");
        p.seconds = r.positive(r.member(pts[i], pk, "seconds"), pk + ".seconds");
        if (pts[i].contains("share")) {
          p.share = r.positive(pts[i].at("share"), pk + ".share");
          if (p.share > 1) r.fail(pk + ".share", "must be <= 1 (a share of the device's throughput)");
        }
        t.points.push_back(p);
      }
    }
    if (entry.contains("fit")) t.fit = read_fit(r, entry.at("fit"), k + ".fit");
    else if (t.points.size() >= 3) t.fit_points();
    else r.fail(k, "needs \"points\" (at least 3) or a \"fit\"");
    d.kernels[f] = std::move(t);
  }
  const auto& streams = r.object(r.member(j, key, "streams"), key + ".streams");
  for (auto it = streams.begin(); it != streams.end(); ++it)
    d.streams[it.key()].points = read_pairs(r, it.value(), key + ".streams." + it.key(), "elements", "seconds");
  const std::vector<std::string> required =
      gpu ? std::vector<std::string>{"softmax_xent", "sgd", "scale", "copy"}
          : std::vector<std::string>{"bias_sigmoid", "bias", "sigmoid_backward", "column_sums", "softmax_xent",
                                     "sgd", "zero", "gather", "copy", "add"};
  for (auto& op : required)
    if (!d.streams.count(op)) r.fail(key + ".streams." + op, "missing (needed by the model)");
  if (gpu) {
    d.graph_latency_s = r.positive(r.member(j, key, "graph_latency_s"), key + ".graph_latency_s", true);
    d.plain_latency_s = r.positive(r.member(j, key, "plain_latency_s"), key + ".plain_latency_s", true);
    d.launch_s = r.positive(r.member(j, key, "launch_s"), key + ".launch_s", true);
    if (j.contains("multiprocessors")) d.multiprocessors = r.count(j.at("multiprocessors"), key + ".multiprocessors");
    if (j.contains("coresidence")) {
      const std::string k = key + ".coresidence";
      const auto& c = r.object(j.at("coresidence"), k);
      d.gemm_blocks_per_sm = r.count(r.member(c, k, "blocks_per_sm"), k + ".blocks_per_sm");
      d.second_block_gain = r.positive(r.member(c, k, "second_block_gain"), k + ".second_block_gain", true);
      if (d.second_block_gain > 1) r.fail(k + ".second_block_gain", "must be <= 1 (a fraction of one block's throughput)");
      if (d.multiprocessors == 0) r.fail(key + ".multiprocessors", "missing (coresidence needs it)");
    }
  } else if (j.contains("openmp")) {
    const auto& omp = r.object(j.at("openmp"), key + ".openmp");
    if (omp.contains("barrier")) d.barrier = read_pairs(r, omp.at("barrier"), key + ".openmp.barrier", "threads", "seconds");
    if (omp.contains("concurrency"))
      d.concurrency = read_pairs(r, omp.at("concurrency"), key + ".openmp.concurrency", "threads", "slowdown");
  }
  return d;
}

// An array of {ranks, <x>, seconds}: per rank count, (x, seconds) sorted by x.
std::map<int, std::vector<std::pair<double, double>>> read_ranked_pairs(const Reader& r, const nlohmann::json& a,
                                                                        const std::string& key, const char* x,
                                                                        bool zero_seconds = false) {
  if (!a.is_array()) r.fail(key, std::string("expected an array of {ranks, ") + x + ", seconds}");
  std::map<int, std::vector<std::pair<double, double>>> tables;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const std::string k = key + "[" + std::to_string(i) + "]";
    r.object(a[i], k);
    tables[r.count(r.member(a[i], k, "ranks"), k + ".ranks")].push_back(
        {r.positive(r.member(a[i], k, x), k + "." + x),
         r.positive(r.member(a[i], k, "seconds"), k + ".seconds", zero_seconds)});
  }
  for (auto& [p, t] : tables) std::sort(t.begin(), t.end());
  return tables;
}

CommProfile read_comm(const Reader& r, const nlohmann::json& j, const std::string& key) {
  r.object(j, key);
  CommProfile c;
  if (j.contains("allreduce")) {
    const auto& a = j.at("allreduce");
    if (!a.is_array() || a.empty()) r.fail(key + ".allreduce", "expected a non-empty array of {ranks, bytes, seconds}");
    for (std::size_t i = 0; i < a.size(); ++i) {
      const std::string k = key + ".allreduce[" + std::to_string(i) + "]";
      r.object(a[i], k);
      const int ranks = r.count(r.member(a[i], k, "ranks"), k + ".ranks");
      if (ranks < 2) r.fail(k + ".ranks", "an allreduce needs at least 2 ranks");
      c.allreduce[ranks].push_back({r.positive(r.member(a[i], k, "bytes"), k + ".bytes"),
                                    r.positive(r.member(a[i], k, "seconds"), k + ".seconds")});
    }
    for (auto& [p, t] : c.allreduce) std::sort(t.begin(), t.end());
  }
  if (j.contains("graph_allreduce")) c.graph_allreduce = read_ranked_pairs(r, j.at("graph_allreduce"), key + ".graph_allreduce", "bytes");
  if (j.contains("iallreduce")) c.iallreduce = read_ranked_pairs(r, j.at("iallreduce"), key + ".iallreduce", "bytes");
  if (j.contains("p2p")) c.p2p = read_pairs(r, j.at("p2p"), key + ".p2p", "bytes", "seconds");
  if (j.contains("host_call_s")) c.host_call_s = r.positive(j.at("host_call_s"), key + ".host_call_s", true);
  // Newer calibrations (optional: older profiles fall back, see CommProfile).
  if (j.contains("stream_p2p")) c.stream_p2p = read_pairs(r, j.at("stream_p2p"), key + ".stream_p2p", "bytes", "seconds");
  if (j.contains("hop_latency_s")) c.hop_latency_s = r.positive(j.at("hop_latency_s"), key + ".hop_latency_s", true);
  if (j.contains("overlap_share")) {
    c.overlap_share = r.positive(j.at("overlap_share"), key + ".overlap_share", true);
    if (c.overlap_share > 1) r.fail(key + ".overlap_share", "must be <= 1");
  }
  if (j.contains("pending_slowdown")) {
    c.pending_slowdown = r.positive(j.at("pending_slowdown"), key + ".pending_slowdown");
    if (c.pending_slowdown < 1) c.pending_slowdown = 1;  // measurement noise: never a speed-up
  }
  if (j.contains("peer_sgd")) c.peer_sgd = read_ranked_pairs(r, j.at("peer_sgd"), key + ".peer_sgd", "elements");
  if (j.contains("peer_sgd_push"))
    c.peer_sgd_push = read_ranked_pairs(r, j.at("peer_sgd_push"), key + ".peer_sgd_push", "elements");
  if (j.contains("push_overhead"))
    c.push_overhead = read_ranked_pairs(r, j.at("push_overhead"), key + ".push_overhead", "elements", true);
  if (j.contains("pending_slowdown_by_bytes")) {
    c.pending_slowdown_by_bytes =
        read_pairs(r, j.at("pending_slowdown_by_bytes"), key + ".pending_slowdown_by_bytes", "bytes", "slowdown");
    for (auto& [bytes, slowdown] : c.pending_slowdown_by_bytes) slowdown = std::max(1.0, slowdown);
  }

  // Per rank count: t = a_p + b_p * bytes on relative error. Ring: b_p = 2(p-1)/p / B.
  std::vector<std::pair<int, double>> intercepts;
  std::vector<double> bandwidths;
  for (auto& [p, table] : c.allreduce) {
    std::vector<std::vector<double>> rows;
    std::vector<double> target;
    for (auto [bytes, s] : table) rows.push_back({1.0 / s, bytes / s}), target.push_back(1.0);
    const auto x = nnls_small(rows, target);
    intercepts.push_back({p, x[0]});
    if (x[1] > 0) bandwidths.push_back(2.0 * (p - 1) / p / x[1]);
  }
  if (!c.allreduce.empty()) {
    std::sort(bandwidths.begin(), bandwidths.end());
    c.link.bytes_per_s = bandwidths.empty() ? 1e12 : bandwidths[bandwidths.size() / 2];
    if (intercepts.size() >= 2) {
      // a_p = call + 2(p-1) alpha over the calibrated rank counts.
      std::vector<std::vector<double>> rows;
      std::vector<double> target;
      for (auto [p, a] : intercepts) rows.push_back({1.0, 2.0 * (p - 1)}), target.push_back(a);
      const auto x = nnls_small(rows, target);
      c.call_s = x[0];
      c.link.alpha_s = x[1];
    } else {
      // One rank count cannot separate the two: all of it is taken as per-call cost.
      c.call_s = intercepts.front().second;
      c.link.alpha_s = 0;
    }
  } else if (j.contains("allreduce_fit")) {
    const auto& f = r.object(j.at("allreduce_fit"), key + ".allreduce_fit");
    const std::string k = key + ".allreduce_fit";
    c.call_s = r.positive(r.member(f, k, "call_s"), k + ".call_s", true);
    c.link.alpha_s = r.positive(r.member(f, k, "alpha_s"), k + ".alpha_s", true);
    c.link.bytes_per_s = r.positive(r.member(f, k, "bytes_per_s"), k + ".bytes_per_s");
  } else {
    r.fail(key + ".allreduce", "missing (give measured points or an allreduce_fit)");
  }
  if (!c.p2p.empty()) {
    std::vector<std::vector<double>> rows;
    std::vector<double> target;
    for (auto [bytes, s] : c.p2p) rows.push_back({1.0 / s, bytes / s}), target.push_back(1.0);
    const auto x = nnls_small(rows, target);
    c.p2p_call_s = x[0];
    c.p2p_link = {0, x[1] > 0 ? 1.0 / x[1] : 1e12};
  } else if (j.contains("p2p_fit")) {
    const auto& f = r.object(j.at("p2p_fit"), key + ".p2p_fit");
    const std::string k = key + ".p2p_fit";
    c.p2p_call_s = r.positive(r.member(f, k, "call_s"), k + ".call_s", true);
    c.p2p_link = {0, r.positive(r.member(f, k, "bytes_per_s"), k + ".bytes_per_s")};
  } else {
    r.fail(key + ".p2p", "missing (give measured points or a p2p_fit)");
  }
  return c;
}

}  // namespace

double CommProfile::pending_slowdown_at(double bytes) const {
  const auto& t = pending_slowdown_by_bytes;
  if (t.empty()) return pending_slowdown;
  if (bytes <= t.front().first) return t.front().second;
  if (bytes >= t.back().first) return t.back().second;
  std::size_t i = 1;
  while (t[i].first < bytes) ++i;
  const double x = (std::log(bytes) - std::log(t[i - 1].first)) / (std::log(t[i].first) - std::log(t[i - 1].first));
  return t[i - 1].second + x * (t[i].second - t[i - 1].second);
}

double CommProfile::hop_alpha(bool nccl) const {
  if (link.alpha_s > 0) return link.alpha_s;
  if (hop_latency_s >= 0) return hop_latency_s;
  return nccl ? kNcclHopLatencyS : 0;
}

Profile profile_from_json(const nlohmann::json& j, const std::string& shown) {
  Reader r{shown};
  if (!j.is_object()) r.fail("(top level)", "expected a JSON object");
  const std::string schema = r.text(r.member(j, "", "schema"), "schema");
  if (schema != kProfileSchema)
    r.fail("schema", "is \"" + schema + "\", expected \"" + kProfileSchema + "\" (written by nnpar calibrate)");
  Profile p;
  p.file = shown;
  p.json = j;
  if (j.contains("cpu")) p.cpu = read_device(r, j.at("cpu"), "cpu", false);
  if (j.contains("gpu")) p.gpu = read_device(r, j.at("gpu"), "gpu", true);
  if (!p.cpu && !p.gpu) r.fail("cpu", "missing: a profile describes a CPU, a GPU or both");
  if (j.contains("comm")) {
    const auto& comm = r.object(j.at("comm"), "comm");
    if (comm.contains("mpi")) p.mpi = read_comm(r, comm.at("mpi"), "comm.mpi");
    if (comm.contains("nccl")) p.nccl = read_comm(r, comm.at("nccl"), "comm.nccl");
  }
  return p;
}

Profile load_profile(const std::string& file) {
  std::ifstream in(file);
  if (!in) throw ProfileError("cannot open profile '" + file + "'");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::parse_error& e) {
    throw ProfileError(file + ": not valid JSON: " + e.what());
  }
  return profile_from_json(j, file);
}

std::string Profile::describe() const {
  std::ostringstream s;
  auto comm = [](const CommProfile& c) {
    std::ostringstream t;
    if (c.measured()) {
      t << "allreduce measured at";
      for (auto& [p, table] : c.allreduce) t << " " << p;
      t << " ranks";
    } else {
      t << "allreduce fitted";
    }
    t << " (call " << c.call_s * 1e6 << " us, " << c.link.bytes_per_s / 1e9 << " GB/s)";
    return t.str();
  };
  if (cpu) s << "CPU " << cpu->name << ", " << cpu->count << " cores";
  if (mpi) s << "; MPI " << comm(*mpi);
  if (gpu) s << (cpu ? "; " : "") << "GPU " << gpu->name << " x" << gpu->count;
  if (gpu && gpu->block_model())
    s << " (backward simulated on " << gpu->multiprocessors << " SMs, " << gpu->gemm_blocks_per_sm
      << " blocks each, a second adding " << std::lround(100 * gpu->second_block_gain) << "%)";
  if (nccl) s << "; NCCL " << comm(*nccl);
  if (json.is_object() && json.contains("estimated"))
    s << "; some terms ESTIMATED, not measured (the profile's \"estimated\" key says which)";
  return s.str();
}

// ---------------------------------------------------------------------------------------------
// Interconnects

const std::vector<Preset>& interconnect_presets() {
  // Per worker, per direction. Latencies are per message hop as a collective sees them
  // (software included), typical published figures; docs/plan.md cites them.
  static const std::vector<Preset> presets = {
      {"nvlink", "NVLink 4 (H100 SXM, NVSwitch): 450 GB/s per GPU per direction, 3 us per hop", {3e-6, 450e9}},
      {"ib-ndr", "InfiniBand NDR 400 Gb/s, one NIC per GPU: 50 GB/s per GPU, 5 us per hop", {5e-6, 50e9}},
      {"ib-hdr", "InfiniBand HDR 200 Gb/s, one NIC per GPU: 25 GB/s per GPU, 5 us per hop", {5e-6, 25e9}},
      {"100gbe", "100 Gb Ethernet (RoCE), one NIC per node of 8: 1.56 GB/s per worker, 20 us per hop", {20e-6, 12.5e9 / 8}},
  };
  return presets;
}

const Preset& find_preset(const std::string& name) {
  for (const Preset& p : interconnect_presets())
    if (p.name == name) return p;
  std::string known;
  for (const Preset& p : interconnect_presets()) known += (known.empty() ? "" : ", ") + p.name;
  throw std::invalid_argument("unknown interconnect '" + name + "' (known: " + known + ", measured)");
}

// ---------------------------------------------------------------------------------------------
// Communication times

namespace {

struct Comm {
  const CommProfile& profile;
  const Network& net;
  int per_node;
  // Collectives that run on the device without the host waiting for each: captured in a
  // CUDA graph (nccl-data, graph = true) or queued asynchronously (nccl-tensor, the GPU
  // pipelines). They cost what the device spends, the graph_allreduce table, not the
  // host-synchronous allreduce table; `device_extra_s` is added per operation (the plain
  // launch's extra latency when queued from the host).
  bool device_side = false;
  double device_extra_s = 0;
  bool nccl = false;

  double formula(double bytes, int p, const Link& link, double call) const {
    return std::min(ring_allreduce_seconds(bytes, p, link, call), tree_allreduce_seconds(bytes, p, link, call));
  }
  // A measured (bytes, seconds) table at one rank count, extended beyond its largest size by
  // the formula's bandwidth term.
  double in_table(const std::vector<std::pair<double, double>>& t, double bytes, int p) const {
    if (bytes < t.front().first) return t.front().second;
    if (bytes > t.back().first)
      return t.back().second + formula(bytes, p, profile.link, 0) - formula(t.back().first, p, profile.link, 0);
    return loglog(t, bytes);
  }
  // From tables measured per rank count: the table at p, else the nearest measured rank count's
  // carried to p by the formula (per-call cost unchanged, hops and bandwidth term as p's).
  std::optional<double> from_tables(const std::map<int, std::vector<std::pair<double, double>>>& tables, double bytes,
                                    int p) const {
    if (tables.empty()) return std::nullopt;
    auto it = tables.find(p);
    if (it != tables.end() && !it->second.empty()) return in_table(it->second, bytes, p);
    int q = 0;
    double best = std::numeric_limits<double>::infinity();
    for (auto& [ranks, t] : tables) {
      const double d = std::abs(std::log(double(ranks) / p));
      if (!t.empty() && d < best) best = d, q = ranks;
    }
    if (q == 0) return std::nullopt;
    const Link l{profile.hop_alpha(nccl), profile.link.bytes_per_s};
    return std::max(0.0, in_table(tables.at(q), bytes, q) + formula(bytes, p, l, 0) - formula(bytes, q, l, 0));
  }
  // Within one node.
  double intra(double bytes, int p) const {
    if (p <= 1) return 0;
    if (net.intra) return formula(bytes, p, net.intra->link, profile.call_s);
    if (device_side)
      if (auto t = from_tables(profile.graph_allreduce, bytes, p)) return *t + device_extra_s;
    if (auto t = from_tables(profile.allreduce, bytes, p)) return *t;
    return formula(bytes, p, profile.link, profile.call_s);
  }
  double allreduce(double bytes, int p) const {
    if (p <= 1) return 0;
    const int g = std::min(per_node, p);
    if (p <= g) return intra(bytes, p);
    const int nodes = (p + g - 1) / g;
    const Link inter = net.inter.link;
    // Reduce-scatter inside each node, allreduce of each GPU's 1/g across nodes (every GPU
    // with its own share of the inter-node links), all-gather inside the node.
    double local = 0;
    if (g > 1) {
      const Link l = net.intra ? net.intra->link : profile.link;
      local = 2 * ((g - 1) * l.alpha_s + double(g - 1) / g * bytes / l.bytes_per_s);
    }
    return profile.call_s + local + formula(bytes / g, nodes, inter, 0);
  }
  // MPI's non-blocking allreduce, posted and waited for: its own measured table within a node
  // (profile "iallreduce"), else the blocking allreduce's price.
  double nonblocking(double bytes, int p) const {
    if (p <= 1) return 0;
    if (!net.intra && p <= per_node)
      if (auto t = from_tables(profile.iallreduce, bytes, p)) return *t;
    return allreduce(bytes, p);
  }
  double p2p(double bytes, bool same_node) const {
    if (!same_node) return p2p_seconds(bytes, net.inter.link, profile.p2p_call_s);
    if (net.intra) return p2p_seconds(bytes, net.intra->link, profile.p2p_call_s);
    if (device_side && !profile.stream_p2p.empty()) {
      const auto& t = profile.stream_p2p;
      if (bytes < t.front().first) return t.front().second;
      if (bytes > t.back().first) return t.back().second + (bytes - t.back().first) / profile.p2p_link.bytes_per_s;
      return loglog(t, bytes);
    }
    // No device-side send/recv measured (older profiles): the host-timed ping-pong. A send
    // meets its receive (rendezvous), so a message still costs a handshake between the two
    // GPUs; how much of the host-timed figure that is, only stream_p2p measures.
    return host_p2p(bytes);
  }
  double host_p2p(double bytes) const {
    if (!profile.p2p.empty()) {
      const auto& t = profile.p2p;
      if (bytes < t.front().first) return t.front().second;
      if (bytes > t.back().first) return t.back().second + (bytes - t.back().first) / profile.p2p_link.bytes_per_s;
      return loglog(t, bytes);
    }
    return p2p_seconds(bytes, profile.p2p_link, profile.p2p_call_s);
  }
};

// ---------------------------------------------------------------------------------------------
// Compute of one replica or stage

struct Engine {
  const DeviceProfile& dev;
  bool plain = false;      // GPU: plain launches (each kernel pays plain instead of graph latency)
  double slowdown = 1;     // CPU: several workers computing at once on one node
  // GPU kernels calibrated with their throughput shares: the backward's streams are simulated.
  bool shares() const {
    return dev.gpu && dev.kernels.at(Form::weight_grad).has_shares() && dev.kernels.at(Form::input_grad).has_shares();
  }

  double extra() const { return dev.gpu && plain ? std::max(0.0, dev.plain_latency_s - dev.graph_latency_s) : 0; }
  double latency() const { return dev.gpu ? (plain ? dev.plain_latency_s : dev.graph_latency_s) : 0; }
  double k(Form f, int rows, int in, int out) const {
    if (rows <= 0 || out <= 0) return 0;
    return dev.kernel(f, rows, in, out) * slowdown + extra();
  }
  double s(const std::string& op, double n) const {
    if (n <= 0) return 0;
    return dev.stream(op, n) * slowdown + (dev.gpu ? extra() : 0);
  }
};

// One Linear layer's work on `rows` rows, as the engines run it.
struct LayerWork {
  double forward = 0, weight_grad = 0, input_grad = 0;
  double share_weight_grad = 1, share_input_grad = 1;  // GPU: of the device's throughput
  int kernels_forward = 0, kernels_backward = 0;  // launches (GPU host issue)
  int blocks_weight_grad = 0, blocks_input_grad = 0;  // GPU: thread blocks (nnpar/gemm_tiling.hpp)
  bool input_grad_in_loss = false;  // GPU fuse_logits=head: the loss kernel computes it
};

LayerWork layer_work(const Engine& e, const std::vector<int>& sizes, int i, int rows) {
  const int in = sizes[i], out = sizes[i + 1], L = int(sizes.size()) - 1;
  const bool hidden = i + 1 < L;
  LayerWork w;
  if (e.dev.gpu) {
    // Bias, sigmoid and its derivative are fused into the products.
    w.forward = e.k(Form::forward, rows, in, out);
    w.weight_grad = e.k(Form::weight_grad, rows, in, out);
    w.input_grad = i > 0 ? e.k(Form::input_grad, rows, in, out) : 0;
    w.share_weight_grad = e.dev.kernels.at(Form::weight_grad).share(rows, in, out);
    w.share_input_grad = e.dev.kernels.at(Form::input_grad).share(rows, in, out);
    w.kernels_forward = 1;
    w.kernels_backward = i > 0 ? 2 : 1;
    w.blocks_weight_grad = weight_grad_blocks(rows, out, in);
    w.blocks_input_grad = i > 0 ? input_grad_blocks(rows, out, in) : 0;
  } else {
    w.forward = e.k(Form::forward, rows, in, out) + e.s(hidden ? "bias_sigmoid" : "bias", double(rows) * out);
    w.weight_grad = e.k(Form::weight_grad, rows, in, out) + e.s("column_sums", double(rows) * out);
    w.input_grad = i > 0 ? e.k(Form::input_grad, rows, in, out) + e.s("sigmoid_backward", double(rows) * in) : 0;
  }
  return w;
}

std::size_t params_of(const std::vector<int>& sizes, int first, int count) {
  std::size_t n = 0;
  for (int i = first; i < first + count; ++i) n += std::size_t(sizes[i]) * sizes[i + 1] + sizes[i + 1];
  return n;
}

// A step's time as the model splits it, for one worker.
struct Split {
  double compute = 0, comm = 0, idle = 0;
  double total() const { return compute + comm + idle; }
};

// The backward of a whole model replica: when each Linear's weight gradient is complete,
// relative to the backward's start, and when the backward ends. On the GPU the input-gradient
// chain runs on its own stream and the weight gradients follow it (plugins cuda, nccl-data):
// latencies add along the chain (and layer 0's weight gradient), arithmetic shares the device.
struct Backward {
  std::vector<double> layer_done;  // by Linear index
  double end = 0;
};

Backward replica_backward(const Engine& e, const std::vector<LayerWork>& work) {
  const int L = int(work.size());
  Backward b;
  b.layer_done.assign(L, 0);
  if (!e.dev.gpu) {
    double t = 0;
    for (int i = L - 1; i >= 0; --i) {
      t += work[i].weight_grad;
      b.layer_done[i] = t;
      t += work[i].input_grad;
    }
    b.end = t;
    return b;
  }
  if ((e.dev.block_model() || e.shares()) && L > 1) {
    // The schedule of the cuda and nccl-data plugins: the input-gradient chain and layer 0's
    // weight gradient on the main stream, each weight gradient i > 0 on the side stream after
    // input gradient i. Simulated block by block on the SMs where the profile calibrated how
    // they share blocks (simulate_blocks: a side-stream weight gradient gets SMs only as the
    // main stream's products leave them, and shares an SM's throughput with the blocks already
    // there), else by the kernels' calibrated shares of the GPU (simulate_streams).
    struct Op {
      double seconds, share;
      int blocks, stream;
      std::vector<int> after;
    };
    std::vector<Op> ops;
    std::vector<int> wg(L, -1);
    auto add = [&](Op op) {
      ops.push_back(std::move(op));
      return int(ops.size()) - 1;
    };
    for (int i = L - 1; i >= 1; --i) {
      // 0 s when the loss kernel computes it
      const int ig = add({work[i].input_grad, work[i].share_input_grad, work[i].blocks_input_grad, 0, {}});
      wg[i] = add({work[i].weight_grad, work[i].share_weight_grad, work[i].blocks_weight_grad, 1, {ig}});
    }
    wg[0] = add({work[0].weight_grad, work[0].share_weight_grad, work[0].blocks_weight_grad, 0, {}});
    std::vector<double> done;
    if (e.dev.block_model()) {
      std::vector<BlockTask> tasks;
      for (const Op& op : ops) tasks.push_back({op.seconds, op.blocks, op.stream, op.after});
      done = simulate_blocks(tasks, e.dev.multiprocessors, e.dev.gemm_blocks_per_sm, e.dev.second_block_gain);
    } else {
      std::vector<StreamTask> tasks;
      for (const Op& op : ops) tasks.push_back({op.seconds, op.share, op.stream, op.after});
      done = simulate_streams(tasks);
    }
    for (int i = 0; i < L; ++i) b.layer_done[i] = done[wg[i]];
    b.end = *std::max_element(done.begin(), done.end());
    return b;
  }
  const double lat = e.latency();
  double work_sum = 0, chain = 0;
  for (int i = L - 1; i >= 0; --i) {
    const double wg = std::max(0.0, work[i].weight_grad - lat), ig = std::max(0.0, work[i].input_grad - lat);
    work_sum += wg;
    b.layer_done[i] = chain + lat + work_sum;  // after the chain so far and every weight gradient so far
    work_sum += ig;
    if (i > 0 && !work[i].input_grad_in_loss) chain += lat;
  }
  b.end = chain + lat + work_sum;  // the chain, layer 0's weight gradient, all the arithmetic
  for (double& d : b.layer_done) d = std::min(d, b.end);
  return b;
}

double replica_forward(const Engine& e, const std::vector<LayerWork>& work) {
  double t = 0;
  for (auto& w : work) t += w.forward;
  (void)e;
  return t;
}

struct ReplicaStep {
  double data = 0, forward = 0, loss = 0, update = 0;
  Backward backward;
  std::vector<LayerWork> work;
  int kernels = 0;
  std::string note;  // an engine path the profile cannot price
};

// Serial maths of a whole replica on `rows` rows; `fused_update`: the GPU engine of the cuda
// strategy folds SGD into the weight-gradient kernels; `fuse_logits`: the GPU engines' option
// (logits_fusion.hpp), priced by the profile's "logits_head" kernel (rows x K elements, K the
// last hidden width), or modelled unfused with a note where the profile predates it.
ReplicaStep replica_step(const Engine& e, const Workload& w, int rows, bool fused_update,
                         const std::string& fuse_logits = "off", const std::vector<double>& weight_grad_extra = {}) {
  ReplicaStep r;
  const int L = int(w.layers.size()) - 1;
  const std::size_t P = params_of(w.layers, 0, L);
  for (int i = 0; i < L; ++i) r.work.push_back(layer_work(e, w.layers, i, rows));
  r.loss = e.s("softmax_xent", double(rows) * w.layers.back());
  const LogitsFusion fusion = e.dev.gpu ? resolve_logits_fusion(fuse_logits, w.layers, false, "plan") : LogitsFusion{};
  int fused_kernels = 0;
  if (fusion.logits && !e.dev.streams.count("logits_head")) {
    r.note = "fuse_logits modelled unfused (the profile has no logits_head kernel)";
  } else if (fusion.logits) {
    // The kernel computes the logits, the loss and (head) the last input gradient; "softmax"
    // alone is priced the same, with the input-gradient product still separate.
    r.loss = e.s("logits_head", double(rows) * w.layers[L - 1]);
    r.work[L - 1].forward = 0;
    fused_kernels = 1;
    if (fusion.input_grad) {
      r.work[L - 1].input_grad = 0;
      r.work[L - 1].input_grad_in_loss = true;
      fused_kernels = 2;
    }
  }
  for (std::size_t i = 0; i < weight_grad_extra.size() && i < r.work.size(); ++i)
    r.work[i].weight_grad += weight_grad_extra[i];
  r.forward = replica_forward(e, r.work);
  r.backward = replica_backward(e, r.work);
  if (e.dev.gpu) {
    r.update = fused_update ? 0 : e.s(w.momentum ? "sgd_momentum" : "sgd", double(P));
    r.kernels = L + 1 + (2 * L - 1) + (fused_update ? 0 : 1) - fused_kernels;
  } else {
    r.data = e.s("gather", double(rows) * w.layers[0]);
    r.update = e.s(w.momentum ? "sgd_momentum" : "sgd", double(P)) + e.s("zero", double(P));
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// Memory

double replica_activation_floats(const std::vector<int>& sizes, int first, int count, int rows, bool gpu) {
  // CPU Model: each Linear keeps its output and input gradient, each Sigmoid its output and
  // input gradient, the loss its probabilities and gradient. GPU engines: activations and
  // output gradients per layer.
  double f = double(rows) * sizes[first];
  const int L = int(sizes.size()) - 1;
  for (int i = first; i < first + count; ++i) {
    f += double(rows) * (gpu ? 2.0 * sizes[i + 1] : double(sizes[i]) + sizes[i + 1]);
    if (!gpu && i + 1 < L) f += 2.0 * rows * sizes[i + 1];
  }
  if (first + count == L) f += 2.0 * rows * sizes[L];
  return f;
}

double dataset_bytes(const Workload& w) { return double(w.samples) * (w.layers[0] + 4.0); }

}  // namespace

// ---------------------------------------------------------------------------------------------
// The pipeline simulator

PipelineTimes simulate_pipeline(const std::vector<double>& forward, const std::vector<double>& backward,
                                const std::vector<double>& to_next, const std::vector<double>& to_prev, int micro,
                                bool gpipe) {
  const int S = int(forward.size());
  PipelineTimes out;
  out.busy.assign(S, 0);
  // fwd_done[s][m], bwd_done[s][m]; each stage runs its ops in schedule order, an op starting
  // when the stage is free and its input has arrived.
  std::vector<std::vector<double>> fdone(S, std::vector<double>(micro, -1)), bdone(S, std::vector<double>(micro, -1));
  std::vector<std::vector<PipelineOp>> ops(S);
  std::vector<std::size_t> next(S, 0);
  std::vector<double> free_at(S, 0);
  for (int s = 0; s < S; ++s)
    ops[s] = schedule_ops(gpipe ? PipelineSchedule::gpipe : PipelineSchedule::one_f_one_b, s, S, micro);
  // Repeatedly run any op whose inputs are complete (the schedules are deadlock-free).
  bool progress = true;
  while (progress) {
    progress = false;
    for (int s = 0; s < S; ++s) {
      while (next[s] < ops[s].size()) {
        const PipelineOp op = ops[s][next[s]];
        double ready;
        if (op.forward) {
          if (s == 0) ready = 0;
          else if (fdone[s - 1][op.micro] < 0) break;
          else ready = fdone[s - 1][op.micro] + to_next[s - 1];
        } else {
          if (s == S - 1) ready = fdone[s][op.micro];
          else if (bdone[s + 1][op.micro] < 0) break;
          else ready = bdone[s + 1][op.micro] + to_prev[s];
        }
        const double start = std::max(free_at[s], ready);
        const double d = op.forward ? forward[s] : backward[s];
        free_at[s] = start + d;
        out.busy[s] += d;
        (op.forward ? fdone : bdone)[s][op.micro] = free_at[s];
        ++next[s];
        progress = true;
      }
    }
  }
  for (int s = 0; s < S; ++s) {
    if (next[s] != ops[s].size()) throw std::logic_error("pipeline simulation did not complete");
    out.makespan = std::max(out.makespan, free_at[s]);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Candidates

std::string Candidate::describe() const {
  std::ostringstream s;
  if (plugin == "openmp") s << mode << ", " << workers << " threads" << (mode == "intra_op" && omp_schedule == "static" ? ", static" : "");
  else if (plugin == "mpi-data" || plugin == "nccl-data") {
    s << mode;
    if (mode == "sync") s << (overlap ? ", overlap" : ", no overlap");
    else s << ", period " << period;
  } else if (plugin == "mpi-pipeline" || plugin == "nccl-pipeline") {
    s << schedule << ", " << micro_batches << " micro";
  } else if (plugin == "mpi-hybrid" || plugin == "nccl-hybrid") {
    s << data << "x" << workers / std::max(1, data) << ", " << schedule << ", " << micro_batches << " micro";
  } else if (plugin == "cuda" || plugin == "serial") {
    s << (plugin == "cuda" ? (graph ? "graph" : "plain launches") : "1 thread");
    if (plugin == "cuda" && precision != "fp32") s << ", " << precision;
  } else {
    s << workers << (workers == 1 ? " rank" : " ranks");
  }
  return s.str();
}

namespace {

bool is_gpu_plugin(const std::string& p) {
  return p == "cuda" || p.rfind("nccl-", 0) == 0;
}

std::string option_string(const nlohmann::json& o, const char* key, const std::string& fallback) {
  return o.is_object() && o.contains(key) && o.at(key).is_string() ? o.at(key).get<std::string>() : fallback;
}
long long option_int(const nlohmann::json& o, const char* key, long long fallback) {
  return o.is_object() && o.contains(key) && o.at(key).is_number_integer() ? o.at(key).get<long long>() : fallback;
}
bool option_bool(const nlohmann::json& o, const char* key, bool fallback) {
  return o.is_object() && o.contains(key) && o.at(key).is_boolean() ? o.at(key).get<bool>() : fallback;
}

}  // namespace

Candidate candidate_from_options(const std::string& plugin, int ranks, const nlohmann::json& o,
                                 const std::string& label) {
  Candidate c;
  c.plugin = plugin;
  c.workers = std::max(1, ranks);
  c.label = label;
  if (plugin == "openmp") {
    c.mode = option_string(o, "mode", "data_parallel");
    c.workers = int(option_int(o, "threads", 0));  // 0: the caller decides (cores)
    c.omp_schedule = option_string(o, "schedule", "dynamic");
    c.tasks_per_thread = int(option_int(o, "tasks_per_thread", 4));
    c.min_tile_mflop = int(option_int(o, "min_tile_mflop", 16));
  } else if (plugin == "mpi-data" || plugin == "nccl-data") {
    c.mode = option_string(o, "mode", "sync");
    c.fuse_logits = option_string(o, "fuse_logits", "auto");
    c.reduce = option_string(o, "reduce", "auto");
    c.period = int(option_int(o, "period", 1));
    c.overlap = option_bool(o, "overlap", plugin == "mpi-data");  // the plugins' defaults (nccl-data 1.4: off)
    c.exact = c.mode == "sync";
    c.graph = option_bool(o, "graph", true);
  } else if (plugin == "mpi-pipeline" || plugin == "nccl-pipeline" || plugin == "mpi-hybrid" ||
             plugin == "nccl-hybrid") {
    c.schedule = option_string(o, "schedule", "1f1b");
    c.micro_batches = int(option_int(o, "micro_batches", 4));
    c.partition = option_string(o, "partition", "auto");
    if (plugin.find("hybrid") != std::string::npos) {
      c.data = int(option_int(o, "data", 1));
      c.overlap = option_bool(o, "overlap", true);
    }
  } else if (plugin == "cuda") {
    c.graph = option_bool(o, "graph", true);
    c.fuse_logits = option_string(o, "fuse_logits", "auto");
    c.precision = option_string(o, "precision", "fp32");
    c.variant = option_string(o, "variant", "graph");
    c.exact = c.precision == "fp32";
  } else if (plugin != "serial" && plugin != "mpi-tensor" && plugin != "nccl-tensor") {
    throw std::invalid_argument("no cost model for plugin '" + plugin + "'");
  }
  return c;
}

std::vector<Candidate> enumerate_candidates(const Profile& profile, const Network& net, bool gpu, int n,
                                            const Workload& w, const std::vector<Candidate>& hints) {
  std::vector<Candidate> out;
  const int L = int(w.layers.size()) - 1;
  auto hint = [&](const std::string& family, auto get, int fallback) {
    for (const Candidate& h : hints)
      if (h.plugin.find(family) != std::string::npos) return get(h);
    return fallback;
  };
  const int period = hint("data", [](const Candidate& h) { return h.mode == "local_sgd" ? h.period : 8; }, 8);
  const std::string dev = gpu ? "nccl-" : "mpi-";
  auto add = [&](Candidate c) {
    c.label = c.plugin + " " + c.describe();
    out.push_back(std::move(c));
  };
  if (n == 1) {
    Candidate c;
    c.plugin = gpu ? "cuda" : "serial";
    add(c);
    return out;
  }
  if (!gpu && profile.cpu && n <= profile.cpu->count)
    for (const char* mode : {"intra_op", "data_parallel"}) {
      Candidate c;
      c.plugin = "openmp";
      c.mode = mode;
      c.workers = n;
      add(c);
    }
  for (int variant = 0; variant < 3; ++variant) {
    Candidate c;
    c.plugin = dev + "data";
    c.workers = n;
    c.mode = variant < 2 ? "sync" : "local_sgd";
    c.overlap = variant == 0;
    c.period = variant == 2 ? period : 1;
    c.exact = variant < 2;
    add(c);
  }
  // Pipelines and grids: micro-batches as the config gives them, else the best of 1..8 per
  // stage; a stage needs at least one Linear layer.
  const int configured = hint("pipeline", [](const Candidate& h) { return h.micro_batches; },
                              hint("hybrid", [](const Candidate& h) { return h.micro_batches; }, 0));
  for (int data = 1; data < n; ++data) {
    if (n % data != 0) continue;
    const int stages = n / data;
    if (stages > L || stages < 2) continue;
    for (const char* schedule : {"1f1b", "gpipe"}) {
      Candidate c;
      c.plugin = data == 1 ? dev + "pipeline" : dev + "hybrid";
      c.workers = n;
      c.data = data;
      c.schedule = schedule;
      out.push_back(c);  // micro-batches chosen by the caller (plan) or below
      out.back().micro_batches = configured > 0 ? configured : -1;
      out.back().label = c.plugin;
    }
  }
  Candidate t;
  t.plugin = dev + "tensor";
  t.workers = n;
  add(t);
  // Resolve "best micro-batch count" candidates.
  std::vector<Candidate> resolved;
  for (Candidate& c : out) {
    if (c.micro_batches != -1) {
      resolved.push_back(c);
      continue;
    }
    const int stages = c.workers / c.data;
    Candidate best;
    double best_step = std::numeric_limits<double>::infinity();
    for (int per : {1, 2, 4, 8}) {
      Candidate v = c;
      v.micro_batches = std::min(stages * per, std::max(1, w.batch / c.data));
      try {
        const double step = predict(profile, net, w, v).step_s;
        if (step < best_step) best_step = step, best = v;
      } catch (const std::invalid_argument&) {
      }
    }
    if (best_step < std::numeric_limits<double>::infinity()) {
      best.label = best.plugin + " " + best.describe();
      resolved.push_back(best);
    }
  }
  return resolved;
}

// ---------------------------------------------------------------------------------------------
// Predictions

namespace {

struct StepResult {
  Split split;
  double memory = 0;
  std::string note;
};

StepResult predict_step(const Profile& profile, const Network& net, const Workload& w, const Candidate& c, int rows);

const DeviceProfile& need_device(const Profile& p, bool gpu, const std::string& plugin) {
  const auto& d = gpu ? p.gpu : p.cpu;
  if (!d)
    throw std::invalid_argument("profile " + p.file + " has no " + (gpu ? "gpu" : "cpu") + " section, which " + plugin +
                                " needs (calibrate on that machine" + (gpu ? " with --gpu)" : ")"));
  return *d;
}
const CommProfile& need_comm(const Profile& p, bool gpu, const std::string& plugin) {
  const auto& c = gpu ? p.nccl : p.mpi;
  if (!c)
    throw std::invalid_argument("profile " + p.file + " has no comm." + (gpu ? "nccl" : "mpi") + " section, which " +
                                plugin + " needs");
  return *c;
}

StepResult serial_like(const Engine& e, const Workload& w, int rows, bool fused,
                       const std::string& fuse_logits = "off") {
  const ReplicaStep r = replica_step(e, w, rows, fused, fuse_logits);
  StepResult s;
  s.note = r.note;
  s.split.compute = r.data + r.forward + r.loss + r.backward.end + r.update;
  const int L = int(w.layers.size()) - 1;
  const double P = double(params_of(w.layers, 0, L));
  s.memory = 4 * (P * (2 + (w.momentum ? 1 : 0)) + replica_activation_floats(w.layers, 0, L, rows, e.dev.gpu)) +
             dataset_bytes(w);
  return s;
}

StepResult predict_step(const Profile& profile, const Network& net, const Workload& w, const Candidate& c, int rows) {
  const bool gpu = is_gpu_plugin(c.plugin);
  const DeviceProfile& dev = need_device(profile, gpu, c.plugin);
  const int n = c.workers;
  const int per_node = net.per_node > 0 ? net.per_node : dev.count;
  const int L = int(w.layers.size()) - 1;
  const double P = double(params_of(w.layers, 0, L));
  const int classes = w.layers.back();
  Engine e{dev, false, 1};
  if (!gpu) e.slowdown = dev.slowdown(std::min(n, per_node));

  if (c.plugin == "serial") return serial_like(Engine{dev, false, 1}, w, rows, false);
  if (c.plugin == "cuda") {
    e.plain = !c.graph;
    StepResult s = serial_like(e, w, rows, true, c.fuse_logits);
    if (e.plain) {
      const double host = (3 * L + 1) * dev.launch_s;
      if (host > s.split.compute) s.split.idle = 0, s.split.compute = host, s.note = "host-bound (plain launches)";
    }
    if (c.variant != "graph") {
      add_note(s.note, "variant " + c.variant + " modelled as the graph (the profile times the graph's kernels)");
    }
    if (c.precision != "fp32") {
      // Measured: tf32 steps 1.0-1.9x shorter than fp32 (docs/results/2026-11-27-cuda-tf32.md), bf16
      // 0.98-1.09x tf32 (2026-11-27-cuda-bf16.md).
      add_note(s.note, "precision " + c.precision +
                           " modelled as fp32 (the profile times fp32 kernels; tf32 and bf16 measured up to 1.9x faster)");
    }
    return s;
  }

  if (c.plugin == "openmp") {
    const int T = n;
    StepResult s;
    if (c.mode == "intra_op") {
      // Every product's output cut into a tm x tn grid of tiles (tile_grid.hpp, shared with the
      // plugin), the operand B packed once per step by all threads together; bias/activation in
      // the tiles' epilogues, 2L+1 barriers per step. Static: one tile per thread. Dynamic
      // (plugin 1.2's default): k tiles per thread (dynamic_tiles_per_thread), drawn largest
      // first, so the busiest thread runs k tiles of the finer grid: smaller tiles cost more
      // per FLOP in the calibrated tables, which is the schedule's extra repacking. What the
      // dynamic schedule buys, evening out threads that run at different speeds, the model
      // cannot see: it assumes equal threads.
      const bool dynamic = c.omp_schedule != "static";
      if (c.omp_schedule == "stationary")
        add_note(s.note, "schedule stationary modelled as the dynamic tile grid (measured beside it: "
                         "docs/results/2026-11-27-openmp-scaling-7.md)");
      struct Share {
        int tiles, rows, cols;  // the busiest thread's tile count and one tile's shape
      };
      auto busiest = [&](int M, int N, int K) {
        // Micro-tile rows and panel width of the AVX-512 kernels (kernels/cpu/gemm.cpp, 8 x 32),
        // the path of every machine profiled so far; profiles do not record the path.
        constexpr int mr = 8, nr = 32;
        const int k = dynamic ? dynamic_tiles_per_thread(M, N, K, T, c.tasks_per_thread, c.min_tile_mflop) : 1;
        const TileGrid g = tile_grid(M, N, mr, nr, T * k, c.omp_traffic_priced ? kTrafficPerElement : 0);
        return Share{k, int(std::min<long>(M, g.rows)), int(std::min<long>(N, g.cols))};
      };
      double compute = 0;
      for (int i = 0; i < L; ++i) {
        const int in = w.layers[i], out = w.layers[i + 1];
        const bool hidden = i + 1 < L;
        const Share f = busiest(rows, out, in);
        compute += f.tiles * (e.k(Form::forward, f.rows, in, f.cols) +
                              e.s(hidden ? "bias_sigmoid" : "bias", double(f.rows) * f.cols));
        const Share g = busiest(out, in, rows);  // dW [out x in], K = the whole batch
        compute += g.tiles * e.k(Form::weight_grad, rows, g.cols, g.rows);
        compute += e.s("column_sums", double(rows) * out / T);
        if (i > 0) {
          const Share d = busiest(rows, in, out);
          compute += d.tiles * (e.k(Form::input_grad, d.rows, d.cols, out) +
                                e.s("sigmoid_backward", double(d.rows) * d.cols));
        }
      }
      compute += e.s("softmax_xent", double(rows) * classes / T) + e.s("gather", double(rows) * w.layers[0] / T);
      compute += e.s(w.momentum ? "sgd_momentum" : "sgd", P / T) + e.s("zero", P / T);
      s.split.compute = compute;
      s.split.idle = (2 * L + 1) * dev.barrier_seconds(T);
      s.memory = 4 * (P * (2 + (w.momentum ? 1 : 0)) + replica_activation_floats(w.layers, 0, L, rows, false)) +
                 dataset_bytes(w);
      if (c.omp_schedule == "stationary") {
        // Per thread: the whole batch gathered, every layer input packed for its weight
        // gradient, the logits layer's W^T whole; the threads' own weight panels (both packings)
        // add up to two more copies of the weights.
        double per_thread = double(rows) * w.layers[0] + double(w.layers[L - 1]) * w.layers[L];
        for (int i = 0; i < L; ++i) per_thread += double(rows) * w.layers[i];
        s.memory += 4 * (T * per_thread + 2.0 * P);
      }
    } else {
      const int shard = (rows + T - 1) / T;
      const ReplicaStep r = replica_step(e, w, shard, false);
      s.split.compute = r.data + r.forward + r.loss + r.backward.end + e.s("zero", P);
      // Tree reduction: each thread adds its 1/T slice at every level; then SGD on its slice.
      s.split.comm = e.s("add", P * (T - 1) / T);
      s.split.compute += e.s(w.momentum ? "sgd_momentum" : "sgd", P / T);
      s.split.idle = 2 * dev.barrier_seconds(T);
      s.memory = 4 * (P * (1 + T + (w.momentum ? 1 : 0)) + T * replica_activation_floats(w.layers, 0, L, shard, false)) +
                 dataset_bytes(w);
    }
    add_note(s.note, "memory: the whole process");
    return s;
  }

  const CommProfile& cp = need_comm(profile, gpu, c.plugin);
  Comm comm{cp, net, per_node};
  comm.nccl = gpu;

  if (c.plugin == "mpi-data" || c.plugin == "nccl-data") {
    const int shard = (rows + n - 1) / n;
    e.plain = gpu && !c.graph;
    comm.device_side = gpu && c.graph;
    // nccl-data sync's reduce = "fused_p2p" or "push_p2p" (auto: push, without overlap, every rank
    // on one host), priced by the calibrated kernel of each (peer_sgd, peer_sgd_push); pushing
    // also makes each weight-gradient product longer by the calibrated push_overhead.
    const bool fused_reduce = gpu && c.mode == "sync" && !c.overlap && c.reduce != "nccl" &&
                              n >= 2 && n <= per_node;
    const bool push = c.reduce == "push_p2p" || c.reduce == "auto";
    const bool priced_push = push && cp.peer_sgd_push.count(n) && cp.push_overhead.count(n);
    const auto* peer_table = priced_push ? &cp.peer_sgd_push.at(n) : cp.peer_sgd.count(n) ? &cp.peer_sgd.at(n) : nullptr;
    std::vector<double> push_extra;
    if (fused_reduce && priced_push)
      for (int i = 0; i < L; ++i) push_extra.push_back(linear_between(cp.push_overhead.at(n), double(params_of(w.layers, i, 1))));
    const ReplicaStep r = replica_step(e, w, shard, false, gpu ? c.fuse_logits : "off", push_extra);
    StepResult s;
    s.note = r.note;
    const double before = r.data + r.forward + r.loss;
    std::vector<double> layer_bytes;
    for (int i = 0; i < L; ++i) layer_bytes.push_back(4.0 * double(params_of(w.layers, i, 1)));
    if (c.mode == "local_sgd") {
      s.split.compute = before + r.backward.end + r.update;
      // Every `period` steps: scale the weights, allreduce them (and, host-driven, one
      // double for the sample weights).
      const double average = comm.allreduce(4 * P, n) + e.s(gpu ? "scale" : "copy", P) +
                             (gpu && c.graph ? 0 : comm.allreduce(8, n));
      s.split.comm = average / std::max(1, c.period);
    } else if (c.overlap && gpu) {
      // Each layer's allreduce queued on the communicator's stream behind its gradient.
      double comm_free = 0, total = 0;
      for (int i = L - 1; i >= 0; --i) {
        const double t = comm.allreduce(layer_bytes[i], n);
        comm_free = std::max(comm_free, r.backward.layer_done[i]) + t;
        total += t;
      }
      const double end = std::max(r.backward.end, comm_free);
      s.split.compute = before + r.backward.end + r.update;
      // The part hidden behind the backward still takes overlap_share of its time from it.
      const double exposed = end - r.backward.end;
      s.split.comm = exposed + cp.overlap_share * std::max(0.0, total - exposed);
    } else if (fused_reduce && peer_table != nullptr) {
      // The update is part of the one kernel that waits for the peers and sums their
      // gradients, measured as a whole (pushing, the products' writes are in push_extra above).
      s.split.compute = before + r.backward.end;
      s.split.comm = loglog(*peer_table, double(P));
      if (push && !priced_push)
        add_note(s.note, "reduce push_p2p priced as fused_p2p (the profile has no peer_sgd_push and push_overhead at " +
                             std::to_string(n) + " ranks)");
    } else {
      if (fused_reduce)
        add_note(s.note, "reduce fused_p2p modelled as the NCCL allreduce + update (the profile has no peer_sgd at " +
                             std::to_string(n) + " ranks)");
      // MPI's non-blocking allreduce makes no progress while the rank computes (no progress
      // thread; docs/results/2026-11-26-data-parallel.md), so with overlap the per-layer
      // allreduces run back to back after the backward, each at the non-blocking price.
      double ar = 0;
      if (c.overlap) for (double b : layer_bytes) ar += comm.nonblocking(b, n);
      else ar = comm.allreduce(4 * P, n);
      s.split.compute = before + r.backward.end + r.update;
      s.split.comm = ar;
    }
    if (e.plain) {
      const double host = r.kernels * dev.launch_s + (c.overlap ? L : 1) * cp.host_call_s;
      if (host > s.split.total()) s.split.idle = host - s.split.total(), s.note = "host-bound (plain launches)";
    }
    s.memory = 4 * (P * (2 + (w.momentum ? 1 : 0)) + replica_activation_floats(w.layers, 0, L, shard, gpu)) +
               dataset_bytes(w);
    if (!gpu && n > per_node) s.note = "ranks beyond one node: " + net.inter.name;
    return s;
  }

  if (c.plugin.find("pipeline") != std::string::npos || c.plugin.find("hybrid") != std::string::npos) {
    const int data = c.plugin.find("hybrid") != std::string::npos ? c.data : 1;
    if (data < 1 || n % data != 0)
      throw std::invalid_argument(c.plugin + ": " + std::to_string(n) + " workers do not split into " +
                                  std::to_string(data) + " replicas");
    const int S = n / data;
    ModelSpec spec;
    spec.layer_sizes = w.layers;
    const std::vector<int> partition = resolve_partition(c.partition, spec, S);  // throws invalid_argument
    const int shard = (rows + data - 1) / data;
    const int micro = std::max(1, std::min(c.micro_batches, shard));
    const int mrows = (shard + micro - 1) / micro;
    e.plain = gpu;  // the GPU pipeline issues every kernel and message from the host
    // ...asynchronously (gpu_stage.hpp: the host never waits inside an epoch), so its messages
    // cost what they cost on the device; receives posted ahead hold SMs (pending_slowdown).
    comm.device_side = gpu;
    comm.device_extra_s = e.extra();
    if (gpu) {
      // The receives a stage posts ahead carry one micro-batch's activations or gradients at
      // a stage boundary; the largest one sets how many NCCL blocks wait beside the compute.
      double message = 0;
      for (int s = 0, first = 0; s + 1 < S; first += partition[s], ++s)
        message = std::max(message, 4.0 * mrows * w.layers[first + partition[s]]);
      e.slowdown = cp.pending_slowdown_at(message);
    }
    std::vector<double> fwd(S), bwd(S), to_next(S, 0), to_prev(S, 0), update(S), stage_params(S), act(S);
    std::vector<int> kernels(S);
    const bool gpipe = c.schedule == "gpipe";
    // Ranks of one replica are consecutive (hybrid_grid.hpp): stage s and s+1 share a node
    // unless a node boundary falls between them.
    int first = 0;
    double mem = 0;
    for (int s = 0; s < S; ++s) {
      const int count = partition[s];
      double f = 0, b = 0;
      int k = 0;
      for (int i = first; i < first + count; ++i) {
        const LayerWork lw = layer_work(e, w.layers, i, mrows);
        f += lw.forward;
        b += lw.weight_grad + lw.input_grad;
        k += lw.kernels_forward + lw.kernels_backward;
      }
      if (s == 0 && !gpu) f += e.s("gather", double(mrows) * w.layers[0]);
      if (s == S - 1) b += e.s("softmax_xent", double(mrows) * classes), ++k;
      fwd[s] = f;
      bwd[s] = b;
      kernels[s] = k;
      const double out_bytes = 4.0 * mrows * w.layers[first + count];
      if (s + 1 < S) {
        const bool same = per_node <= 1 ? false : (s + 1) % per_node != 0;
        to_next[s] = comm.p2p(out_bytes, same);
        to_prev[s] = comm.p2p(out_bytes, same);
      }
      stage_params[s] = double(params_of(w.layers, first, count));
      update[s] = gpu ? e.s(w.momentum ? "sgd_momentum" : "sgd", stage_params[s])
                      : e.s(w.momentum ? "sgd_momentum" : "sgd", stage_params[s]) + e.s("zero", stage_params[s]);
      const int slots = gpipe ? micro : std::min(micro, S - s + 1);
      const double a = replica_activation_floats(w.layers, first, count, mrows, gpu) * slots;
      const double m = 4 * (stage_params[s] * (2 + (w.momentum ? 1 : 0)) + a) + (s == 0 || s == S - 1 ? dataset_bytes(w) : 0);
      mem = std::max(mem, m);
      first += count;
    }
    const PipelineTimes pt = simulate_pipeline(fwd, bwd, to_next, to_prev, micro, gpipe);
    // Replicas sum each stage's gradient slice (all stages at once, on disjoint communicators).
    double reduce = 0;
    if (data > 1) {
      // Replica r's stage s is world rank r*S+s: replicas are S ranks apart.
      Comm across{cp, net, std::max(1, per_node / S)};
      across.nccl = comm.nccl;
      across.device_side = comm.device_side && c.overlap;  // without overlap: a blocking allreduce
      across.device_extra_s = comm.device_extra_s;
      int stage_first = 0;
      for (int s = 0; s < S; ++s) {
        double t = across.allreduce(4 * stage_params[s], data);
        // (CPU: each layer's non-blocking allreduce is posted as its backward ends, and the
        // pipeline's own sends and receives progress them. Priced as one blocking allreduce of
        // the stage: on 16 ranks that was within +2..+35%; pricing each layer at the measured
        // non-blocking cost instead gave -11..-22%, docs/results/2026-11-27-plan-validation-7.md.)
        if (gpu && c.overlap) {
          // The GPU stage engine (gpu_stage.hpp) does not report layers during the backward,
          // so PipelineTrainer::reduce_gradients starts every layer's reduction after the last
          // backward: one allreduce per Linear layer, back to back, nothing hidden.
          t = 0;
          for (int i = stage_first; i < stage_first + partition[s]; ++i)
            t += across.allreduce(4.0 * double(params_of(w.layers, i, 1)), data);
        }
        stage_first += partition[s];
        reduce = std::max(reduce, t);
      }
    }
    double upd = 0;
    for (double u : update) upd = std::max(upd, u);
    StepResult s;
    // Rank 0's view: its busy time is compute, the rest of the makespan waiting (bubble and
    // transfers), then the reduction and the update.
    s.split.compute = pt.busy[0] + upd;
    s.split.idle = pt.makespan - pt.busy[0];
    s.split.comm = reduce;
    if (gpu) {
      // Host issue per step: every kernel and message of every micro-batch, per stage.
      double host = 0;
      for (int st = 0; st < S; ++st)
        host = std::max(host, micro * (kernels[st] * dev.launch_s + (st > 0 ? 2 : 0) * cp.host_call_s +
                                       (st + 1 < S ? 2 : 0) * cp.host_call_s) +
                                  dev.launch_s);
      if (host > s.split.total()) {
        s.split.idle += host - s.split.total();
        s.note = "host-bound (plain launches)";
      }
    }
    s.memory = mem;
    return s;
  }

  if (c.plugin == "mpi-tensor" || c.plugin == "nccl-tensor") {
    e.plain = gpu;
    // nccl-tensor queues every collective asynchronously (the compute stream waits for it on
    // the device): device-side costs; the host's issue rate bounds the step below.
    comm.device_side = gpu;
    comm.device_extra_s = e.extra();
    auto width = [&](int out) { return (out + n - 1) / n; };
    double compute = 0, comm_t = 0, host_ops = 0, host_nccl = 0;
    for (int i = 0; i < L; ++i) {
      const int in = w.layers[i], out = w.layers[i + 1], wd = width(out);
      const bool hidden = i + 1 < L;
      compute += e.k(Form::forward, rows, in, wd);
      if (!gpu) compute += e.s(hidden ? "bias_sigmoid" : "bias", double(rows) * wd);
      if (n > 1) {
        // All-gather as an allreduce of a zero-filled buffer holding each rank's columns.
        compute += gpu ? e.s("copy", double(rows) * out) + e.s("copy", double(rows) * wd)
                       : e.s("zero", double(rows) * out) + e.s("copy", double(rows) * wd);
        comm_t += comm.allreduce(4.0 * rows * out, n);
        host_ops += 2, host_nccl += 1;
      }
      host_ops += 1;
    }
    compute += e.s("softmax_xent", double(rows) * classes) + (gpu ? 0 : e.s("gather", double(rows) * w.layers[0]));
    host_ops += 1;
    for (int i = L - 1; i >= 0; --i) {
      const int in = w.layers[i], out = w.layers[i + 1], wd = width(out);
      if (n > 1) compute += e.s("copy", double(rows) * wd), host_ops += 1;
      double wg = e.k(Form::weight_grad, rows, in, wd);
      if (!gpu) wg += e.s("column_sums", double(rows) * wd);
      host_ops += 1;
      if (i > 0) {
        compute += e.k(Form::input_grad, rows, in, wd) + (gpu ? 0 : e.s("sigmoid_backward", double(rows) * in));
        host_ops += 1;
        const double ar = n > 1 ? comm.allreduce(4.0 * rows * in, n) : 0;
        if (n > 1) host_nccl += 1;
        if (gpu) {
          // The weight gradient runs while the input gradient's allreduce does.
          compute += wg;
          comm_t += std::max(0.0, ar - wg) + cp.overlap_share * std::min(ar, wg);
        } else {
          compute += wg;
          comm_t += ar;
        }
      } else {
        compute += wg;
      }
    }
    const double local_params = P / n;
    if (!gpu) compute += e.s(w.momentum ? "sgd_momentum" : "sgd", local_params);
    StepResult s;
    s.split.compute = compute;
    s.split.comm = comm_t;
    if (gpu) {
      // Launches and NCCL enqueues (host_call_s: the enqueue's host cost, calibrated).
      const double host = host_ops * dev.launch_s + host_nccl * cp.host_call_s;
      if (host > s.split.total()) s.split.idle = host - s.split.total(), s.note = "host-bound (plain launches)";
    }
    double acts = 0;
    for (int v : w.layers) acts += double(rows) * v;
    const int widest = *std::max_element(w.layers.begin() + 1, w.layers.end());
    s.memory = 4 * (local_params * (2 + (w.momentum ? 1 : 0)) + acts + double(rows) * classes + 3.0 * rows * widest) +
               dataset_bytes(w);
    return s;
  }
  throw std::invalid_argument("no cost model for plugin '" + c.plugin + "'");
}

}  // namespace

Prediction predict(const Profile& profile, const Network& net, const Workload& w, const Candidate& c) {
  if (w.layers.size() < 2) throw std::invalid_argument("the model needs at least 2 layer sizes");
  if (w.batch < 1) throw std::invalid_argument("the batch must be at least 1");
  const StepResult full = predict_step(profile, net, w, c, w.batch);
  Prediction p;
  p.step_s = full.split.total();
  p.compute_s = full.split.compute;
  p.comm_s = full.split.comm;
  p.idle_s = full.split.idle;
  p.memory_bytes = full.memory;
  p.note = full.note;
  if (c.one_block_softmax)
    add_note(p.note, "this run's plugin version ran the softmax in one block; modelled as the multi-block kernel "
                     "its later versions run (1.09-1.15x faster at 256-2048 rows, docs/results/2026-11-27-plan-validation-7.md)");
  const std::size_t steps = w.samples / std::size_t(w.batch);
  const std::size_t tail = w.drop_last ? 0 : w.samples % std::size_t(w.batch);
  p.epoch_s = double(steps) * p.step_s + (tail ? predict_step(profile, net, w, c, int(tail)).split.total() : 0);
  const double trained = double(steps * std::size_t(w.batch) + tail);
  p.epoch_samples_per_s = p.epoch_s > 0 ? trained / p.epoch_s : 0;
  p.samples_per_s = p.step_s > 0 ? w.batch / p.step_s : 0;
  const bool gpu = is_gpu_plugin(c.plugin);
  const auto& dev = gpu ? profile.gpu : profile.cpu;
  if (dev) {
    const int per_node = net.per_node > 0 ? net.per_node : dev->count;
    // Ranks on one host share its RAM; threads share one process.
    const double share = gpu ? dev->memory_bytes
                             : (c.plugin == "openmp" || c.plugin == "serial"
                                    ? dev->memory_bytes
                                    : dev->memory_bytes / std::min(c.workers, per_node));
    p.fits_memory = p.memory_bytes <= share;
  }
  return p;
}

}  // namespace nnpar::perf
