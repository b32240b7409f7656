// nnpar report on a recorded sweep (tests/fixtures/report): the files it writes, and for every
// figure the series it must draw, counted here from the fixture's own results.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <regex>
#include <set>

#include <nlohmann/json.hpp>

#include "nnpar_cli.hpp"

using namespace nnpar_test;
using testing::HasSubstr;

namespace {

const fs::path kFixture = fs::path(NNPAR_TEST_FIXTURES) / "report";

struct FixtureRun {
  std::string label, plugin, point, hidden;  // point: b<batch>-h<hidden>
  int workers = 1, batch = 0, ranks = 1;
  std::size_t rank_phases = 0;
  bool traced = false;
};

std::string join(const std::vector<int>& v, const char* sep) {
  std::string s;
  for (std::size_t i = 0; i < v.size(); ++i) {
    if (i) s += sep;
    s += std::to_string(v[i]);
  }
  return s;
}

std::vector<FixtureRun> fixture_runs() {
  const auto index = nlohmann::json::parse(slurp(kFixture / "sweep.json"));
  std::vector<FixtureRun> runs;
  for (auto& row : index["runs"]) {
    const fs::path file = kFixture / row["results_file"].get<std::string>();
    const auto j = nlohmann::json::parse(slurp(file));
    FixtureRun r;
    r.label = j["strategy"]["label"];
    r.plugin = j["strategy"]["name"];
    r.ranks = j["strategy"]["ranks"];
    r.workers = row["workers"];
    r.batch = j["config"]["train"]["batch_size"];
    const auto layers = j["config"]["model"]["layers"].get<std::vector<int>>();
    r.hidden = join(std::vector<int>(layers.begin() + 1, layers.end() - 1), "x");
    r.point = "b";
    r.point += std::to_string(r.batch) + "-h" + r.hidden;
    r.rank_phases = j["totals"].value("rank_phases", nlohmann::json::array()).size();
    r.traced = fs::exists(file.parent_path() / (file.stem().string() + ".trace.json"));
    runs.push_back(r);
  }
  return runs;
}

// What each figure must show, from the data alone.
struct Expected {
  std::size_t series = 0;
  std::string source;  // gantt: trace or ideal
  std::size_t bars = 0;  // breakdown: one per rank of every run
};

std::map<std::string, Expected> expected_figures(const std::vector<FixtureRun>& runs) {
  std::map<std::string, std::set<std::string>> labels, runs_at, batch_series, width_series;
  std::map<std::string, std::size_t> bars;
  std::map<std::string, Expected> out;
  for (auto& r : runs) {
    const std::string series = r.label + " w" + std::to_string(r.workers);
    labels[r.point].insert(r.label);
    runs_at[r.point].insert(series);
    batch_series[r.hidden].insert(series);
    width_series[std::to_string(r.batch)].insert(series);
    bars[r.point] += std::max<std::size_t>(1, r.rank_phases);
    if (r.plugin == "mpi-pipeline" && r.ranks > 1)
      out["gantt-" + r.point + "-mpi-pipeline_w" + std::to_string(r.workers)] = {std::size_t(r.ranks),
                                                                                r.traced ? "trace" : "ideal", 0};
  }
  for (auto& [point, l] : labels) {
    out["speedup-" + point] = {l.size(), "", 0};
    out["efficiency-" + point] = {l.size(), "", 0};
    out["breakdown-" + point] = {4, "", bars[point]};  // compute, communication, idle, data
    out["convergence-" + point] = {runs_at[point].size(), "", 0};
  }
  for (auto& [hidden, s] : batch_series) out["throughput-vs-batch-h" + hidden] = {s.size(), "", 0};
  for (auto& [batch, s] : width_series) out["throughput-vs-width-b" + batch + "-d2"] = {s.size(), "", 0};
  return out;
}

// Distinct series ids in an SVG: every plotted artist of a series carries id="series-NAME[.part]".
std::set<std::string> svg_series(const std::string& svg) {
  std::set<std::string> ids;
  const std::regex id(R"re(id="series-([A-Za-z0-9_-]+))re");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), id); it != std::sregex_iterator(); ++it)
    ids.insert((*it)[1]);
  return ids;
}

void expect_png(const fs::path& file) {
  const std::string png = slurp(file);
  ASSERT_GT(png.size(), 33u) << file;
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8)) << file;
  EXPECT_EQ(png.substr(12, 4), "IHDR") << file;
  auto be32 = [&](std::size_t at) {
    return (unsigned(uint8_t(png[at])) << 24) | (unsigned(uint8_t(png[at + 1])) << 16) |
           (unsigned(uint8_t(png[at + 2])) << 8) | unsigned(uint8_t(png[at + 3]));
  };
  EXPECT_GT(be32(16), 300u) << file;  // width
  EXPECT_GT(be32(20), 150u) << file;  // height
  EXPECT_EQ(png.substr(png.size() - 8, 4), "IEND") << file;
}

class Report : public CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    if (!report_python_ready()) GTEST_SKIP() << "python3 with matplotlib and numpy not found: report figures not tested";
  }
};

TEST_F(Report, FromARecordedSweepEveryFigureDrawsTheSeriesItsDataHolds) {
  const fs::path out = dir_ / "report";
  const Output r = run("report " + kFixture.string() + " -o " + out.string());
  ASSERT_EQ(r.status, 0) << r.all();
  for (const char* f : {"report.md", "report.html", "manifest.json"}) EXPECT_TRUE(fs::exists(out / f)) << f;
  const auto manifest = nlohmann::json::parse(slurp(out / "manifest.json"));
  const auto runs = fixture_runs();
  ASSERT_EQ(runs.size(), 28u);
  EXPECT_EQ(manifest["runs"], runs.size());
  const auto expected = expected_figures(runs);

  std::set<std::string> drawn;
  const std::string host = nlohmann::json::parse(slurp(kFixture / "sweep.json"))["machine"]["host"];
  for (auto& f : manifest["figures"]) {
    const std::string id = f["id"];
    drawn.insert(id);
    ASSERT_TRUE(expected.count(id)) << "unexpected figure " << id;
    const Expected& e = expected.at(id);
    EXPECT_EQ(f["series"].size(), e.series) << id;
    const std::string svg = slurp(out / f["svg"].get<std::string>());
    EXPECT_EQ(svg_series(svg).size(), e.series) << id;
    EXPECT_THAT(svg, HasSubstr("</svg>")) << id;
    // Provenance on every figure: machine, date, config.
    EXPECT_THAT(svg, HasSubstr("machine: " + host)) << id;
    EXPECT_THAT(svg, HasSubstr("date: 2026-11-26")) << id;
    EXPECT_THAT(svg, HasSubstr("config: sweep.toml")) << id;
    expect_png(out / f["png"].get<std::string>());
    if (!e.source.empty()) {
      EXPECT_EQ(f["source"], e.source) << id;
    }
    if (e.bars) {
      EXPECT_EQ(f["bars"].size(), e.bars) << id;
    }
  }
  std::set<std::string> wanted;
  for (auto& [id, _] : expected) wanted.insert(id);
  EXPECT_EQ(drawn, wanted);
  EXPECT_TRUE(manifest["skipped"].empty()) << manifest["skipped"].dump();
  EXPECT_EQ(manifest["tables"]["parity"], runs.size());

  // The HTML carries its figures inside; the Markdown points at the PNG files.
  const std::string html = slurp(out / "report.html");
  const std::string md = slurp(out / "report.md");
  std::size_t embedded = 0;
  for (auto at = html.find("src='data:image/png;base64,"); at != std::string::npos;
       at = html.find("src='data:image/png;base64,", at + 1))
    ++embedded;
  EXPECT_EQ(embedded, wanted.size());
  EXPECT_EQ(html.find("src='figures"), std::string::npos);
  for (auto& id : wanted) {
    EXPECT_THAT(html, HasSubstr("id='" + id + "'"));
    EXPECT_THAT(md, HasSubstr("](figures/" + id + ".png)"));
  }
  EXPECT_THAT(md, HasSubstr("## Parity verdicts"));
}

TEST_F(Report, AFigureWithoutItsDataIsLeftOutWithANote) {
  // One run: nothing to scale over, no batch or width series, no pipeline.
  fs::create_directories(dir_ / "one");
  fs::copy_file(kFixture / "b32-h32x32" / "serial.json", dir_ / "one" / "serial.json");
  const Output r = run("report " + (dir_ / "one").string() + " -o " + (dir_ / "report").string());
  ASSERT_EQ(r.status, 0) << r.all();
  const auto manifest = nlohmann::json::parse(slurp(dir_ / "report" / "manifest.json"));
  std::set<std::string> drawn, skipped;
  for (auto& f : manifest["figures"]) drawn.insert(f["id"]);
  for (auto& s : manifest["skipped"]) {
    skipped.insert(s["id"]);
    EXPECT_FALSE(s["reason"].get<std::string>().empty());
  }
  EXPECT_EQ(drawn, (std::set<std::string>{"breakdown-b32-h32x32", "convergence-b32-h32x32"}));
  EXPECT_EQ(skipped, (std::set<std::string>{"speedup-b32-h32x32", "efficiency-b32-h32x32", "throughput-vs-batch",
                                            "throughput-vs-width", "gantt"}));
  EXPECT_THAT(slurp(dir_ / "report" / "report.md"), HasSubstr("not drawn"));
}

TEST_F(Report, AnEarlierReportIsReplacedOnlyWithOverwrite) {
  const fs::path results = dir_ / "one", out = dir_ / "report";
  fs::create_directories(results);
  fs::copy_file(kFixture / "b64-h48x48" / "mpi-data-w2.json", results / "mpi-data-w2.json");
  fs::create_directories(out);
  std::ofstream(out / "mine.txt") << "keep";
  Output r = run("report " + results.string() + " -o " + out.string());
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.err, HasSubstr(out.string()));
  EXPECT_TRUE(fs::exists(out / "mine.txt"));
  r = run("report " + results.string() + " -o " + out.string() + " --overwrite");
  ASSERT_EQ(r.status, 0) << r.all();
  EXPECT_FALSE(fs::exists(out / "mine.txt"));
  EXPECT_TRUE(fs::exists(out / "report.html"));
}

TEST_F(Report, WithAProfileEveryRunIsPredictedBesideItsMeasurement) {
  // Call P3's 2-GPU grid and its profile (docs/results/2026-11-27-plan-validation-7.md): the
  // report gains the comparison `nnpar plan --compare-results` prints, as a table and a figure.
  const fs::path source = NNPAR_SOURCE_DIR;
  const fs::path grid = dir_ / "grid";
  fs::copy(source / "docs" / "results" / "raw" / "device-2026-11-27i" / "callP3" / "grid", grid,
           fs::copy_options::recursive);
  const Output r = run("report " + grid.string() + " -o " + (dir_ / "report").string() + " --profile " +
                       (source / "profiles" / "h200x2-coresidence.json").string());
  ASSERT_EQ(r.status, 0) << r.all();
  const auto manifest = nlohmann::json::parse(slurp(dir_ / "report" / "manifest.json"));
  EXPECT_EQ(manifest["tables"]["predictions"], 20);
  bool drawn = false;
  for (auto& f : manifest["figures"]) {
    if (f["id"] != "predicted-vs-measured") continue;
    drawn = true;
    EXPECT_EQ(f["series"].size(), 20u);
    for (auto& point : f["series"]) {
      const double ratio = point["predicted"].get<double>() / point["measured"].get<double>();
      EXPECT_GT(ratio, 0.85) << point;
      EXPECT_LT(ratio, 1.15) << point;
    }
    expect_png(dir_ / "report" / f["png"].get<std::string>());
  }
  EXPECT_TRUE(drawn);
  const std::string md = slurp(dir_ / "report" / "report.md");
  EXPECT_THAT(md, HasSubstr("## Predicted beside measured"));
  EXPECT_THAT(md, HasSubstr("20 runs predicted with the profile"));
  EXPECT_THAT(md, HasSubstr("20 within 15%"));
  EXPECT_THAT(slurp(dir_ / "report" / "report.html"), HasSubstr("<h2>Predicted beside measured</h2>"));
}

TEST_F(Report, AFolderWithoutResultsIsAnErrorNamingIt) {
  fs::create_directories(dir_ / "junk");
  std::ofstream(dir_ / "junk" / "notes.json") << "{\"hello\": 1}";
  const Output r = run("report " + (dir_ / "junk").string() + " -o " + (dir_ / "report").string());
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.err, HasSubstr((dir_ / "junk").string()));
  EXPECT_FALSE(fs::exists(dir_ / "report"));
}

// These need no python: nnpar checks the folder first.
class ReportArguments : public CliTest {};

TEST_F(ReportArguments, AMissingOrEmptyResultsFolderIsAnErrorNamingIt) {
  Output r = run("report " + (dir_ / "nowhere").string());
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.err, HasSubstr((dir_ / "nowhere").string()));
  fs::create_directories(dir_ / "empty");
  r = run("report " + (dir_ / "empty").string());
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.err, HasSubstr("no results"));
  EXPECT_THAT(r.err, HasSubstr((dir_ / "empty").string()));
  const fs::path file = write("file.json", "{}");
  r = run("report " + file.string());
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.err, HasSubstr("not a folder"));
}

TEST_F(ReportArguments, AProfileThatCannotBeReadIsAnErrorNamingItAndWritesNothing) {
  const fs::path results = dir_ / "one";
  fs::create_directories(results);
  fs::copy_file(kFixture / "b32-h32x32" / "serial.json", results / "serial.json");
  Output r = run("report " + results.string() + " -o " + (dir_ / "report").string() + " --profile " +
                 (dir_ / "nowhere.json").string());
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.err, HasSubstr((dir_ / "nowhere.json").string()));
  EXPECT_FALSE(fs::exists(dir_ / "report"));
  const fs::path bad = write("bad.json", "{\"schema\": \"nnpar-profile/1\", \"cpu\": 3}");
  r = run("report " + results.string() + " -o " + (dir_ / "report").string() + " --profile " + bad.string());
  EXPECT_EQ(r.status, 2);
  EXPECT_THAT(r.err, HasSubstr("cpu"));
  EXPECT_FALSE(fs::exists(dir_ / "report"));
}

}  // namespace
