#include "launcher.hpp"

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include <boost/dll/runtime_symbol_info.hpp>

extern char** environ;

namespace nnpar {

std::vector<std::string> mpi_command(const MpiConfig& mpi, int ranks,
                                     const std::vector<std::string>& program_args) {
  std::vector<std::string> argv{mpi.launcher, "-np", std::to_string(ranks)};
  argv.insert(argv.end(), mpi.launcher_args.begin(), mpi.launcher_args.end());
  argv.push_back(boost::dll::program_location().string());
  argv.insert(argv.end(), program_args.begin(), program_args.end());
  return argv;
}

std::string join_command(const std::vector<std::string>& argv) {
  std::string s;
  for (auto& a : argv) {
    if (!s.empty()) s += ' ';
    s += a.find_first_of(" \t\"'") == std::string::npos ? a : "'" + a + "'";
  }
  return s;
}

int run_and_wait(const std::vector<std::string>& argv) {
  if (::geteuid() == 0) {
    // OpenMPI refuses to start as root unless told that this is intended (CI runs as root).
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
  }
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawnp(&pid, args[0], nullptr, nullptr, args.data(), environ);
  if (rc != 0)
    throw std::runtime_error("cannot start '" + argv[0] + "': " + std::strerror(rc) +
                             " (install openmpi-bin, or set [mpi] launcher in the config)");
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw std::runtime_error("waiting for '" + argv[0] + "': " + std::strerror(errno));
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

}  // namespace nnpar
