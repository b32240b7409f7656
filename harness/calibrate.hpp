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

}  // namespace nnpar
