// Lost ranks in a multi-rank run. When a rank dies, OpenMPI's mpirun ends the whole job at
// once and names it ("process rank 1 ... exited on signal 9"). A rank that is alive but
// silent -- stopped (SIGSTOP), frozen, or on a node that vanished -- is not noticed by the
// launcher, and its peers would wait in a collective forever. The watchdog covers that:
// every rank runs a thread that bumps a heartbeat counter in a file every 250 ms and watches
// the counters of its peers; a peer whose counter stops for [mpi] rank_timeout seconds is
// presumed lost, and the watching rank prints a message naming it and exits with status 2,
// which makes the launcher end the job. The counters are compared with themselves, never
// with clocks, so nothing depends on clocks agreeing between processes; a peer whose file is
// not visible (another node, a node-local temp folder) is never blamed.
#pragma once
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>

namespace nnpar {

class RankWatchdog {
 public:
  // `job_key` must be the same on every rank of the job and differ between jobs; the
  // heartbeat files live in <temp>/nnpar-heartbeat-<job_key>/rank-<r>.
  RankWatchdog(int rank, int size, double timeout_seconds, const std::string& job_key);
  ~RankWatchdog();  // stops the thread and removes this rank's file (and the folder when empty)
  RankWatchdog(const RankWatchdog&) = delete;
  RankWatchdog& operator=(const RankWatchdog&) = delete;

  const std::filesystem::path& folder() const { return folder_; }

 private:
  void run();

  int rank_, size_;
  double timeout_;
  std::filesystem::path folder_;
  int fd_ = -1;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stop_ = false;  // guarded by mutex_
  std::thread thread_;
};

// A key for RankWatchdog that every rank of this MPI job agrees on (a broadcast from rank 0):
// collective, call it on every rank from the main thread.
std::string mpi_job_key();

// Test hook (docs/reliability.md): NNPAR_FAULT_RANK_SIGNAL="R:SIG:SECONDS" makes rank R send
// itself SIGKILL (SIG = KILL) or SIGSTOP (SIG = STOP) SECONDS after this call, exactly as
// `kill -9` / `kill -STOP` from outside would. SECONDS = "finalize" instead: the signal comes
// when training is over, right before MPI_Finalize (raise_injected_fault_before_finalize).
// Does nothing when the variable is unset.
void start_injected_rank_fault(int rank);
void raise_injected_fault_before_finalize();

// A launcher's exit status as words: "status 3", "status 137 (signal 9, SIGKILL)".
std::string describe_exit_status(int status);

}  // namespace nnpar
