// main() of the test binaries that run under mpirun: every rank runs every test, rank 0 alone
// prints, and the job fails when any rank's tests fail.
#include <gtest/gtest.h>
#include <mpi.h>

#include "nnpar/comm_mpi.hpp"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  nnpar::mpi::initialize();
  if (nnpar::mpi::world_rank() != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int failed = RUN_ALL_TESTS();
  MPI_Allreduce(MPI_IN_PLACE, &failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  nnpar::mpi::finalize();
  return failed;
}
