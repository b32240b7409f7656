// Hyper-parameter search: the [search] table and its errors, the space (grid, random), the
// successive-halving schedulers, the validation split, and `nnpar search` end to end: results,
// best configuration, resume, and trial-parallel under mpirun against a serial run.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include <nlohmann/json.hpp>

#include "config.hpp"
#include "search.hpp"
#include "search_run.hpp"

namespace fs = std::filesystem;
using namespace nnpar;
using testing::HasSubstr;

namespace {

const fs::path kNnpar = fs::path(NNPAR_BIN_DIR) / "nnpar";
const fs::path kData = NNPAR_TEST_DATA_DIR;

const char* kBase =
    "[data]\nlimit = 2000\ntest_limit = 500\n"
    "[model]\nlayers = [784, 32, 26]\n"
    "[train]\nepochs = 1\nbatch_size = 32\nlr = 0.5\n"
    "[[strategy]]\nname = \"serial\"\n";

RunConfig config_from(const std::string& text, const std::vector<std::string>& overrides = {}) {
  return load_config_text(text, "search.toml", fs::current_path(), overrides);
}

SearchSettings settings_from(const std::string& search_table, const std::vector<std::string>& overrides = {}) {
  return load_search_settings(config_from(std::string(kBase) + search_table, overrides));
}

// The ConfigError message of loading [search] from this text.
std::string search_error(const std::string& text, const std::vector<std::string>& overrides = {}) {
  try {
    load_search_settings(config_from(text, overrides));
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

// ---------------------------------------------------------------------------------------
// [search] validation

TEST(SearchConfig, DefaultsComeFromModelAndTrain) {
  const SearchSettings s = settings_from("[search]\nmethod = \"grid\"\n");
  EXPECT_EQ(s.space.layers, std::vector<int>{1});
  EXPECT_EQ(s.space.width, std::vector<int>{32});
  EXPECT_EQ(s.space.lr.values, std::vector<double>{0.5});
  EXPECT_EQ(s.space.batch_size, std::vector<int>{32});
  EXPECT_EQ(s.space.epochs, std::vector<int>{1});
  EXPECT_EQ(s.mode, SearchMode::trial_parallel);
  EXPECT_EQ(s.workers, 2);
  EXPECT_DOUBLE_EQ(s.validation, 0.1);
  EXPECT_EQ(s.trial_strategy, "serial");
  EXPECT_EQ(grid_trials(s.space).size(), 1u);
}

TEST(SearchConfig, RangesExpandAndLrCountIsLogSpaced) {
  const SearchSettings s = settings_from(
      "[search]\nmethod = \"grid\"\nlayers = {min = 1, max = 3}\nwidth = {min = 16, max = 64, step = 16}\n"
      "lr = {min = 0.01, max = 1.0, count = 5}\nbatch_size = 64\n");
  EXPECT_EQ(s.space.layers, (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(s.space.width, (std::vector<int>{16, 32, 48, 64}));
  EXPECT_EQ(s.space.lr.values, (std::vector<double>{0.01, 0.03162, 0.1, 0.3162, 1.0}));
  EXPECT_EQ(s.space.batch_size, std::vector<int>{64});
}

TEST(SearchConfig, ErrorsNameFileLineColumnAndKey) {
  const std::string base = kBase;
  struct Case {
    std::string text, expected;
  };
  const std::vector<Case> cases = {
      {"[search]\nmethod = \"grid\"\nlayer = [1, 2]\n", "search.toml:14:1: search.layer: unknown key (did you mean 'layers'?)"},
      {"[search]\nlayers = [1]\n", "search.method: missing required key"},
      {"[search]\nmethod = \"grdi\"\n", "search.toml:13:10: search.method: must be one of \"grid\", \"random\", \"halving\", found \"grdi\" (did you mean 'grid'?)"},
      {"[search]\nmethod = \"grid\"\nlayers = \"two\"\n", "search.toml:14:10: search.layers: expected an integer, a list of integers or a range"},
      {"[search]\nmethod = \"grid\"\nwidth = []\n", "search.width: must list at least one value"},
      {"[search]\nmethod = \"grid\"\nwidth = [16, 32, 16]\n", "search.toml:14:18: search.width[2]: duplicate value 16"},
      {"[search]\nmethod = \"grid\"\nwidth = [16, 0]\n", "search.width[1]: must be in 1..65536, found 0"},
      {"[search]\nmethod = \"grid\"\nwidth = {min = 16}\n", "search.width: a range needs min and max"},
      {"[search]\nmethod = \"grid\"\nwidth = {min = 16, max = 64, stp = 16}\n", "search.width.stp: unknown key (did you mean 'step'?)"},
      {"[search]\nmethod = \"grid\"\nwidth = {min = 64, max = 16}\n", "search.width.max: must be in 64..65536, found 16"},
      {"[search]\nmethod = \"grid\"\nlr = [0.1, -0.3]\n", "search.lr[1]: must be > 0, found -0.3"},
      {"[search]\nmethod = \"grid\"\nlr = {min = 0.01, max = 1.0}\n", "search.lr: a grid needs a list of values, or a range with count"},
      {"[search]\nmethod = \"random\"\n", "search.trials: missing required key"},
      {"[search]\nmethod = \"grid\"\ntrials = 4\n", "search.toml:14:10: search.trials: only used when configurations are drawn at random"},
      {"[search]\nmethod = \"halving\"\ntrials = 4\nepochs = [1, 2]\n", "search.epochs: not used with method = \"halving\""},
      {"[search]\nmethod = \"grid\"\neta = 3\n", "search.eta: only used with method = \"halving\""},
      {"[search]\nmethod = \"halving\"\ntrials = 4\neta = 1\n", "search.eta: must be in 2..1000, found 1"},
      {"[search]\nmethod = \"halving\"\ntrials = 4\nmin_epochs = 3\nmax_epochs = 2\n", "search.max_epochs: max_epochs (2) must be >= min_epochs (3)"},
      {"[search]\nmethod = \"grid\"\nvalidation = 1.5\n", "search.validation: must be in (0, 1), found 1.5"},
      {"[search]\nmethod = \"grid\"\ntarget_accuracy = 70\n", "search.target_accuracy: must be a fraction in (0, 1]"},
      {"[search]\nmethod = \"grid\"\nmode = \"both\"\n", "search.data_strategy: missing required key with mode = \"both\""},
      {"[search]\nmethod = \"grid\"\nmode = \"data_parallel\"\ndata_strategy = \"serail\"\n", "search.data_strategy: no [[strategy]] is labelled \"serail\" (did you mean 'serial'?)"},
      {"[search]\nmethod = \"grid\"\nworkers = 0\n", "search.workers: must be in 1..4096, found 0"},
  };
  for (const auto& c : cases) EXPECT_THAT(search_error(base + c.text), HasSubstr(c.expected)) << c.text;
}

TEST(SearchConfig, MissingOrMistypedTableAndModelConflicts) {
  EXPECT_THAT(search_error(kBase), HasSubstr("search.toml: search: no [search] table"));
  EXPECT_THAT(search_error(std::string("search = 3\n") + kBase),
              HasSubstr("search.toml:1:10: search: expected a table ([search]), found an integer"));
  const std::string unequal = "[model]\nlayers = [784, 64, 32, 26]\n[search]\nmethod = \"grid\"\nlayers = [1, 2]\n"
                              "[[strategy]]\nname = \"serial\"\n";
  EXPECT_THAT(search_error(unequal), HasSubstr("hidden layers of different widths"));
  EXPECT_THAT(search_error(std::string(kBase) + "[search]\nmethod = \"grid\"\n", {"model.init_checkpoint=x.safetensors"}),
              HasSubstr("model.init_checkpoint: cannot be used by a search"));
}

TEST(SearchConfig, OverridesAreValidatedAndNamed) {
  EXPECT_THAT(search_error(std::string(kBase) + "[search]\nmethod = \"grid\"\n", {"search.lr=-1"}),
              HasSubstr("--set search.lr: must be > 0, found -1"));
  EXPECT_THAT(search_error(std::string(kBase) + "[search]\nmethod = \"grid\"\n", {"search.wokers=4"}),
              HasSubstr("--set search.wokers: unknown key (did you mean 'workers'?)"));
  const SearchSettings s = settings_from("[search]\nmethod = \"grid\"\n", {"search.width=[8, 16]"});
  EXPECT_EQ(s.space.width, (std::vector<int>{8, 16}));
}

TEST(SearchConfig, FingerprintIgnoresWorkersAndModeButNotTheSpace) {
  const std::string t = "[search]\nmethod = \"grid\"\nwidth = [8, 16]\n";
  const auto a = settings_from(t).fingerprint;
  EXPECT_EQ(a, settings_from(t, {"search.workers=7"}).fingerprint);
  EXPECT_NE(a, settings_from(t, {"search.width=[8]"}).fingerprint);
  EXPECT_NE(a, settings_from(t, {"train.seed=5"}).fingerprint);
}

TEST(SearchConfig, ShippedSearchConfigsAreValid) {
  int checked = 0;
  for (const auto& file : fs::directory_iterator(fs::path(NNPAR_SOURCE_DIR) / "configs")) {
    if (file.path().extension() != ".toml" || file.path().stem().string().rfind("search", 0) != 0) continue;
    SCOPED_TRACE(file.path().string());
    const RunConfig config = load_config(file.path());
    const SearchSettings s = load_search_settings(config);
    EXPECT_EQ(s.mode, SearchMode::both);
    EXPECT_TRUE(s.target_accuracy.has_value());
    const auto pool = search_pool(s);
    const auto rungs = halving_rungs(s.min_epochs, s.max_epochs, s.eta);
    EXPECT_GT(halving_plan(int(pool.size()), int(rungs.size()), s.eta).back(), 0) << "the last rung is reached";
    ++checked;
  }
  EXPECT_EQ(checked, 3);
}

// ---------------------------------------------------------------------------------------
// The space

TEST(SearchSpace, GridEnumeratesExactlyTheProduct) {
  SearchSpace space;
  space.layers = {1, 2};
  space.width = {16, 32, 64};
  space.lr.values = {0.1, 0.3};
  space.batch_size = {32, 128};
  space.epochs = {1, 2};
  const auto trials = grid_trials(space);
  ASSERT_EQ(trials.size(), 2u * 3 * 2 * 2 * 2);
  std::set<std::tuple<int, int, double, int, int>> seen;
  for (auto& t : trials) seen.insert({t.layers, t.width, t.lr, t.batch_size, t.epochs});
  EXPECT_EQ(seen.size(), trials.size()) << "a configuration appears twice";
  for (int l : space.layers)
    for (int w : space.width)
      for (double lr : space.lr.values)
        for (int b : space.batch_size)
          for (int e : space.epochs) EXPECT_TRUE(seen.count({l, w, lr, b, e})) << l << " " << w << " " << lr;
  // Fixed order: layers outermost, epochs fastest.
  EXPECT_EQ(trials.front(), (TrialParams{1, 16, 0.1, 32, 1}));
  EXPECT_EQ(trials[1], (TrialParams{1, 16, 0.1, 32, 2}));
  EXPECT_EQ(trials.back(), (TrialParams{2, 64, 0.3, 128, 2}));
}

TEST(SearchSpace, RandomWithAFixedSeedIsReproducible) {
  SearchSpace space;
  space.layers = {1, 2, 3};
  space.width = {16, 32, 64, 128};
  space.lr.min = 0.01;
  space.lr.max = 1.0;
  space.batch_size = {32, 64};
  space.epochs = {1, 2};
  const auto a = random_trials(space, 50, 7);
  EXPECT_EQ(a, random_trials(space, 50, 7));
  EXPECT_NE(a, random_trials(space, 50, 8));
  // A prefix does not depend on how many are drawn.
  const auto first = random_trials(space, 10, 7);
  EXPECT_TRUE(std::equal(first.begin(), first.end(), a.begin()));
  std::set<int> widths;
  std::set<double> lrs;
  for (auto& t : a) {
    EXPECT_THAT(space.layers, testing::Contains(t.layers));
    EXPECT_THAT(space.width, testing::Contains(t.width));
    EXPECT_GE(t.lr, 0.01);
    EXPECT_LE(t.lr, 1.0);
    widths.insert(t.width);
    lrs.insert(t.lr);
  }
  EXPECT_EQ(widths.size(), 4u) << "50 draws should see every width";
  EXPECT_GT(lrs.size(), 40u) << "a continuous range should rarely repeat";
  // Log-uniform: about half the draws below the geometric mean 0.1.
  const auto below = std::count_if(a.begin(), a.end(), [](auto& t) { return t.lr < 0.1; });
  EXPECT_GT(below, 12);
  EXPECT_LT(below, 38);
}

TEST(SearchSpace, ValidationSplitIsFixedDisjointAndComplete) {
  Dataset all;
  all.count = 100;
  all.rows = all.cols = 2;
  for (std::size_t i = 0; i < all.count; ++i) {
    for (int p = 0; p < 4; ++p) all.pixels.push_back(std::uint8_t(i));
    all.labels.push_back(std::int32_t(i % 26));
  }
  const ValidationSplit s = split_validation(all, 0.1);
  ASSERT_EQ(s.validation.count, 10u);
  ASSERT_EQ(s.train.count, 90u);
  std::set<int> seen;
  auto check = [&](const Dataset& d) {
    for (std::size_t i = 0; i < d.count; ++i) {
      const int original = d.pixels[i * 4];  // every pixel holds the sample's index
      EXPECT_EQ(d.labels[i], original % 26);
      EXPECT_TRUE(seen.insert(original).second) << "sample " << original << " in both parts";
    }
  };
  check(s.train);
  check(s.validation);
  EXPECT_EQ(seen.size(), 100u);
  EXPECT_EQ(split_validation(all, 0.1).validation.pixels, s.validation.pixels);
  EXPECT_EQ(split_validation(all, 0.5).validation.count, 50u);
}

// ---------------------------------------------------------------------------------------
// Schedulers

TEST(SuccessiveHalving, Rungs) {
  EXPECT_EQ(halving_rungs(1, 9, 3), (std::vector<int>{1, 3, 9}));
  EXPECT_EQ(halving_rungs(1, 10, 3), (std::vector<int>{1, 3, 9, 10}));
  EXPECT_EQ(halving_rungs(2, 8, 2), (std::vector<int>{2, 4, 8}));
  EXPECT_EQ(halving_rungs(3, 3, 3), (std::vector<int>{3}));
  EXPECT_EQ(halving_plan(27, 3, 3), (std::vector<int>{27, 9, 3}));
  EXPECT_EQ(halving_plan(10, 3, 3), (std::vector<int>{10, 3, 1}));
}

std::vector<TrialParams> pool_of(int n) {
  std::vector<TrialParams> pool;
  for (int i = 0; i < n; ++i) pool.push_back({1, 8 + i, 0.1, 32, 9});
  return pool;
}

// A made-up validation accuracy: a fixed quality per trial, improving with epochs.
double quality(int trial, int epochs) {
  const double q = double((trial * 7919) % 101) / 200.0;  // distinct for trial < 101
  return q + 0.01 * epochs;
}

TrialRecord result_of(const TrialJob& job, const std::vector<TrialParams>& pool) {
  TrialRecord r;
  r.trial = job.trial;
  r.params = pool[job.trial - 1];
  r.from_epochs = job.from_epochs;
  r.epochs = job.to_epochs;
  r.val_accuracy = quality(job.trial, job.to_epochs);
  return r;
}

std::vector<int> top_by_quality(const std::vector<int>& trials, int epochs, std::size_t keep) {
  std::vector<int> sorted = trials;
  std::sort(sorted.begin(), sorted.end(), [&](int a, int b) { return quality(a, epochs) > quality(b, epochs); });
  sorted.resize(std::min(keep, sorted.size()));
  std::sort(sorted.begin(), sorted.end());
  return sorted;
}

TEST(SuccessiveHalving, SynchronousKeepsTheTopFractionOfEachRung) {
  const auto pool = pool_of(27);
  const std::vector<int> rungs{1, 3, 9};
  TrialScheduler s(pool, true, rungs, 3, /*asynchronous=*/false);
  int highest_started = 0;
  while (auto job = s.next()) {
    // Synchronous: no job of a rung starts before the rung below is complete.
    const int rung = int(std::find(rungs.begin(), rungs.end(), job->to_epochs) - rungs.begin());
    if (rung > highest_started) {
      EXPECT_EQ(s.rung_members(rung - 1).size(), std::size_t(halving_plan(27, 3, 3)[rung - 1]));
      highest_started = rung;
    }
    EXPECT_EQ(job->from_epochs, rung == 0 ? 0 : rungs[rung - 1]);
    s.finished(result_of(*job, pool));
  }
  EXPECT_TRUE(s.done());
  ASSERT_EQ(s.rung_members(0).size(), 27u);
  ASSERT_EQ(s.rung_members(1).size(), 9u);
  ASSERT_EQ(s.rung_members(2).size(), 3u);
  EXPECT_EQ(s.rung_members(1), top_by_quality(s.rung_members(0), 1, 9));
  EXPECT_EQ(s.rung_members(2), top_by_quality(s.rung_members(1), 3, 3));
  EXPECT_EQ(s.jobs_done(), 39);
  EXPECT_EQ(s.epochs_done(), 27 * 1 + 9 * 2 + 3 * 6);
  EXPECT_EQ(s.epochs_planned(), s.epochs_done());
}

TEST(SuccessiveHalving, FloorOfNOverEtaAndDivergedTrialsStayBehind) {
  const auto pool = pool_of(10);
  std::vector<int> all{1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  const int best = top_by_quality(all, 1, 1).front();
  TrialScheduler s(pool, true, {1, 2}, 3, false);
  while (auto job = s.next()) {
    TrialRecord r = result_of(*job, pool);
    if (job->trial == best) r.status = "diverged";  // its accuracy would have been the best
    s.finished(r);
  }
  ASSERT_EQ(s.rung_members(0).size(), 10u);
  ASSERT_EQ(s.rung_members(1).size(), 3u);  // floor(10 / 3)
  all.erase(std::find(all.begin(), all.end(), best));
  EXPECT_EQ(s.rung_members(1), top_by_quality(all, 1, 3));
}

TEST(SuccessiveHalving, AsynchronousPromotesFromTheTopOfWhatHasCompleted) {
  const auto pool = pool_of(40);
  const std::vector<int> rungs{1, 3, 9};
  TrialScheduler s(pool, true, rungs, 3, /*asynchronous=*/true);
  std::vector<TrialJob> running;
  unsigned long long state = 12345;
  auto random_index = [&](std::size_t n) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return std::size_t((state >> 33) % n);
  };
  const int workers = 4;
  int promotions = 0;
  while (true) {
    while (int(running.size()) < workers) {
      auto job = s.next();
      if (!job) break;
      if (job->from_epochs > 0) {
        // ASHA's rule, at the moment of promotion: in the top floor(n/eta) of its rung.
        const int k = int(std::find(rungs.begin(), rungs.end(), job->from_epochs) - rungs.begin());
        const auto members = s.rung_members(k);
        const auto top = top_by_quality(members, rungs[k], members.size() / 3);
        EXPECT_THAT(top, testing::Contains(job->trial)) << "trial " << job->trial << " promoted from rung " << k;
        ++promotions;
      }
      running.push_back(*job);
    }
    if (running.empty()) break;
    const std::size_t i = random_index(running.size());  // jobs finish in an arbitrary order
    s.finished(result_of(running[i], pool));
    running.erase(running.begin() + std::ptrdiff_t(i));
  }
  EXPECT_TRUE(s.done());
  EXPECT_EQ(s.rung_members(0).size(), 40u);
  EXPECT_GT(promotions, 0);
  // Once everything is in, each rung holds (at least) the top floor(n/eta) of the one below.
  for (int k = 0; k + 1 < 3; ++k) {
    const auto members = s.rung_members(k);
    const auto next = s.rung_members(k + 1);
    for (int t : top_by_quality(members, rungs[k], members.size() / 3))
      EXPECT_THAT(next, testing::Contains(t)) << "rung " << k + 1;
  }
}

TEST(TrialScheduler, ReplayedResultsAreNotRunAgain) {
  const auto pool = pool_of(5);
  TrialScheduler s(pool, false, {}, 3, true);
  for (int t : {1, 3}) s.finished(result_of({t, 0, pool[t - 1].epochs}, pool));
  std::vector<int> order;
  while (auto job = s.next()) {
    order.push_back(job->trial);
    s.finished(result_of(*job, pool));
  }
  EXPECT_EQ(order, (std::vector<int>{2, 4, 5}));
  EXPECT_EQ(s.jobs_done(), 5);
  EXPECT_TRUE(s.done());
}

TEST(TrialScheduler, WaitsForRunningJobsBeforeItIsDone) {
  const auto pool = pool_of(2);
  TrialScheduler s(pool, false, {}, 3, true);
  const auto a = s.next(), b = s.next();
  ASSERT_TRUE(a && b);
  EXPECT_FALSE(s.next());
  EXPECT_FALSE(s.done());
  EXPECT_EQ(s.running(), 2);
  s.finished(result_of(*a, pool));
  s.finished(result_of(*b, pool));
  EXPECT_TRUE(s.done());
  EXPECT_EQ(s.jobs_left(), 0);
}

// ---------------------------------------------------------------------------------------
// nnpar search, end to end

struct Result {
  int status = -1;
  std::string output;
};

Result run(const std::string& command) {
  Result r;
  FILE* pipe = popen(("timeout 300 " + command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return r;
  char buffer[4096];
  while (std::size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) r.output.append(buffer, n);
  const int raw = pclose(pipe);
  r.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  return r;
}

std::vector<nlohmann::json> read_jsonl(const fs::path& file) {
  std::vector<nlohmann::json> out;
  std::ifstream in(file);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(nlohmann::json::parse(line));
  return out;
}

std::string read_text(const fs::path& file) {
  std::ifstream in(file);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// The table's columns that do not depend on timing: trial, parameters, epochs, status,
// validation accuracy and loss, best mark.
std::vector<std::string> result_columns(const fs::path& csv) {
  std::vector<std::string> rows;
  std::istringstream in(read_text(csv));
  for (std::string line; std::getline(in, line);) {
    std::vector<std::string> cells;
    std::string cell;
    std::istringstream fields(line);
    while (std::getline(fields, cell, ',')) cells.push_back(cell);
    if (cells.size() < 9) continue;
    rows.push_back(cells[0] + "," + cells[1] + "," + cells[2] + "," + cells[3] + "," + cells[4] + "," + cells[5] +
                   "," + cells[6] + "," + cells[7] + "," + cells[8] + "," + cells.back());
  }
  return rows;
}

class SearchCli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kData / "letters-train-images-idx3-ubyte.gz")) GTEST_SKIP() << "dataset not found in " << kData;
    dir_ = fs::path(NNPAR_TEST_BINARY_DIR) / "search" / ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    // OpenMPI refuses root unless told (CI runs as root).
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
  }
  // 2,000 samples, 1 epoch per rung or trial: each trial takes a few hundredths of a second.
  fs::path config(const std::string& search, const std::string& name = "search.toml",
                  const std::string& extra = "") {
    std::ostringstream s;
    s << "[data]\ndir = \"" << kData.string() << "\"\nlimit = 2000\ntest_limit = 500\n"
      << "[model]\nlayers = [784, 32, 26]\n"
      << "[train]\nepochs = 1\nbatch_size = 32\nlr = 0.5\n"
      << "[output]\ndir = \"" << (dir_ / "results").string() << "\"\n"
      << "[search]\n" << search << "\n"
      << "[[strategy]]\nname = \"serial\"\n"
      << "[[strategy]]\nname = \"openmp\"\nlabel = \"omp\"\nmode = \"data_parallel\"\n" << extra;
    std::ofstream(dir_ / name) << s.str();
    return dir_ / name;
  }
  // The search folders made so far, oldest first.
  std::vector<fs::path> searches() const {
    std::vector<fs::path> out;
    if (fs::exists(dir_ / "results"))
      for (auto& e : fs::directory_iterator(dir_ / "results")) out.push_back(e.path());
    std::sort(out.begin(), out.end());
    return out;
  }
  std::string nnpar(const std::string& args) const { return kNnpar.string() + " " + args; }
  fs::path dir_;
};

TEST_F(SearchCli, HelpDescribesTheSubcommand) {
  const Result r = run(nnpar("search --help"));
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("--resume"));
  EXPECT_THAT(r.output, HasSubstr("[search]"));
  EXPECT_THAT(run(nnpar("--help")).output, HasSubstr("search"));
  EXPECT_EQ(run(nnpar("search")).status, 2);
}

const char* kSerialGrid =
    "method = \"grid\"\nmode = \"data_parallel\"\ndata_strategy = \"serial\"\n"
    "layers = [1, 2]\nwidth = [16, 32]\nlr = [0.5, 2.0]\ntarget_accuracy = 0.05\n";

TEST_F(SearchCli, GridWritesEveryTrialTheTableAndARunnableBestConfig) {
  const fs::path cfg = config(kSerialGrid);
  const Result r = run(nnpar("search " + cfg.string()));
  ASSERT_EQ(r.status, 0) << r.output;
  ASSERT_EQ(searches().size(), 1u);
  const fs::path mode = searches()[0] / "data_parallel";
  const auto records = read_jsonl(mode / "trials.jsonl");
  ASSERT_EQ(records.size(), 8u);
  std::set<int> trials;
  for (auto& j : records) trials.insert(j.at("trial").get<int>());
  EXPECT_EQ(trials.size(), 8u);
  EXPECT_THAT(r.output, HasSubstr("trials: 8 done, 0 running, 0 left"));
  EXPECT_THAT(r.output, HasSubstr("ETA"));
  EXPECT_EQ(result_columns(mode / "trials.csv").size(), 9u);  // header + 8

  const auto summary = nlohmann::json::parse(read_text(mode / "summary.json"));
  const auto& best = summary.at("best");
  double best_acc = 0;
  for (auto& j : records) best_acc = std::max(best_acc, j.at("val_accuracy").get<double>());
  EXPECT_EQ(best.at("val_accuracy").get<double>(), best_acc);
  EXPECT_GT(best.at("test_accuracy").get<double>(), 0.0);
  EXPECT_TRUE(summary.at("time_to_target_seconds").is_number());
  EXPECT_GT(summary.at("wall_seconds").get<double>(), 0.0);

  // The best configuration loads as a run config with the winner's settings, and trains.
  const RunConfig winner = load_config(mode / "best.toml");
  const auto params = trial_params_from_json(best.at("params"));
  EXPECT_EQ(winner.model.layer_sizes, trial_model(winner.model, params).layer_sizes);
  EXPECT_EQ(int(winner.model.layer_sizes.size()), params.layers + 2);
  EXPECT_FLOAT_EQ(winner.train.sgd.lr, float(params.lr));
  EXPECT_EQ(winner.train.epochs, best.at("epochs").get<int>());
  const Result train = run(nnpar("train " + (mode / "best.toml").string() + " --set output.write_results=false"));
  EXPECT_EQ(train.status, 0) << train.output;
  EXPECT_TRUE(fs::exists(mode / "best.safetensors"));
  EXPECT_FALSE(fs::exists(mode / "checkpoints"));
}

TEST_F(SearchCli, ResumedSearchSkipsFinishedTrialsAndGivesTheSameTable) {
  const fs::path cfg = config(kSerialGrid);
  ASSERT_EQ(run(nnpar("search -q " + cfg.string())).status, 0);
  const fs::path whole = searches()[0] / "data_parallel";

  // Killed after 3 results (as a kill would: no summary), with a half-written fourth line.
  const Result stopped = run(nnpar("search -q --stop-after 3 " + cfg.string()));
  ASSERT_EQ(stopped.status, kStoppedForTest) << stopped.output;
  const fs::path dir = searches()[1];
  const fs::path log = dir / "data_parallel" / "trials.jsonl";
  ASSERT_EQ(read_jsonl(log).size(), 3u);
  EXPECT_FALSE(fs::exists(dir / "data_parallel" / "summary.json"));
  const std::string first_three = read_text(log);
  std::ofstream(log, std::ios::app) << "{\"trial\": 4, \"par";

  const Result resumed = run(nnpar("search " + cfg.string() + " --resume " + dir.string()));
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_THAT(resumed.output, HasSubstr("unfinished record"));
  EXPECT_THAT(resumed.output, HasSubstr("resuming: 3 run(s) finished earlier"));
  // Only the five left ran in this session, and the first three lines are untouched.
  int ran = 0;
  for (std::size_t at = 0; (at = resumed.output.find("[data_parallel] trial ", at)) != std::string::npos; ++at) ++ran;
  EXPECT_EQ(ran, 5);
  const std::string after = read_text(log);
  EXPECT_EQ(after.substr(0, first_three.size()), first_three);
  EXPECT_EQ(read_jsonl(log).size(), 8u);
  EXPECT_EQ(result_columns(dir / "data_parallel" / "trials.csv"), result_columns(whole / "trials.csv"));

  // Resuming a finished search runs nothing and shows its table.
  const Result again = run(nnpar("search " + cfg.string() + " --resume " + dir.string()));
  ASSERT_EQ(again.status, 0) << again.output;
  EXPECT_THAT(again.output, HasSubstr("finished earlier"));
  EXPECT_EQ(read_jsonl(log).size(), 8u);
}

TEST_F(SearchCli, ResumeRefusesADifferentSearchOrAFolderThatIsNotOne) {
  const fs::path cfg = config(kSerialGrid);
  ASSERT_EQ(run(nnpar("search -q --stop-after 1 " + cfg.string())).status, kStoppedForTest);
  const fs::path dir = searches()[0];
  const Result changed = run(nnpar("search " + cfg.string() + " --set search.width=[16] --resume " + dir.string()));
  EXPECT_EQ(changed.status, 2);
  EXPECT_THAT(changed.output, HasSubstr("search.space.width: was [16,32], now [16]"));
  const Result bogus = run(nnpar("search " + cfg.string() + " --resume " + dir_.string()));
  EXPECT_EQ(bogus.status, 2);
  EXPECT_THAT(bogus.output, HasSubstr("not a search folder"));
  EXPECT_EQ(read_jsonl(dir / "data_parallel" / "trials.jsonl").size(), 1u);
}

TEST_F(SearchCli, HalvingTrainsTheTopThirdOnAndResumesFromRungCheckpoints) {
  // 9 configurations, rungs of 1 and 3 epochs: 9, then the best 3 (synchronous in data_parallel).
  const std::string halving =
      "method = \"halving\"\nsample = \"grid\"\nmode = \"data_parallel\"\ndata_strategy = \"serial\"\n"
      "layers = 1\nwidth = [16, 24, 32]\nlr = [0.3, 1.0, 3.0]\nmin_epochs = 1\nmax_epochs = 3\neta = 3\n";
  const fs::path cfg = config(halving);
  ASSERT_EQ(run(nnpar("search -q " + cfg.string())).status, 0);
  const auto records = read_jsonl(searches()[0] / "data_parallel" / "trials.jsonl");
  std::vector<std::pair<double, int>> rung0;
  std::set<int> rung1;
  for (auto& j : records) {
    if (j.at("epochs") == 1) rung0.push_back({-j.at("val_accuracy").get<double>(), j.at("trial").get<int>()});
    if (j.at("epochs") == 3) {
      rung1.insert(j.at("trial").get<int>());
      EXPECT_EQ(j.at("from_epochs"), 1) << "a promoted trial continues from its rung checkpoint";
    }
  }
  ASSERT_EQ(rung0.size(), 9u);
  ASSERT_EQ(rung1.size(), 3u);
  std::sort(rung0.begin(), rung0.end());
  EXPECT_EQ(rung1, (std::set<int>{rung0[0].second, rung0[1].second, rung0[2].second}));

  // Continuing from the rung checkpoint is the same as training for 3 epochs from scratch
  // (momentum 0; the epochs keep their numbers, so the data order is the same).
  const fs::path scratch = config(
      "method = \"grid\"\nmode = \"data_parallel\"\ndata_strategy = \"serial\"\nlayers = 1\n"
      "width = [16, 24, 32]\nlr = [0.3, 1.0, 3.0]\nepochs = 3\n",
      "scratch.toml");
  ASSERT_EQ(run(nnpar("search -q " + scratch.string())).status, 0);
  const auto from_scratch = read_jsonl(searches()[1] / "data_parallel" / "trials.jsonl");
  for (auto& j : records)
    if (j.at("epochs") == 3) {
      const auto& same = from_scratch.at(j.at("trial").get<std::size_t>() - 1);
      ASSERT_EQ(same.at("trial"), j.at("trial"));
      EXPECT_EQ(same.at("val_accuracy"), j.at("val_accuracy")) << "trial " << j.at("trial");
      EXPECT_EQ(same.at("val_loss"), j.at("val_loss")) << "trial " << j.at("trial");
    }
  fs::remove_all(searches()[1]);

  // Stopped after 10 results (rung 0 and one promotion), then resumed: the same results.
  ASSERT_EQ(run(nnpar("search -q --stop-after 10 " + cfg.string())).status, kStoppedForTest);
  const fs::path dir = searches()[1];
  const Result resumed = run(nnpar("search " + cfg.string() + " --resume " + dir.string()));
  ASSERT_EQ(resumed.status, 0) << resumed.output;
  EXPECT_THAT(resumed.output, testing::Not(HasSubstr("trains from scratch")));
  EXPECT_EQ(result_columns(dir / "data_parallel" / "trials.csv"),
            result_columns(searches()[0] / "data_parallel" / "trials.csv"));
}

// Per (trial, epochs): validation accuracy and loss.
std::map<std::pair<int, int>, std::pair<double, double>> per_trial(const fs::path& jsonl) {
  std::map<std::pair<int, int>, std::pair<double, double>> out;
  for (auto& j : read_jsonl(jsonl))
    out[{j.at("trial").get<int>(), j.at("epochs").get<int>()}] = {j.at("val_accuracy").get<double>(),
                                                                   j.at("val_loss").get<double>()};
  return out;
}

TEST_F(SearchCli, TrialParallelUnderMpirunMatchesSerialTrialForTrial) {
  for (const std::string method : {"random", "halving"}) {
    SCOPED_TRACE(method);
    fs::remove_all(dir_ / "results");
    std::string search = "method = \"" + method + "\"\ntrials = 6\nseed = 3\nlayers = [1, 2]\nwidth = [16, 32]\n"
                         "lr = {min = 0.2, max = 3.0}\n";
    search += method == "halving" ? "min_epochs = 1\nmax_epochs = 2\neta = 2\n" : "epochs = [1, 2]\n";
    const fs::path cfg = config(search);
    const Result mpi = run(std::string(NNPAR_MPIEXEC) + " --oversubscribe -np 3 " +
                           nnpar("search " + cfg.string() + " --set search.mode=trial_parallel"));
    ASSERT_EQ(mpi.status, 0) << mpi.output;
    EXPECT_THAT(mpi.output, HasSubstr("on 2 worker(s)"));
    const Result serial = run(nnpar("search " + cfg.string() +
                                    " --set search.mode=data_parallel --set search.data_strategy=serial"));
    ASSERT_EQ(serial.status, 0) << serial.output;
    ASSERT_EQ(searches().size(), 2u);
    const auto parallel_results = per_trial(searches()[0] / "trial_parallel" / "trials.jsonl");
    const auto serial_results = per_trial(searches()[1] / "data_parallel" / "trials.jsonl");
    int compared = 0, first_rung = 0;
    for (auto& [key, value] : parallel_results) {
      auto it = serial_results.find(key);
      if (it == serial_results.end()) continue;  // ASHA may promote a trial synchronous halving does not
      EXPECT_EQ(value, it->second) << "trial " << key.first << " after " << key.second << " epochs";
      ++compared;
      if (method == "halving" && key.second == 1) ++first_rung;
    }
    if (method == "random") EXPECT_EQ(compared, 6);
    else EXPECT_EQ(first_rung, 6);
  }
}

TEST_F(SearchCli, BothModesRunAndAreCompared) {
  const fs::path cfg = config(
      "method = \"grid\"\nmode = \"both\"\ndata_strategy = \"omp\"\nworkers = 2\nwidth = [16, 32]\nlr = [0.5, 2.0]\n"
      "target_accuracy = 0.05\n");
  const Result r = run(nnpar("search -q " + cfg.string()));
  ASSERT_EQ(r.status, 0) << r.output;
  const fs::path dir = searches()[0];
  const std::string comparison = read_text(dir / "comparison.txt");
  EXPECT_THAT(comparison, HasSubstr("trial_parallel"));
  EXPECT_THAT(comparison, HasSubstr("data_parallel"));
  EXPECT_THAT(comparison, HasSubstr("faster to finish"));
  EXPECT_THAT(comparison, HasSubstr("to 5.00%"));
  // Both modes train the same trials to the same results (openmp data_parallel is exact
  // only up to float summation order, so compare to 4 digits).
  EXPECT_EQ(result_columns(dir / "trial_parallel" / "trials.csv").size(), 5u);
  const auto a = per_trial(dir / "trial_parallel" / "trials.jsonl");
  const auto b = per_trial(dir / "data_parallel" / "trials.jsonl");
  ASSERT_EQ(a.size(), b.size());
  for (auto& [key, value] : a) EXPECT_NEAR(value.second, b.at(key).second, 1e-3) << "trial " << key.first;
  const auto omp = nlohmann::json::parse(read_text(dir / "data_parallel" / "summary.json"));
  EXPECT_EQ(omp.at("workers"), 2);
}

TEST_F(SearchCli, StrategyConflictsAreConfigErrors) {
  // A multi-rank strategy cannot train one trial per worker.
  const fs::path multi = config("method = \"grid\"\ntrial_strategy = \"mpi\"\n", "multi.toml",
                                "[[strategy]]\nname = \"mpi-data\"\nlabel = \"mpi\"\nranks = 2\n");
  Result r = run(nnpar("search " + multi.string()));
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.output, HasSubstr("search.trial_strategy: 'mpi' (plugin mpi-data) runs on several ranks"));
  // The search sets the data strategy's threads from search.workers.
  const fs::path threads = config("method = \"grid\"\nmode = \"data_parallel\"\ndata_strategy = \"omp4\"\nworkers = 2\n",
                                  "threads.toml", "[[strategy]]\nname = \"openmp\"\nlabel = \"omp4\"\nthreads = 4\n");
  r = run(nnpar("search " + threads.string()));
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.output, HasSubstr("threads.toml:28:11: strategy[omp4].threads: set by the search"));
  r = run(nnpar("search " + config("method = \"grid\"\n", "nodata.toml").string() + " --set data.dir=" +
                 (dir_ / "none").string()));
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.output, HasSubstr("data error: " + (dir_ / "none").string() + "/letters-train-images-idx3-ubyte.gz"));
  r = run(nnpar("search " + config("method = \"grid\"\nlayres = [1]\n", "typo.toml").string()));
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.output, HasSubstr("typo.toml:15:1: search.layres: unknown key (did you mean 'layers'?)"));
  EXPECT_TRUE(searches().empty()) << "nothing is written for a bad config";
}

}  // namespace
