#include "progress.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>

namespace nnpar {

namespace {

using Clock = std::chrono::steady_clock;

double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::string duration_text(double seconds) {
  char buf[32];
  if (seconds < 60) std::snprintf(buf, sizeof buf, "%.1fs", seconds);
  else if (seconds < 3600) std::snprintf(buf, sizeof buf, "%dm%02ds", int(seconds) / 60, int(seconds) % 60);
  else std::snprintf(buf, sizeof buf, "%dh%02dm", int(seconds) / 3600, int(seconds) / 60 % 60);
  return buf;
}

int terminal_width() {
  winsize w{};
  if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &w) == 0 && w.ws_col > 20) return w.ws_col;
  return 100;
}

void write_all(int fd, const std::string& text) {
  const char* p = text.data();
  std::size_t left = text.size();
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n <= 0) return;  // nowhere to report a broken stdout
    p += n;
    left -= std::size_t(n);
  }
}

}  // namespace

struct Progress::Bar {
  std::string label;
  int epochs = 0, done = 0;
  Clock::time_point run_start, epoch_start;
  double last_epoch_wall = 0;  // between the last two callbacks: training plus evaluation
  std::string last;            // the last epoch's figures
  bool active = false;
};

nlohmann::json epoch_json(const RunResult& run, const EpochRecord& r, int epochs) {
  auto number = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(); };
  const double per_epoch = r.epoch > 0 ? r.elapsed_seconds / r.epoch : 0;
  return {{"event", "epoch"}, {"label", run.label}, {"epoch", r.epoch}, {"epochs", epochs},
          {"loss", number(r.loss)}, {"train_accuracy", r.train_accuracy}, {"test_accuracy", number(r.test_accuracy)},
          {"samples_per_second", r.samples_per_second}, {"seconds", r.seconds},
          {"elapsed_seconds", r.elapsed_seconds}, {"eta_seconds", per_epoch * (epochs - r.epoch)},
          {"samples", r.samples}, {"steps", r.steps}};
}

Progress::Progress(OutputMode mode, const std::string& style, bool under_mpi_launcher)
    : mode_(mode), bar_(std::make_unique<Bar>()) {
  if (mode_ == OutputMode::json) {
    std::fflush(stdout);
    json_fd_ = ::dup(STDOUT_FILENO);
    ::dup2(STDERR_FILENO, STDOUT_FILENO);
  }
  const char* term = std::getenv("TERM");
  const bool terminal = ::isatty(STDOUT_FILENO) == 1 && (term == nullptr || std::string(term) != "dumb");
  const bool wanted = style == "bar" || (style.empty() && !under_mpi_launcher);
  tty_ = mode_ == OutputMode::automatic && terminal && wanted;
}

Progress::~Progress() { stop_ticker(); }

void Progress::json_line(const nlohmann::json& j) {
  if (mode_ != OutputMode::json) return;
  write_all(json_fd_, j.dump() + "\n");
}

Progress::RealStdout::RealStdout(Progress& p) : progress_(p) {
  if (p.json_fd_ < 0) return;
  std::fflush(stdout);
  ::dup2(p.json_fd_, STDOUT_FILENO);
}

Progress::RealStdout::~RealStdout() {
  if (progress_.json_fd_ < 0) return;
  std::fflush(stdout);
  ::dup2(STDERR_FILENO, STDOUT_FILENO);
}

EpochCallback Progress::for_run(const std::string& label, int epochs, bool lead) {
  if (!lead || mode_ == OutputMode::quiet) return {};
  if (tty_) {
    stop_ticker();
    std::lock_guard lock(mutex_);
    *bar_ = Bar{};
    bar_->label = label;
    bar_->epochs = epochs;
    bar_->run_start = bar_->epoch_start = Clock::now();
    bar_->active = epochs > 0;
    stopping_ = false;
    if (bar_->active) {
      draw_locked();
      ticker_ = std::thread([this] {
        std::unique_lock lock(mutex_);
        while (!stopping_) {
          wake_.wait_for(lock, std::chrono::milliseconds(250));
          if (!stopping_ && bar_->active) draw_locked();
        }
      });
    }
  }
  return [this, epochs](const RunResult& run, const EpochRecord& record) { epoch_done(run, record, epochs); };
}

void Progress::epoch_done(const RunResult& run, const EpochRecord& record, int epochs) {
  if (mode_ == OutputMode::json) {
    json_line(epoch_json(run, record, epochs));
    return;
  }
  const std::string line = format_epoch_line(run, record, epochs);
  if (!tty_) {
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
    return;
  }
  {
    std::lock_guard lock(mutex_);
    Bar& b = *bar_;
    std::fputs("\r\033[K", stdout);
    std::printf("%s\n", line.c_str());
    b.done = record.epoch;
    b.last_epoch_wall = since(b.epoch_start);
    b.epoch_start = Clock::now();
    char last[160];
    char test[24] = "-";
    if (!std::isnan(record.test_accuracy)) std::snprintf(test, sizeof test, "%.2f%%", 100 * record.test_accuracy);
    std::snprintf(last, sizeof last, "loss %.4f  train %.2f%%  test %s  %.0f samples/s", record.loss,
                  100 * record.train_accuracy, test, record.samples_per_second);
    b.last = last;
    b.active = b.done < b.epochs;
    if (b.active) draw_locked();
    std::fflush(stdout);
  }
  if (record.epoch >= epochs) stop_ticker();
}

void Progress::draw_locked() {
  const Bar& b = *bar_;
  const double elapsed = since(b.epoch_start);
  const double run_elapsed = since(b.run_start);
  std::string share, eta;
  double fraction = -1;
  if (b.done > 0) {
    // Epochs take about as long as the previous one: the estimate is that, capped below 100%.
    const double mean = run_elapsed > elapsed ? (run_elapsed - elapsed) / b.done : b.last_epoch_wall;
    fraction = std::min(0.99, mean > 0 ? elapsed / mean : 0.0);
    const double remaining = std::max(0.0, mean * (b.epochs - b.done) - elapsed);
    char buf[16];
    std::snprintf(buf, sizeof buf, "~%3.0f%%", 100 * fraction);
    share = buf;
    eta = "  ETA " + duration_text(remaining);
  }
  constexpr int kWidth = 24;
  std::string bar(kWidth, ' ');
  if (fraction >= 0) {
    const int filled = int(fraction * kWidth);
    for (int i = 0; i < filled; ++i) bar[i] = '=';
    if (filled < kWidth) bar[filled] = '>';
  } else {
    bar[int(run_elapsed * 4) % kWidth] = '*';  // no estimate before the first epoch ends
  }
  char head[128];
  std::snprintf(head, sizeof head, "[%s] epoch %d/%d [", b.label.c_str(), b.done + 1, b.epochs);
  std::string line = head + bar + "] " + share + " " + duration_text(elapsed) + eta;
  if (!b.last.empty()) line += "  | " + b.last;
  const std::size_t width = std::size_t(terminal_width() - 1);
  if (line.size() > width) line.resize(width);
  std::fputs(("\r\033[K" + line).c_str(), stdout);
  std::fflush(stdout);
}

void Progress::stop_ticker() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    if (bar_ && bar_->active) {
      std::fputs("\r\033[K", stdout);
      std::fflush(stdout);
    }
    if (bar_) bar_->active = false;
  }
  wake_.notify_all();
  if (ticker_.joinable()) ticker_.join();
}

void Progress::end_run() { stop_ticker(); }

void Progress::replay(const RunResult& run, int epochs) {
  if (mode_ != OutputMode::json) return;
  for (auto& e : run.epochs) json_line(epoch_json(run, e, epochs));
}

}  // namespace nnpar
