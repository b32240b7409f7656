// The MPI communicator (host buffers) and the process-level MPI set-up the harness uses.
#pragma once
#include <memory>

#include "nnpar/communicator.hpp"

namespace nnpar::mpi {

// True when this process was started by an MPI launcher (mpirun, srun), judged from the
// environment, so single-process runs never touch MPI.
bool launched_by_mpi();
// MPI_Init_thread(FUNNELED) once per process; safe to call again. A process that was not
// launched by mpirun becomes a world of one (MPI "singleton" start).
void initialize();
bool initialized();
// MPI_Finalize if initialize() ran it.
void finalize();
// Ends every rank of the job at once with this exit code: what a rank that hit an error
// must do so that its peers do not wait for it forever.
[[noreturn]] void abort(int exit_code);
int world_rank();
int world_size();

// A communicator over all ranks (MPI_COMM_WORLD duplicated, so a strategy's messages never
// mix with anyone else's). Initialises MPI if needed.
std::unique_ptr<Communicator> world();

}  // namespace nnpar::mpi
