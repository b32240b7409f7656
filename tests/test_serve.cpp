// nnpar serve: the drawing preprocessing against fixtures made by the dataset generator's
// own code, the JSON API over loopback, the subcommand as a user starts it, and the page in
// headless Chromium drawing letters for a model trained here.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <httplib.h>
#include <png.h>

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>
#include <regex>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "config.hpp"
#include "drawing.hpp"
#include "letters_fixture.hpp"
#include "runner.hpp"
#include "serve.hpp"
#include "nnpar/safetensors.hpp"

namespace fs = std::filesystem;
using nlohmann::json;
using testing::HasSubstr;
using namespace nnpar;

namespace {

const fs::path kFixtures = fs::path(NNPAR_TEST_FIXTURES) / "serve";
const fs::path kNnpar = fs::path(NNPAR_BIN_DIR) / "nnpar";
const std::vector<std::string> kFixtureNames = {"pad-L", "pad-O", "pad-T-palette", "wide-dash", "small-v-alpha", "dark-a"};

std::string read_bytes(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

LetterImage read_pgm(const fs::path& file) {
  std::ifstream in(file);
  std::string magic;
  int w = 0, h = 0, maxval = 0;
  in >> magic >> w >> h >> maxval;
  EXPECT_EQ(magic, "P2");
  EXPECT_EQ(w, kLetterSide);
  EXPECT_EQ(h, kLetterSide);
  LetterImage out{};
  for (auto& v : out) {
    int x = 0;
    in >> x;
    v = std::uint8_t(x);
  }
  EXPECT_TRUE(in) << file;
  return out;
}

std::string ascii_art(const LetterImage& a) {
  std::string s;
  for (int y = 0; y < kLetterSide; ++y, s += '\n')
    for (int x = 0; x < kLetterSide; ++x) s += " .:*#"[std::min(4, a[y * kLetterSide + x] / 52)];
  return s;
}

// PNG bytes of `pixels` in libpng's simplified `format` (PNG_FORMAT_GRAY, _GA, _RGB, _RGBA).
std::string png_bytes(int w, int h, png_uint_32 format, const std::vector<std::uint8_t>& pixels) {
  png_image image{};
  image.version = PNG_IMAGE_VERSION;
  image.width = png_uint_32(w);
  image.height = png_uint_32(h);
  image.format = format;
  png_alloc_size_t size = 0;
  EXPECT_TRUE(png_image_write_get_memory_size(image, size, 0, pixels.data(), 0, nullptr)) << image.message;
  std::string out(size, '\0');
  EXPECT_TRUE(png_image_write_to_memory(&image, out.data(), &size, 0, pixels.data(), 0, nullptr)) << image.message;
  out.resize(size);
  return out;
}

fs::path test_dir() {
  const fs::path dir = fs::path(NNPAR_TEST_BINARY_DIR) / "serve" /
                       ::testing::UnitTest::GetInstance()->current_test_info()->name();
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// An untrained model: enough for everything but reading letters.
fs::path random_checkpoint(const fs::path& dir) {
  ModelSpec spec;
  spec.layer_sizes = {784, 32, 26};
  std::vector<float> params(parameter_count(spec));
  initialize_parameters(spec, params);
  const fs::path file = dir / "random.safetensors";
  save_checkpoint(file, spec, params);
  return file;
}

// A model that reads clearly drawn letters: 3 serial epochs over the whole training set
// (about 6 s on one core). The tests of one build share it: the first to get the lock
// trains it, the others wait and load it.
fs::path trained_checkpoint() {
  const fs::path dir = fs::path(NNPAR_TEST_BINARY_DIR) / "serve";
  fs::create_directories(dir);
  const fs::path file = dir / "letters-784-128-26-e3.safetensors";
  const int lock = ::open((dir / "letters-model.lock").c_str(), O_CREAT | O_RDWR, 0644);
  ::flock(lock, LOCK_EX);
  if (!fs::exists(file)) {
    RunConfig config = test_support::letters_config(0, 2000, {784, 128, 26}, 32);
    config.train.epochs = 3;
    config.train.sgd.lr = 0.3f;
    PluginRegistry plugins{{NNPAR_PLUGIN_DIR}};
    const Datasets data = load_datasets(config.data);
    const RunResult run = run_strategy(config, test_support::strategy_entry("serial"), plugins, data,
                                       initial_parameters(config));
    EXPECT_GT(run.final_test.accuracy, 0.6) << "the model the serve tests use learned too little";
    save_checkpoint(file, config.model, run.final_parameters);  // atomic: temporary file, then rename
  }
  ::flock(lock, LOCK_UN);
  ::close(lock);
  return file;
}

// A LetterServer on a free loopback port, answering from a thread of this process.
class RunningServer {
 public:
  explicit RunningServer(ServeOptions options) : server_(with_free_port(std::move(options))) {
    port_ = server_.bind();
    thread_ = std::thread([this] { server_.serve(); });
    httplib::Client c = client();
    for (int i = 0; i < 500 && !c.Get("/api/status"); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ~RunningServer() {
    server_.stop();
    thread_.join();
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(30);
    return c;
  }
  LetterServer& server() { return server_; }

 private:
  static ServeOptions with_free_port(ServeOptions o) {
    o.port = 0;
    o.quiet = true;
    return o;
  }
  LetterServer server_;
  int port_ = 0;
  std::thread thread_;
};

ServeOptions checkpoint_options(const fs::path& checkpoint) {
  ServeOptions o;
  o.checkpoint = checkpoint;
  return o;
}

json parse(const httplib::Result& r) {
  EXPECT_TRUE(r) << "no answer: " << httplib::to_string(r.error());
  if (!r) return {};
  return json::parse(r->body, nullptr, /*allow_exceptions=*/false);
}

std::string png_of(const std::string& name) { return read_bytes(kFixtures / (name + ".png")); }

json predict_png(httplib::Client& c, const std::string& png) {
  auto r = c.Post("/api/predict", png, "image/png");
  EXPECT_TRUE(r && r->status == 200) << (r ? r->body : httplib::to_string(r.error()));
  return parse(r);
}

LetterImage input_of(const json& answer) {
  LetterImage out{};
  for (int y = 0; y < kLetterSide; ++y)
    for (int x = 0; x < kLetterSide; ++x) out[y * kLetterSide + x] = answer["input"][y][x].get<std::uint8_t>();
  return out;
}

// ---------------------------------------------------------------- preprocessing

TEST(Drawing, FixturesMatchTheDatasetGeneratorPixelForPixel) {
  // The expectations are tools/make_letters.py's to_28x28 on the same ink
  // (tests/fixtures/serve/make_fixtures.py), so a drawing reaches the model as a training
  // letter did.
  for (const std::string& name : kFixtureNames) {
    SCOPED_TRACE(name);
    const LetterImage expected = read_pgm(kFixtures / (name + ".expected.pgm"));
    const LetterImage got = letter_image(ink_from_png(png_of(name)));
    int max_diff = 0;
    for (std::size_t i = 0; i < got.size(); ++i) max_diff = std::max(max_diff, std::abs(int(got[i]) - int(expected[i])));
    EXPECT_EQ(max_diff, 0) << "expected:\n" << ascii_art(expected) << "got:\n" << ascii_art(got);
  }
}

TEST(Drawing, ReduceBoxRoundsLikePillow) {
  // 4x3 with factor 3: one full 3x3 block and a 1x3 column left over.
  InkImage in(4, 3);
  const std::uint8_t values[] = {10, 10, 10, 7,  //
                                 10, 6, 10, 8,   //
                                 10, 10, 10, 9};
  std::copy(std::begin(values), std::end(values), in.pixels.begin());
  const InkImage out = reduce_box(in, 3);
  ASSERT_EQ(out.width, 2);
  ASSERT_EQ(out.height, 1);
  // 86/9 = 9.56, but Pillow's reciprocal multiply gives 9: the generator's images have it.
  EXPECT_EQ(out.at(0, 0), 9);
  EXPECT_EQ(out.at(1, 0), 8);  // the partial block averages only its own 3 pixels
}

TEST(Drawing, LanczosKeepsConstantsAndSizes) {
  InkImage flat(50, 30);
  std::fill(flat.pixels.begin(), flat.pixels.end(), 200);
  for (auto [w, h] : {std::pair{13, 7}, {20, 20}, {120, 90}, {50, 30}}) {
    const InkImage r = resize_lanczos(flat, w, h);
    ASSERT_EQ(r.width, w);
    ASSERT_EQ(r.height, h);
    EXPECT_TRUE(std::all_of(r.pixels.begin(), r.pixels.end(), [](auto v) { return v == 200; })) << w << "x" << h;
  }
  InkImage ramp(9, 1);
  for (int x = 0; x < 9; ++x) ramp.at(x, 0) = std::uint8_t(x * 30);
  EXPECT_EQ(resize_lanczos(ramp, 9, 1).pixels, ramp.pixels);  // same size: untouched
}

TEST(Drawing, FitsTheInkInto20AndCentresItByMass) {
  // A solid 40x80 bar anywhere on a 300x200 page becomes 10x20, centred, ink peak 255.
  InkImage page(300, 200);
  for (int y = 100; y < 180; ++y)
    for (int x = 230; x < 270; ++x) page.at(x, y) = 255;
  const LetterImage out = letter_image(page);
  int x0 = 99, x1 = -1, y0 = 99, y1 = -1;
  double mass = 0, mx = 0, my = 0;
  for (int y = 0; y < kLetterSide; ++y)
    for (int x = 0; x < kLetterSide; ++x)
      if (const int v = out[y * kLetterSide + x]; v > 0) {
        x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
        mass += v, mx += v * x, my += v * y;
      }
  EXPECT_EQ(y1 - y0 + 1, 20);
  EXPECT_EQ(x1 - x0 + 1, 10);
  EXPECT_NEAR(mx / mass, 13.5, 0.5);
  EXPECT_NEAR(my / mass, 13.5, 0.5);
  EXPECT_EQ(*std::max_element(out.begin(), out.end()), 255);
}

TEST(Drawing, InkIsTheSameWhateverThePolarity) {
  // One stroke as dark ink on white (the page), light ink on black (the dataset) and an
  // alpha-only layer: the same ink, so the same letter.
  const int w = 60, h = 50;
  std::vector<std::uint8_t> ink(w * h, 0);
  for (int y = 10; y < 40; ++y)
    for (int x = 20 + y / 4; x < 26 + y / 4; ++x) ink[y * w + x] = std::uint8_t(120 + 4 * y);
  std::vector<std::uint8_t> on_white(ink.size()), ga(ink.size() * 2);
  for (std::size_t i = 0; i < ink.size(); ++i) {
    on_white[i] = std::uint8_t(255 - ink[i]);
    ga[2 * i] = 90;  // any stroke colour: only alpha counts on a transparent layer
    ga[2 * i + 1] = ink[i];
  }
  const InkImage a = ink_from_png(png_bytes(w, h, PNG_FORMAT_GRAY, on_white));
  const InkImage b = ink_from_png(png_bytes(w, h, PNG_FORMAT_GRAY, ink));
  const InkImage c = ink_from_png(png_bytes(w, h, PNG_FORMAT_GA, ga));
  EXPECT_EQ(a.pixels, ink);
  EXPECT_EQ(b.pixels, ink);
  EXPECT_EQ(c.pixels, ink);
}

TEST(Drawing, EmptyOrFaintDrawingsAreRefused) {
  InkImage faint(40, 40);
  std::fill(faint.pixels.begin(), faint.pixels.end(), std::uint8_t(kInkThreshold));
  EXPECT_THROW(letter_image(faint), ImageError);
  try {
    letter_image(InkImage(10, 10));
    FAIL() << "an empty drawing was accepted";
  } catch (const ImageError& e) {
    EXPECT_THAT(e.what(), HasSubstr("empty"));
  }
  faint.at(3, 4) = 255;  // one inked pixel is a (tiny) drawing
  EXPECT_NO_THROW(letter_image(faint));
}

TEST(Drawing, BrokenPngsAreRefusedWithAMessage) {
  auto message = [](const std::string& bytes) {
    try {
      ink_from_png(bytes);
    } catch (const ImageError& e) {
      return std::string(e.what());
    }
    return std::string("accepted");
  };
  EXPECT_THAT(message("hello"), HasSubstr("not a PNG"));
  EXPECT_THAT(message(""), HasSubstr("not a PNG"));
  const std::string good = png_of("pad-L");
  EXPECT_THAT(message(good.substr(0, 60)), HasSubstr("PNG"));
  EXPECT_NE(message(good.substr(0, 60)), "accepted");
  std::string corrupt = good;
  for (std::size_t i = 60; i < corrupt.size(); i += 7) corrupt[i] = char(corrupt[i] ^ 0x5a);
  EXPECT_NE(message(corrupt), "accepted");
  const std::string huge = png_bytes(kMaxPngSide + 1, 1, PNG_FORMAT_GRAY, std::vector<std::uint8_t>(kMaxPngSide + 1, 0));
  EXPECT_THAT(message(huge), HasSubstr("2049x1"));
  EXPECT_EQ(message(good), "accepted");
}

// ---------------------------------------------------------------- the API over loopback

TEST(Api, StatusDescribesTheModel) {
  const fs::path checkpoint = random_checkpoint(test_dir());
  RunningServer s(checkpoint_options(checkpoint));
  auto c = s.client();
  const json status = parse(c.Get("/api/status"));
  EXPECT_EQ(status["mode"], "checkpoint");
  EXPECT_EQ(status["model"]["layers"], json::array({784, 32, 26}));
  EXPECT_EQ(status["model"]["classes"].size(), 26u);
  EXPECT_EQ(status["model"]["classes"][11], "l");
  EXPECT_THAT(status["model"]["source"].get<std::string>(), HasSubstr("random.safetensors"));
  EXPECT_EQ(parse(c.Get("/api/training"))["state"], "off");
}

TEST(Api, ServesASelfContainedPage) {
  RunningServer s(checkpoint_options(random_checkpoint(test_dir())));
  auto c = s.client();
  auto r = c.Get("/");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_THAT(r->get_header_value("Content-Type"), HasSubstr("text/html"));
  EXPECT_THAT(r->body, HasSubstr("<canvas id=\"pad\""));
  EXPECT_THAT(r->body, HasSubstr("api/predict"));
  // Nothing from elsewhere: it must work on a machine without internet.
  EXPECT_THAT(r->body, testing::Not(HasSubstr("http://")));
  EXPECT_THAT(r->body, testing::Not(HasSubstr("https://")));
}

TEST(Api, PredictsFromAPngAndReturnsWhatTheModelSaw) {
  RunningServer s(checkpoint_options(random_checkpoint(test_dir())));
  auto c = s.client();
  const json answer = predict_png(c, png_of("pad-L"));
  ASSERT_EQ(answer["top"].size(), 5u);
  ASSERT_EQ(answer["probabilities"].size(), 26u);
  double sum = 0;
  for (double p : answer["probabilities"]) sum += p;
  EXPECT_NEAR(sum, 1.0, 1e-6);
  for (int i = 0; i < 5; ++i) {
    const json& t = answer["top"][i];
    EXPECT_DOUBLE_EQ(t["probability"].get<double>(), answer["probabilities"][t["class"].get<int>()].get<double>());
    EXPECT_EQ(t["letter"], std::string(1, char('a' + t["class"].get<int>())));
    if (i > 0) {
      EXPECT_LE(t["probability"].get<double>(), answer["top"][i - 1]["probability"].get<double>());
    }
  }
  EXPECT_EQ(input_of(answer), read_pgm(kFixtures / "pad-L.expected.pgm"));
  EXPECT_TRUE(answer["model"]["epoch"].is_null());
}

TEST(Api, Accepts28x28ArraysNestedOrFlat) {
  RunningServer s(checkpoint_options(random_checkpoint(test_dir())));
  auto c = s.client();
  std::mt19937 rng(7);
  json nested = json::array(), flat = json::array();
  for (int y = 0; y < kLetterSide; ++y) {
    json row = json::array();
    for (int x = 0; x < kLetterSide; ++x) {
      const int v = (x > 8 && x < 20 && y > 4 && y < 24) ? int(rng() % 256) : 0;
      row.push_back(v);
      flat.push_back(v);
    }
    nested.push_back(row);
  }
  const json a = parse(c.Post("/api/predict", json{{"pixels", nested}}.dump(), "application/json"));
  const json b = parse(c.Post("/api/predict", json{{"pixels", flat}}.dump(), "application/json"));
  EXPECT_EQ(a["input"], nested);  // used as given: already a 28x28 letter
  EXPECT_EQ(a["probabilities"], b["probabilities"]);
  // preprocess: true refits it like a drawing.
  const json p = parse(c.Post("/api/predict", json{{"pixels", nested}, {"preprocess", true}}.dump(), "application/json"));
  InkImage ink(kLetterSide, kLetterSide);
  for (int i = 0; i < kLetterSide * kLetterSide; ++i) ink.pixels[i] = flat[i].get<std::uint8_t>();
  EXPECT_EQ(input_of(p), letter_image(ink));
  // Fractional values are rounded.
  flat[300] = 99.6;
  const json f = parse(c.Post("/api/predict", json{{"pixels", flat}}.dump(), "application/json"));
  EXPECT_EQ(f["input"][300 / 28][300 % 28], 100);
}

TEST(Api, BadRequestsGet4xxWithAMessage) {
  ServeOptions o = checkpoint_options(random_checkpoint(test_dir()));
  o.max_body_bytes = 64 * 1024;
  RunningServer s(o);
  auto c = s.client();
  json rows27 = json::array(), short_row = json::array(), negative = json::array();
  for (int y = 0; y < 28; ++y) {
    json row = json::array();
    for (int x = 0; x < 28; ++x) row.push_back(0);
    if (y < 27) rows27.push_back(row);
    short_row.push_back(y == 3 ? json::array({1, 2}) : row);
    json neg = row;
    if (y == 5) neg[6] = -4;
    negative.push_back(neg);
  }
  struct Case {
    std::string type, body;
    int status;
    std::string says;
  };
  const std::vector<Case> cases = {
      {"application/json", "{\"pixels\": [1, 2, 3]}", 400, "has 3 values"},
      {"application/json", json{{"pixels", rows27}}.dump(), 400, "has 27 rows"},
      {"application/json", json{{"pixels", short_row}}.dump(), 400, "pixels[3]"},
      {"application/json", json{{"pixels", negative}}.dump(), 400, "pixels[5][6] must be a number in 0..255"},
      {"application/json", "{\"pixels\": \"abc\"}", 400, "must be an array"},
      {"application/json", "{\"pixel\": []}", 400, "unknown key \\\"pixel\\\""},
      {"application/json", "{\"pixels\": [[0]], \"preprocess\": 1}", 400, "true or false"},
      {"application/json", "{\"pixels\": [", 400, "not valid JSON"},
      {"application/json", "[1, 2]", 400, "JSON object"},
      {"image/png", "GIF89a....", 400, "not a PNG"},
      {"image/png", png_of("pad-L").substr(0, 100), 400, "PNG"},
      {"image/png", png_bytes(4, 4, PNG_FORMAT_GRAY, std::vector<std::uint8_t>(16, 0)), 400, "empty"},
      {"text/plain", "L", 415, "Content-Type"},
      {"image/png", std::string(100 * 1024, 'x'), 413, "at most 65536 bytes"},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.type + " " + k.body.substr(0, 40));
    auto r = c.Post("/api/predict", k.body, k.type.c_str());
    ASSERT_TRUE(r) << httplib::to_string(r.error());
    EXPECT_EQ(r->status, k.status) << r->body;
    EXPECT_THAT(r->get_header_value("Content-Type"), HasSubstr("application/json"));
    EXPECT_THAT(r->body, HasSubstr(k.says));
    EXPECT_TRUE(json::parse(r->body, nullptr, false).contains("error"));
  }
  // A 28x28 PNG without preprocessing is used as is; another size is refused.
  auto r = c.Post("/api/predict?preprocess=false", png_of("pad-L"), "image/png");
  EXPECT_EQ(r->status, 400);
  EXPECT_THAT(r->body, HasSubstr("280x280"));
  r = c.Post("/api/predict?preprocess=maybe", png_of("pad-L"), "image/png");
  EXPECT_EQ(r->status, 400);
  auto missing = c.Get("/api/nothing");
  EXPECT_EQ(missing->status, 404);
  EXPECT_THAT(missing->body, HasSubstr("GET /api/nothing"));
  EXPECT_EQ(c.Get("/api/status")->status, 200);  // still serving
}

TEST(Api, GarbageNeverBringsTheServerDown) {
  RunningServer s(checkpoint_options(random_checkpoint(test_dir())));
  auto c = s.client();
  std::mt19937 rng(12345);
  const std::string png = png_of("pad-O");
  for (int i = 0; i < 300; ++i) {
    std::string body;
    switch (i % 4) {
      case 0:  // random bytes
        body.resize(rng() % 3000);
        for (char& ch : body) ch = char(rng());
        break;
      case 1:  // a real PNG cut short
        body = png.substr(0, rng() % png.size());
        break;
      case 2:  // a real PNG with bytes flipped
        body = png;
        for (int k = 0; k < 5; ++k) body[8 + rng() % (body.size() - 8)] = char(rng());
        break;
      default: {  // JSON fragments
        const std::string doc = json{{"pixels", std::vector<int>(784, 255)}, {"preprocess", true}}.dump();
        body = doc.substr(0, rng() % doc.size());
      }
    }
    const char* type = (i % 4 == 3) ? "application/json" : "image/png";
    auto r = c.Post("/api/predict", body, type);
    ASSERT_TRUE(r) << "no answer to garbage #" << i << ": " << httplib::to_string(r.error());
    // A PNG cut after its image data, or with a flipped byte in a chunk libpng may skip,
    // can still be a whole image: then 200. Anything else must be the client's error.
    const bool may_be_an_image = i % 4 == 1 || i % 4 == 2;
    EXPECT_TRUE((r->status >= 400 && r->status < 500) || (may_be_an_image && r->status == 200))
        << "garbage #" << i << " got " << r->status << ": " << r->body;
    if (r->status != 200) {
      EXPECT_TRUE(json::parse(r->body, nullptr, false).contains("error")) << r->body;
    }
  }
  EXPECT_EQ(predict_png(c, png)["top"].size(), 5u);
}

// ---------------------------------------------------------------- with a trained model

TEST(Api, ReadsDrawnLettersWithATrainedModel) {
  if (!test_support::have_letters()) GTEST_SKIP() << "dataset not found in " << test_support::letters_dir();
  RunningServer s(checkpoint_options(trained_checkpoint()));
  auto c = s.client();
  for (auto [name, letter] : {std::pair{"pad-L", "l"}, {"pad-O", "o"}, {"pad-T-palette", "t"}}) {
    const json answer = predict_png(c, png_of(name));
    EXPECT_EQ(answer["top"][0]["letter"], letter) << name << ": " << answer["top"].dump();
  }
}

fs::path write_tiny_config(const fs::path& dir, int epochs, const std::string& strategy = "name = \"serial\"") {
  std::ofstream(dir / "tiny.toml") << "[data]\ndir = \"" << test_support::letters_dir().string()
                                   << "\"\nlimit = 2000\ntest_limit = 500\n"
                                   << "[model]\nlayers = [784, 32, 26]\n"
                                   << "[train]\nepochs = " << epochs << "\nbatch_size = 32\nlr = 0.5\n"
                                   << "[output]\nwrite_results = false\n"
                                   << "[[strategy]]\n" << strategy << "\n";
  return dir / "tiny.toml";
}

TEST(Api, TrainsInTheBackgroundAndAnswersWithEachEpochsModel) {
  if (!test_support::have_letters()) GTEST_SKIP() << "dataset not found in " << test_support::letters_dir();
  ServeOptions o;
  o.train_config = write_tiny_config(test_dir(), 4);
  RunningServer s(o);
  auto c = s.client();
  EXPECT_EQ(parse(c.Get("/api/status"))["mode"], "training");
  s.server().wait_for_training();
  const json t = parse(c.Get("/api/training"));
  EXPECT_EQ(t["state"], "finished") << t.dump();
  EXPECT_EQ(t["strategy"], "serial");
  EXPECT_EQ(t["epochs_total"], 4);
  ASSERT_EQ(t["epochs"].size(), 4u);
  for (int e = 0; e < 4; ++e) {
    EXPECT_EQ(t["epochs"][e]["epoch"], e + 1);
    EXPECT_TRUE(t["epochs"][e]["test_accuracy"].is_number()) << "every epoch is evaluated";
  }
  EXPECT_LT(t["epochs"][3]["loss"].get<double>(), t["epochs"][0]["loss"].get<double>());
  EXPECT_GT(t["epochs"][3]["test_accuracy"].get<double>(), 0.2);  // chance is 1/26
  const json answer = predict_png(c, png_of("pad-O"));
  EXPECT_EQ(answer["model"]["epoch"], 4);
  EXPECT_EQ(parse(c.Get("/api/status"))["model"]["epoch"], 4);
}

TEST(Api, StoppingEndsTheTrainingAfterItsEpoch) {
  if (!test_support::have_letters()) GTEST_SKIP() << "dataset not found in " << test_support::letters_dir();
  ServeOptions o;
  o.train_config = write_tiny_config(test_dir(), 100000);
  auto s = std::make_unique<RunningServer>(o);
  auto c = s->client();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (parse(c.Get("/api/training"))["epochs"].size() < 2 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const auto start = std::chrono::steady_clock::now();
  s->server().stop();
  s->server().wait_for_training();
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  s.reset();  // joins everything
}

TEST(Api, MultiRankStrategiesAreRefusedBeforeServing) {
  if (!test_support::have_letters()) GTEST_SKIP() << "dataset not found in " << test_support::letters_dir();
  ServeOptions o;
  o.train_config = write_tiny_config(test_dir(), 1, "name = \"mpi-data\"\nranks = 2");
  try {
    LetterServer server(o);
    FAIL() << "serve accepted a strategy that needs mpirun";
  } catch (const ConfigError& e) {
    EXPECT_THAT(e.what(), HasSubstr("mpi-data"));
    EXPECT_THAT(e.what(), HasSubstr("single-process"));
  }
}

// ---------------------------------------------------------------- the subcommand

struct Finished {
  int status = -1;
  std::string output;
};

Finished run_nnpar(const std::string& args) {
  const std::string command = "timeout 60 " + kNnpar.string() + " " + args + " 2>&1";
  Finished f;
  FILE* pipe = popen(command.c_str(), "r");
  char buffer[4096];
  while (std::size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) f.output.append(buffer, n);
  const int raw = pclose(pipe);
  f.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
  return f;
}

// `nnpar serve ARGS --port 0` running in the background; its port read from what it prints.
class ServeProcess {
 public:
  explicit ServeProcess(std::vector<std::string> args) {
    int out[2];
    if (::pipe(out) != 0) throw std::runtime_error("pipe failed");
    args.insert(args.begin(), {kNnpar.string(), "serve"});
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], 1);
      ::dup2(out[1], 2);
      ::close(out[0]);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(out[1]);
    fd_ = out[0];
    const std::regex address(R"(http://127\.0\.0\.1:(\d+)/)");
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      char buffer[1024];
      const ssize_t n = ::read(fd_, buffer, sizeof buffer);
      if (n <= 0) break;  // exited
      output_.append(buffer, std::size_t(n));
      std::smatch m;
      if (std::regex_search(output_, m, address)) {
        port_ = std::stoi(m[1]);
        return;
      }
    }
  }
  ~ServeProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
    if (fd_ >= 0) ::close(fd_);
  }
  int port() const { return port_; }
  const std::string& output() const { return output_; }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
  int port_ = -1;
  std::string output_;
};

TEST(ServeCommand, ABadCheckpointExits2NamingTheFile) {
  const fs::path dir = test_dir();
  const Finished missing = run_nnpar("serve --checkpoint " + (dir / "missing.safetensors").string() + " --port 0");
  EXPECT_EQ(missing.status, 2) << missing.output;
  EXPECT_THAT(missing.output, HasSubstr("missing.safetensors"));
  std::ofstream(dir / "garbage.safetensors") << "not a checkpoint";
  const Finished garbage = run_nnpar("serve --checkpoint " + (dir / "garbage.safetensors").string() + " --port 0");
  EXPECT_EQ(garbage.status, 2) << garbage.output;
  EXPECT_THAT(garbage.output, HasSubstr("garbage.safetensors"));
}

TEST(ServeCommand, NeedsACheckpointOrAConfig) {
  const Finished neither = run_nnpar("serve --port 0");
  EXPECT_EQ(neither.status, 2) << neither.output;
  EXPECT_THAT(neither.output, HasSubstr("--checkpoint"));
  const Finished both = run_nnpar("serve --checkpoint a.safetensors --train b.toml");
  EXPECT_EQ(both.status, 2) << both.output;
  const Finished strategy_alone = run_nnpar("serve --checkpoint a.safetensors --strategy serial");
  EXPECT_EQ(strategy_alone.status, 2) << strategy_alone.output;
}

TEST(ServeCommand, AnswersOverLoopbackAndRefusesATakenPort) {
  const fs::path checkpoint = random_checkpoint(test_dir());
  ServeProcess serve({"--checkpoint", checkpoint.string(), "--port", "0"});
  ASSERT_GT(serve.port(), 0) << serve.output();
  EXPECT_THAT(serve.output(), HasSubstr("layers 784-32-26"));
  httplib::Client c("127.0.0.1", serve.port());
  auto status = c.Get("/api/status");
  ASSERT_TRUE(status) << httplib::to_string(status.error());
  EXPECT_EQ(status->status, 200);
  EXPECT_THAT(c.Get("/")->body, HasSubstr("<canvas id=\"pad\""));  // the page embedded in the binary
  const Finished taken = run_nnpar("serve --checkpoint " + checkpoint.string() + " --port " + std::to_string(serve.port()));
  EXPECT_EQ(taken.status, 2) << taken.output;
  EXPECT_THAT(taken.output, HasSubstr("cannot listen on 127.0.0.1:" + std::to_string(serve.port())));
}

// ---------------------------------------------------------------- the page in a browser

std::string find_chromium() {
  for (const char* name : {"chromium", "chromium-browser", "google-chrome"})
    for (const char* dir : {"/usr/bin", "/usr/local/bin"})
      if (fs::exists(fs::path(dir) / name)) return (fs::path(dir) / name).string();
  return {};
}

TEST(Browser, DrawsLettersAndShowsTheTrainedModelsAnswer) {
  const std::string chromium = find_chromium();
  if (chromium.empty()) GTEST_SKIP() << "chromium is not installed (apt-get install chromium): no browser test";
  if (std::system("/usr/bin/python3 -c 'import websocket' 2>/dev/null") != 0)
    GTEST_SKIP() << "/usr/bin/python3 with the websocket module (apt-get install python3-websocket) is missing";
  if (!test_support::have_letters()) GTEST_SKIP() << "dataset not found in " << test_support::letters_dir();
  const fs::path out = fs::path(NNPAR_TEST_BINARY_DIR) / "serve";
  ServeProcess serve({"--checkpoint", trained_checkpoint().string(), "--port", "0"});
  ASSERT_GT(serve.port(), 0) << serve.output();

  const fs::path script = fs::path(NNPAR_SOURCE_DIR) / "tests" / "serve_browser.py";
  const std::string command = "timeout 60 /usr/bin/python3 " + script.string() + " --chromium " + chromium +
                              " --url http://127.0.0.1:" + std::to_string(serve.port()) + "/ --out " + out.string() +
                              " --letters L,O,T";
  const Finished run = [&] {
    Finished f;
    FILE* pipe = popen(command.c_str(), "r");  // stdout only: the JSON; messages go to the log
    char buffer[4096];
    while (std::size_t n = std::fread(buffer, 1, sizeof buffer, pipe)) f.output.append(buffer, n);
    const int raw = pclose(pipe);
    f.status = WIFEXITED(raw) ? WEXITSTATUS(raw) : -1;
    return f;
  }();
  ASSERT_EQ(run.status, 0) << command << "\n" << run.output;
  const json result = json::parse(run.output, nullptr, false);
  ASSERT_TRUE(result.contains("letters")) << run.output;
  // L drawn with the mouse, O with a pen, T with a finger (touch events).
  for (auto [drawn, read] : {std::pair{"L", "l"}, {"O", "o"}, {"T", "t"}}) {
    const json& shown = result["letters"][drawn];
    EXPECT_EQ(shown["top"], read) << "drew " << drawn << " by " << shown["device"] << "; the page shows " << shown.dump();
    EXPECT_EQ(shown["pointer"], shown["device"]) << "the page did not see the " << shown["device"] << " as such";
    EXPECT_EQ(shown["top5"].size(), 5u);
    EXPECT_EQ(shown["message"], "");
    EXPECT_GT(shown["seen_ink"].get<int>(), 0) << "the page did not show the 28x28 input";
    const fs::path screenshot = shown["screenshot"].get<std::string>();
    ASSERT_TRUE(fs::exists(screenshot));
    EXPECT_EQ(read_bytes(screenshot).substr(1, 3), "PNG");
    std::printf("screenshot: %s\n", screenshot.c_str());
  }
}

}  // namespace
