// What a command prints while it trains, on rank 0 only:
//   terminal (stdout a TTY): a live bar for the epoch in progress (elapsed, estimated share of
//     the epoch done, ETA for the run, the last epoch's loss, accuracy and samples/s) above
//     the permanent per-epoch lines;
//   otherwise: the per-epoch lines alone (format_epoch_line; tests and CI logs parse them);
//   --quiet: nothing per epoch;
//   --json: one JSON object per line on stdout ({"event": "epoch", ...}); every other message
//     goes to stderr, so stdout stays machine-readable.
// The plugin interface reports once per epoch, so within an epoch the bar estimates progress
// from the previous epochs' durations (marked "~"); the first epoch shows elapsed time only.
#pragma once
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <nlohmann/json.hpp>

#include "runner.hpp"

namespace nnpar {

enum class OutputMode { automatic, quiet, json };

class Progress {
 public:
  // In json mode, fd 1 becomes a copy of stderr from here on; JSON lines go to the real stdout.
  // The bar needs stdout to be a terminal and style "bar", or style "" (automatic) outside an
  // MPI launcher: OpenMPI gives rank 0 a pseudo-terminal even when mpirun's output goes to a
  // file, so a rank draws the bar only when the nnpar that started it says so (child_run).
  explicit Progress(OutputMode mode, const std::string& style = "", bool under_mpi_launcher = false);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  OutputMode mode() const { return mode_; }
  // "bar" or "plain": what a child nnpar started by this one should show (--progress-style).
  const char* child_style() const { return tty_ ? "bar" : "plain"; }
  // The per-epoch callback for run_strategy, made just before the run starts. Only the lead
  // (rank 0) prints; the bar stops after the last epoch or at end_run().
  EpochCallback for_run(const std::string& label, int epochs, bool lead = true);
  void end_run();
  // Epoch lines for a run made elsewhere whose lines were not shown live (JSON mode only).
  void replay(const RunResult& run, int epochs);
  // One JSON object as a line on the real stdout (json mode; ignored otherwise).
  void json_line(const nlohmann::json& j);

  // While alive, fd 1 is the real stdout: for a child nnpar started with --json, whose
  // lines must reach stdout too.
  class RealStdout {
   public:
    explicit RealStdout(Progress& p);
    ~RealStdout();
   private:
    Progress& progress_;
  };

 private:
  void epoch_done(const RunResult& run, const EpochRecord& record, int epochs);
  void draw_locked();
  void stop_ticker();

  OutputMode mode_;
  bool tty_ = false;
  int json_fd_ = -1;  // the real stdout in json mode

  struct Bar;
  std::unique_ptr<Bar> bar_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::thread ticker_;
  bool stopping_ = false;
};

nlohmann::json epoch_json(const RunResult& run, const EpochRecord& record, int epochs);

}  // namespace nnpar
