#include "rank_watchdog.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include "nnpar/comm_mpi.hpp"

namespace nnpar {
namespace fs = std::filesystem;

namespace {

constexpr auto kBeat = std::chrono::milliseconds(250);

// The peer's counter, or -1 when its file cannot be read (not there yet, or not visible).
std::int64_t read_counter(const fs::path& file) {
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  std::int64_t value = -1;
  if (::pread(fd, &value, sizeof value, 0) != sizeof value) value = -1;
  ::close(fd);
  return value;
}

// Jobs ended by the launcher (SIGKILL) leave their heartbeat folders behind. A folder whose
// files have not been written for an hour belongs to no running job: every live rank writes
// its file four times a second.
void remove_abandoned_folders(const fs::path& temp) {
  std::error_code ec;
  const auto cutoff = fs::file_time_type::clock::now() - std::chrono::hours(1);
  for (const auto& entry : fs::directory_iterator(temp, ec)) {
    if (!entry.path().filename().string().starts_with("nnpar-heartbeat-")) continue;
    bool abandoned = true;
    for (const auto& file : fs::directory_iterator(entry.path(), ec))
      if (fs::last_write_time(file.path(), ec) > cutoff) abandoned = false;
    if (abandoned && fs::last_write_time(entry.path(), ec) <= cutoff) fs::remove_all(entry.path(), ec);
  }
}

// When the launcher ends the job (SIGTERM before SIGKILL) the heartbeat files of every rank,
// the lost one's included, are removed from the signal handler. The paths are laid out in
// advance: a handler may only call async-signal-safe functions such as unlink and rmdir.
constexpr int kMaxCleanupRanks = 1024;
char g_cleanup_files[kMaxCleanupRanks][512];
char g_cleanup_folder[512];
int g_cleanup_count = 0;

void clean_up_and_die(int sig) {
  for (int i = 0; i < g_cleanup_count; ++i) ::unlink(g_cleanup_files[i]);
  ::rmdir(g_cleanup_folder);
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

void remove_on_sigterm(const fs::path& folder, int size) {
  if (size > kMaxCleanupRanks || folder.string().size() + 32 > sizeof g_cleanup_folder) return;
  std::snprintf(g_cleanup_folder, sizeof g_cleanup_folder, "%s", folder.c_str());
  for (int r = 0; r < size; ++r)
    std::snprintf(g_cleanup_files[r], sizeof g_cleanup_files[r], "%s/rank-%d", folder.c_str(), r);
  g_cleanup_count = size;
  std::signal(SIGTERM, clean_up_and_die);
}

}  // namespace

RankWatchdog::RankWatchdog(int rank, int size, double timeout_seconds, const std::string& job_key)
    : rank_(rank), size_(size), timeout_(timeout_seconds) {
  if (timeout_ <= 0 || size_ < 2) return;
  folder_ = fs::temp_directory_path() / ("nnpar-heartbeat-" + job_key);
  std::error_code ec;
  if (rank_ == 0) remove_abandoned_folders(folder_.parent_path());
  fs::create_directories(folder_, ec);
  const fs::path own = folder_ / ("rank-" + std::to_string(rank_));
  fd_ = ::open(own.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) {
    // Without a heartbeat file the peers cannot see us, which only means they never blame us.
    std::fprintf(stderr, "nnpar: [rank %d] warning: no heartbeat file in %s (%s); lost-rank detection is off\n",
                 rank_, folder_.c_str(), std::strerror(errno));
    return;
  }
  remove_on_sigterm(folder_, size_);
  thread_ = std::thread([this] { run(); });
}

RankWatchdog::~RankWatchdog() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (fd_ >= 0) {
    std::signal(SIGTERM, SIG_DFL);
    ::close(fd_);
    std::error_code ec;
    fs::remove(folder_ / ("rank-" + std::to_string(rank_)), ec);
    fs::remove(folder_, ec);  // fails while another rank's file is still there, as it should
  }
}

void RankWatchdog::run() {
  using clock = std::chrono::steady_clock;
  std::int64_t beat = 0;
  struct Peer {
    std::int64_t counter = -1;
    clock::time_point changed;
  };
  std::vector<Peer> peers(static_cast<std::size_t>(size_));
  const auto timeout = std::chrono::duration<double>(timeout_);
  for (;;) {
    ++beat;
    if (::pwrite(fd_, &beat, sizeof beat, 0) != sizeof beat) {
      // A full or vanished temp folder: stop beating rather than report a false loss later.
      return;
    }
    const auto now = clock::now();
    for (int r = 0; r < size_; ++r) {
      if (r == rank_) continue;
      Peer& p = peers[std::size_t(r)];
      const std::int64_t counter = read_counter(folder_ / ("rank-" + std::to_string(r)));
      if (counter < 0) continue;  // not seen (yet): never blamed
      if (counter != p.counter) {
        p.counter = counter;
        p.changed = now;
        continue;
      }
      const double silent = std::chrono::duration<double>(now - p.changed).count();
      if (now - p.changed > timeout) {
        std::fprintf(stderr,
                     "nnpar: [rank %d of %d] rank %d is lost: no heartbeat from it for %.1f s ([mpi] rank_timeout = "
                     "%g s); it was killed, stopped or hangs outside nnpar's control; ending the job\n",
                     rank_, size_, r, silent, timeout_);
        std::fflush(stderr);
        std::error_code ec;
        fs::remove_all(folder_, ec);  // the lost rank will not clean up after itself
        // MPI is not ours to call from this thread (FUNNELED); a non-zero exit makes the
        // launcher end every other rank.
        std::_Exit(2);
      }
    }
    std::unique_lock lock(mutex_);
    if (wake_.wait_for(lock, kBeat, [this] { return stop_; })) return;
  }
}

namespace {
int g_fault_before_finalize = 0;  // the signal to raise before MPI_Finalize; 0: none
}

void start_injected_rank_fault(int rank) {
  const char* spec = std::getenv("NNPAR_FAULT_RANK_SIGNAL");
  if (spec == nullptr) return;
  int target = -1;
  char name[8] = {}, when[16] = {};
  if (std::sscanf(spec, "%d:%7[A-Z]:%15s", &target, name, when) != 3 || target != rank) return;
  const int sig = std::string_view(name) == "STOP" ? SIGSTOP : SIGKILL;
  if (std::string_view(when) == "finalize") {
    g_fault_before_finalize = sig;
    return;
  }
  const double seconds = std::atof(when);
  std::thread([sig, seconds] {
    std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
    std::raise(sig);
  }).detach();
}

void raise_injected_fault_before_finalize() {
  if (g_fault_before_finalize != 0) std::raise(g_fault_before_finalize);
}

std::string mpi_job_key() {
  // Rank 0's pid and clock, the same on every rank: collective, on the main thread.
  std::int64_t key = std::int64_t(::getpid()) ^
                     (std::chrono::steady_clock::now().time_since_epoch().count() << 20);
  mpi::world()->broadcast(&key, 1, DataType::i64, 0);
  char text[32];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(key));
  return text;
}

std::string describe_exit_status(int status) {
  std::string text = "status " + std::to_string(status);
  // Shells and mpirun report a process ended by signal N as 128 + N.
  if (status > 128 && status < 128 + 65) {
    const int sig = status - 128;
    const char* name = sigabbrev_np(sig);
    text += " (signal " + std::to_string(sig) + (name ? ", SIG" + std::string(name) : std::string()) + ")";
  }
  return text;
}

}  // namespace nnpar
