// `deeplens events check FILE|-`: decode one event, print its normalised JSON (exit 0) or the
// decoding error naming the field (exit 1). For operators looking at a message a consumer rejected.
#include <CLI/CLI.hpp>
#include <fstream>
#include <iostream>
#include <iterator>
#include <sstream>

#include "app/commands.h"
#include "events/codec.h"

namespace deeplens::app {

void register_events_command(CLI::App& root, int* exit_code) {
  auto* events = root.add_subcommand("events", "Inspect pipeline events");
  events->require_subcommand(1);
  auto* check = events->add_subcommand(
      "check", "Decode one event (JSON) and print it normalised, or the error naming the field");
  auto path = std::make_shared<std::string>();
  check->add_option("file", *path, "Event JSON file, or - for standard input")->required();
  check->callback([path, exit_code] {
    std::string text;
    if (*path == "-") {
      text.assign(std::istreambuf_iterator<char>(std::cin), {});
    } else {
      std::ifstream in(*path, std::ios::binary);
      if (!in) {
        std::cerr << "error: cannot read " << *path << "\n";
        *exit_code = 2;
        return;
      }
      text.assign(std::istreambuf_iterator<char>(in), {});
    }
    auto event = decode_any(text);
    if (!event) {
      std::cerr << "invalid event: " << event.error().message << "\n";
      *exit_code = 1;
      return;
    }
    std::cout << encode(*event) << "\n";
    *exit_code = 0;
  });
}

}  // namespace deeplens::app
