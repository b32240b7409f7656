// `nnpar calibrate`: micro-benchmarks of this machine saved as a profile for `nnpar plan`.
#pragma once
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config.hpp"

namespace nnpar {

struct CalibrateOptions {
  std::string output;             // -o FILE
  bool overwrite = false;
  bool quick = false;             // a few shapes and sizes: seconds, for tests
  bool gpu = false;               // also run nnpar-calibrate-gpu (kernels, NCCL)
  bool mpi = true;                // MPI allreduce / send-recv through the launcher
  std::vector<int> mpi_ranks;     // empty: 2, 4, 8, ... up to the cores
  std::vector<int> gpu_ranks;     // empty: 2, 4, 8, ... up to the GPUs
  std::string gpu_tool;           // path of nnpar-calibrate-gpu; empty: beside nnpar
  MpiConfig launcher;             // mpirun and its arguments
  std::string mpi_child;          // (internal) run as an MPI rank, rank 0 writes this file
  std::string command_line;
};

// Runs the benchmarks and writes the profile; returns the exit status.
int run_calibrate(const CalibrateOptions& options);

// The CPU section alone (kernels, streaming operations, OpenMP), for tests.
nlohmann::json calibrate_cpu(bool quick, bool verbose);

// openmp["concurrency"][i]["slowdown"] := the median over the passes' values (each pass an
// "openmp" object of the same layout), which are kept beside it as "passes". A ratio of two
// timings is thrown far by one disturbed pass: on the 2-core workstation one calibration's mean
// was 1.34 where the runs behaved as ~1.05 and five quick passes gave 1.00-1.07.
void take_median_slowdowns(nlohmann::json& openmp, const std::vector<nlohmann::json>& passes);

// The first pass's tree with every "seconds" the median over the passes (same layouts).
nlohmann::json median_over_passes(const std::vector<nlohmann::json>& passes);

}  // namespace nnpar
