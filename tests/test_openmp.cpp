// The OpenMP strategy against the serial reference, through the harness runner: parity in
// both modes for 1..4 threads and awkward batch sizes, bit-exactness where promised,
// run-to-run determinism, and option validation.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>

#include "../plugins/openmp/step_plan.hpp"
#include "parity.hpp"
#include "runner.hpp"

namespace fs = std::filesystem;
using namespace nnpar;
using testing::HasSubstr;

namespace nnpar::kernels::detail {
void gemm_force_isa(int isa);  // kernels/cpu/gemm.cpp: 0 auto, 1 generic, 2 avx2, 3 avx512
const char* gemm_isa_name();
}  // namespace nnpar::kernels::detail

namespace {

const fs::path kData = NNPAR_TEST_DATA_DIR;

bool have_data() { return fs::exists(kData / "letters-train-images-idx3-ubyte.gz"); }

// Small enough that the whole file runs in seconds on 2 cores, even with 4 threads.
RunConfig small_config(int batch, int epochs = 1) {
  RunConfig config;
  config.file = "test_openmp";
  config.data.dir = kData;
  config.data.train_images = kData / "letters-train-images-idx3-ubyte.gz";
  config.data.train_labels = kData / "letters-train-labels-idx1-ubyte.gz";
  config.data.test_images = kData / "letters-test-images-idx3-ubyte.gz";
  config.data.test_labels = kData / "letters-test-labels-idx1-ubyte.gz";
  config.data.options.limit = 1500;
  config.data.test_limit = 1000;
  config.model.layer_sizes = {784, 48, 32, 26};
  config.train.epochs = epochs;
  config.train.batch_size = batch;
  config.train.sgd.lr = 0.5f;
  config.eval_every = 0;
  return config;
}

StrategyEntry serial_entry() {
  StrategyEntry e;
  e.name = e.label = "serial";
  e.table = std::make_shared<toml::table>();
  return e;
}

template <class Threads>
StrategyEntry openmp_entry(const std::string& mode, Threads threads, const std::string& schedule = "",
                           int min_tile_mflop = -1) {
  auto table = std::make_shared<toml::table>();
  table->insert("name", "openmp");
  table->insert("mode", mode);
  table->insert("threads", threads);
  if (!schedule.empty()) table->insert("schedule", schedule);
  if (min_tile_mflop >= 0) table->insert("min_tile_mflop", min_tile_mflop);
  StrategyEntry e;
  e.name = "openmp";
  e.label = "omp-" + mode;
  e.table = table;
  e.where = "test_openmp";
  return e;
}

bool bit_identical(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

class OpenMp : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!have_data()) GTEST_SKIP() << "dataset not found in " << kData << " (set NNPAR_TEST_DATA_DIR)";
    if (!data_) data_ = std::make_unique<Datasets>(load_datasets(small_config(32).data));
  }
  RunResult run(const RunConfig& config, const StrategyEntry& entry) {
    return run_strategy(config, entry, plugins_, *data_, initial_parameters(config));
  }
  // Serial runs are the reference for many cases: run each configuration once.
  const RunResult& serial(const RunConfig& config) {
    const std::string key = std::to_string(config.train.batch_size) + "/" +
                            std::to_string(config.train.epochs) + "/" +
                            std::to_string(config.train.sgd.momentum) + "/" +
                            std::to_string(config.train.drop_last);
    auto it = serial_runs_.find(key);
    if (it == serial_runs_.end()) it = serial_runs_.emplace(key, run(config, serial_entry())).first;
    return it->second;
  }
  static std::unique_ptr<Datasets> data_;
  static std::map<std::string, RunResult> serial_runs_;
  PluginRegistry plugins_{{NNPAR_PLUGIN_DIR}};
};
std::unique_ptr<Datasets> OpenMp::data_;
std::map<std::string, RunResult> OpenMp::serial_runs_;

struct Case {
  std::string mode;
  int threads, batch;
};
void PrintTo(const Case& c, std::ostream* os) {  // readable ctest names instead of raw bytes
  *os << c.mode << ", " << c.threads << " threads, batch " << c.batch;
}
std::string case_name(const testing::TestParamInfo<Case>& info) {
  return info.param.mode + "_t" + std::to_string(info.param.threads) + "_b" +
         std::to_string(info.param.batch);
}

class OpenMpParity : public OpenMp, public testing::WithParamInterface<Case> {};

}  // namespace

// The harness's own rule (compare_weights with the default [parity] tolerances and the 0.1 pp
// accuracy rule), plus the bit-exactness each mode promises.
TEST_P(OpenMpParity, MatchesSerial) {
  const Case c = GetParam();
  const RunConfig config = small_config(c.batch);
  const RunResult& ref = serial(config);
  const RunResult got = run(config, openmp_entry(c.mode, c.threads));

  EXPECT_EQ(got.device, "CPU, " + std::to_string(c.threads) + (c.threads == 1 ? " thread (" : " threads (") +
                            c.mode + ")");
  ASSERT_EQ(got.epochs.size(), 1u);
  EXPECT_EQ(got.epochs[0].samples, ref.epochs[0].samples);
  EXPECT_EQ(got.epochs[0].steps, ref.epochs[0].steps);
  EXPECT_NEAR(got.epochs[0].loss, ref.epochs[0].loss, 1e-6 * ref.epochs[0].loss);
  EXPECT_NE(got.final_parameters, initial_parameters(config)) << "training must change the weights";

  const ParityConfig tol;
  const WeightDiff d = compare_weights(got.final_parameters, ref.final_parameters, tol.weight_rtol,
                                       tol.weight_atol);
  RecordProperty("max_abs_diff", std::to_string(d.max_abs));
  std::printf("      %s threads=%d batch=%d: max|w - w_serial| = %.3g (rel %.3g)\n", c.mode.c_str(),
              c.threads, c.batch, d.max_abs, d.max_rel);
  EXPECT_EQ(d.outside, 0u) << "max abs diff " << d.max_abs;
  EXPECT_NEAR(got.final_test.accuracy, ref.final_test.accuracy, tol.accuracy_pp / 100.0);
  const ParityReport p = check_parity(got, ref, tol);
  EXPECT_TRUE(p.pass) << p.reason;

  // intra_op never changes an element's arithmetic (the GEMMs sum in an order independent of
  // M/N, see kernels/cpu/gemm.cpp); data_parallel splits K = batch rows of the weight gradient,
  // so only its 1-thread run must be bit-exact.
  if (c.mode == "intra_op" || c.threads == 1) {
    EXPECT_TRUE(bit_identical(got.final_parameters, ref.final_parameters))
        << "expected bit-identical weights, max abs diff " << d.max_abs;
    EXPECT_EQ(got.final_test.accuracy, ref.final_test.accuracy);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Modes, OpenMpParity,
    testing::Values(Case{"data_parallel", 1, 32}, Case{"data_parallel", 2, 32},
                    Case{"data_parallel", 3, 7}, Case{"data_parallel", 4, 30},
                    Case{"data_parallel", 3, 2},  // batch < threads: a worker with no rows
                    Case{"intra_op", 1, 32}, Case{"intra_op", 2, 32}, Case{"intra_op", 3, 7},
                    Case{"intra_op", 4, 30}, Case{"intra_op", 3, 2},
                    Case{"intra_op", 2, 100}),  // rows >= widths: GEMMs split by rows
    case_name);

TEST_F(OpenMp, RepeatedRunsAreBitIdentical) {
  const RunConfig config = small_config(30);
  for (const char* mode : {"data_parallel", "intra_op"}) {
    const RunResult a = run(config, openmp_entry(mode, 3));
    const RunResult b = run(config, openmp_entry(mode, 3));
    EXPECT_TRUE(bit_identical(a.final_parameters, b.final_parameters)) << mode;
    EXPECT_EQ(a.epochs[0].loss, b.epochs[0].loss) << mode;
  }
}

// With threads > 1 data_parallel really sums shards (the weights are not serial's bits) and
// reports the reduction as communication.
TEST_F(OpenMp, DataParallelSplitsTheBatch) {
  const RunConfig config = small_config(32);
  const RunResult got = run(config, openmp_entry("data_parallel", 2));
  EXPECT_FALSE(bit_identical(got.final_parameters, serial(config).final_parameters));
  EXPECT_GT(got.phases.communication, 0);
  EXPECT_GT(got.phases.forward, 0);
  EXPECT_GT(got.phases.backward, 0);
  EXPECT_GT(got.phases.update, 0);
}

TEST_F(OpenMp, MomentumWeightDecayAndTwoEpochsMatchSerial) {
  RunConfig config = small_config(30, 2);
  config.train.sgd.momentum = 0.9f;
  config.train.sgd.weight_decay = 1e-4f;
  config.train.sgd.lr = 0.1f;
  config.train.drop_last = true;
  const RunResult& ref = serial(config);
  for (const char* mode : {"data_parallel", "intra_op"}) {
    const RunResult got = run(config, openmp_entry(mode, 4));
    EXPECT_EQ(got.epochs[1].steps, ref.epochs[1].steps) << mode;
    const WeightDiff d = compare_weights(got.final_parameters, ref.final_parameters, 1e-3, 1e-5);
    EXPECT_EQ(d.outside, 0u) << mode << ": max abs diff " << d.max_abs;
    if (std::string(mode) == "intra_op") {
      EXPECT_TRUE(bit_identical(got.final_parameters, ref.final_parameters));
    }
  }
}

// intra_op's GEMMs run on packed-B tiles split in 2D over the threads, with the bias,
// sigmoid, sigmoid' and SGD update applied per tile: wider layers than small_config's give
// several B panels, several row blocks and (batch 300) two K blocks in the weight gradient;
// the narrower panels of the AVX2 and generic paths also split the 26 logits by columns.
TEST_F(OpenMp, IntraOpTiledGemmsAreBitIdenticalOnEveryPath) {
  RunConfig config = small_config(300);
  config.model.layer_sizes = {784, 100, 70, 26};
  config.train.sgd.momentum = 0.9f;
  config.train.sgd.weight_decay = 1e-4f;
  config.train.sgd.lr = 0.1f;
  const char* names[] = {"", "generic", "avx2", "avx512"};
  for (int isa = 3; isa >= 1; --isa) {
    nnpar::kernels::detail::gemm_force_isa(isa);
    if (std::string(nnpar::kernels::detail::gemm_isa_name()) != names[isa]) continue;  // CPU lacks it
    const RunResult ref = run(config, serial_entry());
    for (int threads : {3, 4}) {
      const RunResult got = run(config, openmp_entry("intra_op", threads));
      EXPECT_TRUE(bit_identical(got.final_parameters, ref.final_parameters))
          << names[isa] << ", " << threads << " threads";
      EXPECT_NEAR(got.epochs[0].loss, ref.epochs[0].loss, 1e-6 * ref.epochs[0].loss);
    }
  }
  nnpar::kernels::detail::gemm_force_isa(0);
}

TEST_F(OpenMp, ZeroThreadsMeansOmpNumThreads) {
  const char* old = std::getenv("OMP_NUM_THREADS");
  const std::string saved = old ? old : "";
  setenv("OMP_NUM_THREADS", "3", 1);
  const RunConfig config = small_config(64);
  const RunResult got = run(config, openmp_entry("data_parallel", 0));
  if (old) {
    setenv("OMP_NUM_THREADS", saved.c_str(), 1);
  } else {
    unsetenv("OMP_NUM_THREADS");
  }
  EXPECT_EQ(got.device, "CPU, 3 threads (data_parallel)");
}

TEST_F(OpenMp, BadOptionsAreConfigErrorsNamingTheKey) {
  const RunConfig config = small_config(32);
  auto error = [&](const StrategyEntry& e) -> std::string {
    try {
      run(config, e);
    } catch (const ConfigError& err) {
      return err.what();
    }
    return "<no ConfigError>";
  };
  const std::string bad_mode = error(openmp_entry("bogus", 2));
  EXPECT_THAT(bad_mode, HasSubstr("mode"));
  EXPECT_THAT(bad_mode, HasSubstr("data_parallel"));  // lists the choices
  const std::string bad_threads = error(openmp_entry("intra_op", -1));
  EXPECT_THAT(bad_threads, HasSubstr("threads"));
  EXPECT_THAT(bad_threads, HasSubstr("-1"));
  EXPECT_THAT(error(openmp_entry("intra_op", 1025)), HasSubstr("threads"));
  EXPECT_THAT(error(openmp_entry("intra_op", "two")), HasSubstr("threads"));
  const std::string bad_schedule = error(openmp_entry("intra_op", 2, "guided"));
  EXPECT_THAT(bad_schedule, HasSubstr("schedule"));
  EXPECT_THAT(bad_schedule, HasSubstr("dynamic"));
}

// Both schedules, on every GEMM path, with thread counts that divide nothing and a short last
// batch (1500 = 5 x 277 + 115: a second step plan): the weights are serial's bits, and the
// dynamic schedule's loss (summed per logits tile, not per thread) repeats exactly.
// "fine" is dynamic with min_tile_mflop = 0: these GEMMs are small enough that the default
// minimum gives one tile per thread, so this is what cuts them into 4 per thread. "auto" with
// the default minimum runs every phase static; "mixed" is auto with min_tile_mflop = 1, which
// makes F_0 and B_0 (43 MFLOP) dynamic and the other phases (<= 4 MFLOP) static, so the shared
// counter must stay consistent across static phases.
TEST_F(OpenMp, IntraOpSchedulesAreBitIdenticalOnEveryPath) {
  RunConfig config = small_config(277);
  config.model.layer_sizes = {784, 100, 70, 26};
  config.train.sgd.momentum = 0.9f;
  config.train.sgd.lr = 0.1f;
  const char* names[] = {"", "generic", "avx2", "avx512"};
  for (int isa = 3; isa >= 1; --isa) {
    nnpar::kernels::detail::gemm_force_isa(isa);
    if (std::string(nnpar::kernels::detail::gemm_isa_name()) != names[isa]) continue;  // CPU lacks it
    const RunResult ref = run(config, serial_entry());
    for (const std::string variant : {"static", "dynamic", "fine", "auto", "mixed", "stationary"})
      for (int threads : {2, 5}) {
        const bool fine = variant == "fine", mixed = variant == "mixed";
        const std::string schedule = fine ? "dynamic" : mixed ? "auto" : variant;
        const int min_tile = fine ? 0 : mixed ? 1 : -1;
        const RunResult got = run(config, openmp_entry("intra_op", threads, schedule, min_tile));
        EXPECT_TRUE(bit_identical(got.final_parameters, ref.final_parameters))
            << names[isa] << ", " << variant << ", " << threads << " threads";
        EXPECT_EQ(got.epochs[0].steps, 6);
        EXPECT_NEAR(got.epochs[0].loss, ref.epochs[0].loss, 1e-6 * ref.epochs[0].loss);
        if ((fine || mixed) && threads == 5) {
          const RunResult again = run(config, openmp_entry("intra_op", threads, schedule, min_tile));
          EXPECT_EQ(again.epochs[0].loss, got.epochs[0].loss) << names[isa];
          EXPECT_TRUE(bit_identical(again.final_parameters, got.final_parameters)) << names[isa];
        }
      }
  }
  nnpar::kernels::detail::gemm_force_isa(0);
}

// schedule = stationary on every model depth, with threads that own nothing in a hidden layer
// (8 threads, 40 columns = 3 lines) and one thread that owns everything: serial's bits, and
// the same loss sum in a second run.
TEST_F(OpenMp, StationaryIsBitIdenticalForEveryDepthAndOwnership) {
  for (const std::vector<int>& sizes : {std::vector<int>{784, 26}, {784, 40, 26}, {784, 100, 70, 26}}) {
    RunConfig config = small_config(277);
    config.model.layer_sizes = sizes;
    config.train.sgd.momentum = 0.9f;
    config.train.sgd.weight_decay = 1e-3f;
    config.train.sgd.lr = 0.1f;
    const RunResult ref = run(config, serial_entry());
    for (int threads : {1, 3, 8}) {
      const std::string what = std::to_string(sizes.size() - 1) + " layers, " + std::to_string(threads) + " threads";
      const RunResult got = run(config, openmp_entry("intra_op", threads, "stationary"));
      EXPECT_THAT(got.device, HasSubstr("weight-stationary")) << what;
      EXPECT_TRUE(bit_identical(got.final_parameters, ref.final_parameters)) << what;
      ASSERT_EQ(got.epochs.size(), 1u);
      EXPECT_EQ(got.epochs[0].steps, 6);
      EXPECT_NEAR(got.epochs[0].loss, ref.epochs[0].loss, 1e-6 * ref.epochs[0].loss) << what;
      EXPECT_EQ(got.epochs[0].train_accuracy, ref.epochs[0].train_accuracy) << what;
      const RunResult again = run(config, openmp_entry("intra_op", threads, "stationary"));
      EXPECT_EQ(again.epochs[0].loss, got.epochs[0].loss) << what;
    }
  }
}

// Dynamic tiles shrink to tasks_per_thread per thread only where they stay above
// min_tile_mflop, and their count is a multiple of the thread count.
TEST(OpenMpStepPlan, DynamicTilesKeepAMinimumSize) {
  using namespace nnpar::openmp;
  namespace kn = nnpar::kernels;
  auto gemm_tiles_per_phase = [](const std::vector<int>& sizes, int rows, int T, int min_mflop) {
    std::vector<kn::PackedB> wf, wb;
    for (std::size_t i = 0; i + 1 < sizes.size(); ++i) {
      wf.push_back(kn::packed_b_layout(sizes[i], sizes[i + 1]));
      wb.push_back(kn::packed_b_layout(sizes[i + 1], sizes[i]));
    }
    const StepPlan plan = make_step_plan(sizes, rows, T, true, wf, wb, 4, min_mflop);
    std::vector<int> forward;  // forward tiles of F_0, F_1
    for (int i = 0; i < 2; ++i)
      forward.push_back(int(std::count_if(plan.phases[std::size_t(1 + i)].begin(), plan.phases[std::size_t(1 + i)].end(),
                                          [](const Task& t) { return t.job == Job::forward; })));
    return forward;
  };
  const std::vector<int> big = {784, 1024, 1024, 26}, small = {784, 256, 256, 26};
  // batch 1024, width 1024: 1644 MFLOP in F_0, 103 tiles of 16 MFLOP would fit: capped at 4 x 16
  EXPECT_EQ(gemm_tiles_per_phase(big, 1024, 16, 16), (std::vector<int>{64, 64}));
  // batch 128, width 1024: 206 MFLOP, 12 tiles of 16: one per thread
  EXPECT_EQ(gemm_tiles_per_phase(big, 128, 16, 16), (std::vector<int>{16, 16}));
  EXPECT_EQ(gemm_tiles_per_phase(small, 128, 16, 16), (std::vector<int>{16, 16}));
  // batch 1024, width 256: F_0 411 MFLOP = 25.7 tiles: rounded down to a multiple of 16
  EXPECT_EQ(gemm_tiles_per_phase(small, 1024, 16, 16), (std::vector<int>{16, 16}));
  EXPECT_EQ(gemm_tiles_per_phase(small, 1024, 8, 16), (std::vector<int>{24, 8}));  // 411 and 134 MFLOP
  // min_tile_mflop = 0: always tasks_per_thread tiles per thread (where the shape has them)
  EXPECT_EQ(gemm_tiles_per_phase(small, 128, 16, 0), (std::vector<int>{64, 64}));
  EXPECT_EQ(gemm_tiles_per_phase(big, 128, 16, 0), (std::vector<int>{64, 64}));
}

// The grid prices a thread's operand traffic beside its work: the weight gradient of layer 0 at
// batch 128 (dW [256 x 784], 25 panels of 32) on 16 threads was 16 x 1 by work alone, every
// thread then reading all of the packed activations; 4 x 4 reads a quarter of them for 12% more
// work.
TEST(OpenMpTileGrid, PricesOperandTrafficBesideWork) {
  const nnpar::TileGrid dw0 = nnpar::tile_grid(256, 784, 8, 32, 16);
  EXPECT_EQ(dw0.tm, 4);
  EXPECT_EQ(dw0.tn, 4);
  EXPECT_EQ(dw0.rows, 64);
  EXPECT_EQ(dw0.cols, 7 * 32);
  const nnpar::TileGrid by_work = nnpar::tile_grid(256, 784, 8, 32, 16, 0);  // plugin 1.3's choice
  EXPECT_EQ(by_work.tm, 16);
  EXPECT_EQ(by_work.tn, 1);
  const nnpar::TileGrid f0 = nnpar::tile_grid(128, 256, 8, 32, 16);  // equal work either way: least traffic
  EXPECT_EQ(f0.tm * f0.tn, 16);
  EXPECT_EQ(f0.rows + f0.cols, 96);
  // 2 threads, 1024 x 1024: 1 x 2 and 2 x 1 tie on both counts; fewer column groups wins.
  const nnpar::TileGrid two = nnpar::tile_grid(1024, 1024, 8, 32, 2);
  EXPECT_EQ(two.tm, 2);
  EXPECT_EQ(two.tn, 1);
  // A single row on 4 threads: only column groups can split it.
  const nnpar::TileGrid row = nnpar::tile_grid(1, 1024, 8, 32, 4);
  EXPECT_EQ(row.tn, 4);
}

// schedule = auto: a phase is static exactly where each of its GEMMs has one tile per thread,
// and then holds the static plan's tasks; the other phases hold the dynamic plan's.
TEST(OpenMpStepPlan, AutoIsStaticWhereEveryGemmHasOneTilePerThread) {
  using namespace nnpar::openmp;
  namespace kn = nnpar::kernels;
  auto same = [](const std::vector<Task>& a, const std::vector<Task>& b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](const Task& x, const Task& y) {
             return x.job == y.job && x.layer == y.layer && x.m0 == y.m0 && x.m1 == y.m1 && x.p0 == y.p0 &&
                    x.p1 == y.p1;
           });
  };
  auto check = [&](const std::vector<int>& sizes, int rows, int T, std::vector<char> expected) {
    std::vector<kn::PackedB> wf, wb;
    for (std::size_t i = 0; i + 1 < sizes.size(); ++i) {
      wf.push_back(kn::packed_b_layout(sizes[i], sizes[i + 1]));
      wb.push_back(kn::packed_b_layout(sizes[i + 1], sizes[i]));
    }
    const std::string where = "width " + std::to_string(sizes[1]) + " rows " + std::to_string(rows) + " T " +
                              std::to_string(T);
    const StepPlan a = make_step_plan(sizes, rows, T, Schedule::automatic, wf, wb);
    const StepPlan s = make_step_plan(sizes, rows, T, Schedule::fixed, wf, wb);
    const StepPlan d = make_step_plan(sizes, rows, T, Schedule::dynamic, wf, wb);
    EXPECT_EQ(a.dynamic, expected) << where;
    EXPECT_TRUE(std::all_of(s.dynamic.begin(), s.dynamic.end(), [](char c) { return !c; })) << where;
    EXPECT_TRUE(std::all_of(d.dynamic.begin(), d.dynamic.end(), [](char c) { return c; })) << where;
    ASSERT_EQ(a.phases.size(), expected.size()) << where;
    for (std::size_t ph = 0; ph < a.phases.size(); ++ph)
      EXPECT_TRUE(same(a.phases[ph], a.dynamic[ph] ? d.phases[ph] : s.phases[ph])) << where << " phase " << ph;
    EXPECT_EQ(a.logits_tasks, int(std::count_if(a.phases[sizes.size() - 1].begin(), a.phases[sizes.size() - 1].end(),
                                                 [](const Task& t) { return t.job == Job::forward; })))
        << where;
  };
  const std::vector<int> big = {784, 1024, 1024, 26}, small = {784, 256, 256, 26};
  // phases P F0 F1 F2 B2 B1 B0. Batch 1024, width 1024, 16 threads: the 1.6-2.1 GFLOP products
  // get 4 tiles per thread; the logits layer (54 MFLOP each way) one.
  check(big, 1024, 16, {0, 1, 1, 0, 0, 1, 1});
  // batch 128, width 256: every product below 16 MFLOP per thread: the whole step static
  check(small, 128, 16, std::vector<char>(7, 0));
  check(big, 128, 16, std::vector<char>(7, 0));
  // batch 1024, width 256, 8 threads: only layer 0's products (411 MFLOP, 3 tiles per thread)
  check(small, 1024, 8, {0, 1, 0, 0, 0, 0, 1});
  check(small, 1024, 16, std::vector<char>(7, 0));
  check(big, 1024, 1, {0, 1, 1, 1, 1, 1, 1});  // one thread: 4 tiles where >= 64 MFLOP (54 MFLOP: 3)
}

// The step plan covers every output element of every GEMM exactly once, packs every panel
// exactly once, and splits each bias into disjoint line-aligned slices, for every schedule;
// dynamic phases hand out GEMM tiles largest first, static ones give tile t to thread t.
TEST(OpenMpStepPlan, EveryElementOnceLargestFirst) {
  using namespace nnpar::openmp;
  namespace kn = nnpar::kernels;
  for (const std::vector<int>& sizes : {std::vector<int>{784, 1024, 1024, 26}, std::vector<int>{13, 7, 33, 5}}) {
    std::vector<kn::PackedB> wf, wb;
    for (std::size_t i = 0; i + 1 < sizes.size(); ++i) {
      wf.push_back(kn::packed_b_layout(sizes[i], sizes[i + 1]));
      wb.push_back(kn::packed_b_layout(sizes[i + 1], sizes[i]));
    }
    const int n = int(sizes.size()) - 1;
    for (int rows : {1, 7, 128, 1024})
      for (int T : {1, 3, 16})
        for (Schedule schedule : {Schedule::fixed, Schedule::dynamic, Schedule::automatic}) {
          const StepPlan plan = make_step_plan(sizes, rows, T, schedule, wf, wb);
          const std::string where = "rows " + std::to_string(rows) + " T " + std::to_string(T) + " schedule " +
                                    std::to_string(int(schedule)) + " model " + std::to_string(sizes[1]);
          ASSERT_EQ(plan.phases.size(), std::size_t(2 * n + 1)) << where;
          ASSERT_EQ(plan.dynamic.size(), plan.phases.size()) << where;
          // (job, layer) -> how often each C element / panel / bias column is covered
          std::map<std::pair<int, int>, std::vector<int>> cover;
          auto mark = [&](Job job, int layer, std::size_t size, std::size_t from, std::size_t to, std::size_t stride,
                          std::size_t c0, std::size_t c1) {
            std::vector<int>& v = cover[{int(job), layer}];
            v.resize(size);
            for (std::size_t r = from; r < to; ++r)
              for (std::size_t c = c0; c < c1; ++c) v[r * stride + c]++;
          };
          for (std::size_t ph = 0; ph < plan.phases.size(); ++ph) {
            const std::vector<Task>& tasks = plan.phases[ph];
            const bool dynamic = plan.dynamic[ph];
            double previous_gemm = 1e300;
            for (std::size_t k = 0; k < tasks.size(); ++k) {
              const Task& t = tasks[k];
              const int in = sizes[t.layer], out = sizes[t.layer + 1];
              const bool gemm = t.job == Job::forward || t.job == Job::weight_grad || t.job == Job::input_grad;
              if (dynamic && gemm) {
                EXPECT_LE(t.cost, previous_gemm) << where << " phase " << ph;
                previous_gemm = t.cost;
                EXPECT_TRUE(t.m0 < t.m1 && t.p0 < t.p1) << where << ": no empty tiles when dynamic";
              }
              switch (t.job) {
                case Job::forward: {
                  EXPECT_EQ(ph, std::size_t(1 + t.layer)) << where;
                  const int c0 = wf[t.layer].panel_begin_col(t.p0), c1 = wf[t.layer].panel_begin_col(t.p1);
                  if (t.layer + 1 == n && t.m0 < t.m1) {
                    EXPECT_EQ(c1 - c0, out) << where << ": logits tiles are whole rows";
                  }
                  mark(t.job, t.layer, std::size_t(rows) * out, t.m0, t.m1, out, c0, c1);
                  break;
                }
                case Job::weight_grad: {
                  const kn::PackedB L = kn::packed_b_layout(rows, in);
                  mark(t.job, t.layer, std::size_t(out) * in, t.m0, t.m1, in, L.panel_begin_col(t.p0),
                       L.panel_begin_col(t.p1));
                  break;
                }
                case Job::input_grad:
                  mark(t.job, t.layer, std::size_t(rows) * in, t.m0, t.m1, in, wb[t.layer].panel_begin_col(t.p0),
                       wb[t.layer].panel_begin_col(t.p1));
                  break;
                case Job::bias_grad:
                  EXPECT_TRUE(t.p0 % 16 == 0) << where;
                  mark(t.job, t.layer, out, 0, 1, 0, t.p0, t.p1);
                  break;
                case Job::pack_wf:
                  EXPECT_LE(ph, 1u) << where << ": W^T packed in P or F_0";
                  mark(t.job, t.layer, wf[t.layer].panels, 0, 1, 0, t.p0, t.p1);
                  break;
                case Job::pack_wb:
                  EXPECT_EQ(ph, 1u) << where;
                  mark(t.job, t.layer, wb[t.layer].panels, 0, 1, 0, t.p0, t.p1);
                  break;
                case Job::pack_act:
                  EXPECT_EQ(ph, std::size_t(1 + t.layer)) << where;
                  mark(t.job, t.layer, kn::packed_b_layout(rows, in).panels, 0, 1, 0, t.p0, t.p1);
                  break;
              }
            }
            if (!dynamic && ph > 0) {  // static: thread t's GEMM tile of each product is task t (or T + t)
              std::size_t gemms = 0;
              for (const Task& t : tasks) gemms += t.job == Job::forward || t.job == Job::weight_grad || t.job == Job::input_grad;
              EXPECT_EQ(gemms % std::size_t(T), 0u) << where << " phase " << ph;
            }
          }
          EXPECT_EQ(plan.logits_tasks, int(plan.phases[std::size_t(n)].size() -
                                           std::count_if(plan.phases[std::size_t(n)].begin(), plan.phases[std::size_t(n)].end(),
                                                         [](const Task& t) { return t.job != Job::forward; })))
              << where;
          for (int l = 0; l < n; ++l) {
            const std::vector<std::pair<Job, bool>> expected = {
                {Job::forward, true}, {Job::weight_grad, true}, {Job::input_grad, l > 0}, {Job::bias_grad, true},
                {Job::pack_wf, true}, {Job::pack_wb, l > 0}, {Job::pack_act, true}};
            for (const auto& [job, present] : expected) {
              const auto it = cover.find({int(job), l});
              if (!present) {
                EXPECT_TRUE(it == cover.end()) << where << " layer " << l << " job " << int(job);
                continue;
              }
              ASSERT_TRUE(it != cover.end()) << where << " layer " << l << " job " << int(job);
              EXPECT_TRUE(std::all_of(it->second.begin(), it->second.end(), [](int c) { return c == 1; }))
                  << where << " layer " << l << " job " << int(job) << ": every element exactly once";
            }
          }
        }
  }
}
