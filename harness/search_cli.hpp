// The `nnpar search` subcommand's command line (included by main.cpp only, which links CLI11).
#pragma once
#include <CLI/CLI.hpp>

#include "search_run.hpp"

namespace nnpar {

inline CLI::App* add_search_subcommand(CLI::App& app, SearchCommand& cmd) {
  auto* search = app.add_subcommand(
      "search", "hyper-parameter search (grid, random, successive halving) described by the config's [search] "
                "table; trials spread over workers (trial_parallel) and/or each trial on all workers "
                "(data_parallel), compared; results appended as trials finish (see docs/search.md)");
  search->add_option("CONFIG", cmd.config, "TOML configuration file with a [search] table")->required();
  search->add_option("--set", cmd.overrides, "override a config key, e.g. --set search.workers=4 (repeatable)")
      ->type_name("KEY=VALUE");
  search->add_option("--plugin-path", cmd.plugin_paths, "extra folder to search for plugins (repeatable)")
      ->type_name("DIR");
  search->add_option("--resume", cmd.resume,
                     "carry on with the search in DIR (a folder an earlier `nnpar search` made): finished trials "
                     "are not run again")
      ->type_name("DIR");
  search->add_option("--search-dir", cmd.search_dir, "(used by search itself) run in this search folder")->group("");
  search->add_option("--run-mode", cmd.run_mode, "(used by search itself) run this mode only")
      ->check(CLI::IsMember({"trial_parallel", "data_parallel"}))
      ->group("");
  search->add_option("--stop-after", cmd.stop_after,
                     "(testing) end the process abruptly after N results of this session, as a kill would")
      ->group("");
  search->add_flag("-q,--quiet", cmd.quiet, "no line per finished trial");
  return search;
}

}  // namespace nnpar
