// Starting nnpar itself under an MPI launcher, for multi-rank strategies.
#pragma once
#include <string>
#include <vector>

#include "config.hpp"

namespace nnpar {

// LAUNCHER -np RANKS ARGS... this-executable PROGRAM_ARGS...
std::vector<std::string> mpi_command(const MpiConfig& mpi, int ranks,
                                     const std::vector<std::string>& program_args);
// Runs argv[0] (searched on PATH) with the given arguments, waits, returns its exit status
// (128 + signal when killed). Throws std::runtime_error when it cannot be started. When
// running as root, the variables OpenMPI requires to allow that are set for the child.
int run_and_wait(const std::vector<std::string>& argv);
std::string join_command(const std::vector<std::string>& argv);

}  // namespace nnpar
