// The harness refuses a plugin whose declared capabilities do not fit the run, with the message
// docs/plugins.md quotes and exit 2, before any data is loaded or any strategy set up; and the
// built-in mpi-ring (the SDK template built in the tree) is listed like every other plugin.
// (A GPU plugin on a machine without a GPU: test_cli's GpuStrategyWithoutAGpuIsRefusedFromItsMetadata.)
#include <gmock/gmock.h>

#include "nnpar_cli.hpp"

using namespace nnpar_test;
using ::testing::HasSubstr;
using ::testing::Not;

namespace {

class Capabilities : public CliTest {
 protected:
  fs::path config_with(const std::string& strategies) {
    return tiny_config("[plugins]\npaths = [\"" + std::string(NNPAR_TEST_PLUGIN_DIR) + "\"]\n" + strategies);
  }
};

}  // namespace

TEST_F(Capabilities, FewerRanksThanThePluginNeedsAreRefused) {
  NNPAR_NEED_DATA();
  const fs::path config = config_with("[[strategy]]\nname = \"serial\"\n[[strategy]]\nname = \"two_ranks\"\n");
  for (const char* command : {"compare ", "train --strategy two_ranks "}) {
    const Output r = run(command + config.string());
    EXPECT_EQ(r.status, 2) << command << r.all();
    EXPECT_THAT(r.err, HasSubstr("nnpar: config error: strategy 'two_ranks' (plugin two_ranks) runs on 2 ranks, "
                                 "not 1 (set ranks = N in its [[strategy]] entry, or start it with mpirun -np N)"))
        << command;
    EXPECT_THAT(r.all(), Not(HasSubstr("epoch 1"))) << command << "refused before any training";
    EXPECT_THAT(r.all(), Not(HasSubstr("setup must not be reached"))) << command;
  }
}

TEST_F(Capabilities, MoreRanksThanThePluginAllowsAreRefused) {
  NNPAR_NEED_DATA();
  const fs::path config = config_with("[[strategy]]\nname = \"two_ranks\"\nranks = 3\n");
  const Output r = run("compare " + config.string());
  EXPECT_EQ(r.status, 2) << r.all();
  EXPECT_THAT(r.err, HasSubstr("strategy 'two_ranks' (plugin two_ranks) runs on 2 ranks, not 3"));
  EXPECT_THAT(r.all(), Not(HasSubstr("starting 3 ranks")));
}

TEST_F(Capabilities, SingleProcessPluginGivenRanksIsRefused) {
  NNPAR_NEED_DATA();
  const fs::path config = tiny_config("[[strategy]]\nname = \"serial\"\nlabel = \"serial-2\"\nranks = 2\n");
  const Output r = run("train " + config.string());
  EXPECT_EQ(r.status, 2) << r.all();
  EXPECT_THAT(r.err, HasSubstr("strategy 'serial-2' (plugin serial) runs on 1 ranks, not 2 (it runs in a single "
                               "process: remove ranks, do not start it under mpirun)"));
}

TEST_F(Capabilities, MpiRingIsABuiltInPlugin) {
  const Output r = run("list-plugins");
  ASSERT_EQ(r.status, 0) << r.all();
  EXPECT_THAT(r.out, HasSubstr("\nmpi-ring 0.1  [exact, CPU, MPI, ranks 1..any]\n"
                               "  data parallel over MPI ranks with a hand-written ring allreduce"));
  EXPECT_THAT(r.out, HasSubstr("file: " + (fs::weakly_canonical(NNPAR_PLUGIN_DIR) / "nnpar_strategy_mpi-ring.so").string()));
  EXPECT_THAT(r.out, Not(HasSubstr("(broken)")));
}
