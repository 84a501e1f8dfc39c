// `deeplens dev-kafka [--brokers 3] [--partitions 8] [--port-file PATH]`: a Kafka-protocol dev
// cluster (librdkafka's mock cluster) on 127.0.0.1 for development and tests.
//
// NOT FOR PRODUCTION: everything lives in memory and is lost when the process exits (see
// bus/kafka/dev_broker.h for its limits). Prints `bootstrap.servers=HOST:PORT,...` on stdout (and
// writes the same line to --port-file, atomically), pre-creates the pipeline's topics, then runs
// until SIGTERM or SIGINT. Commands on stdin, one per line, for fault tests (answered with `ok`
// or `error: ...` on stdout):
//   down BROKER_ID | up BROKER_ID | leader TOPIC PARTITION BROKER_ID | errors API_KEY COUNT ERROR_CODE
#include <poll.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "app/commands.h"
#include "bus/kafka/dev_broker.h"
#include "common/log.h"
#include "events/topics.h"

namespace deeplens::app {

namespace {

struct DevKafkaFlags {
  int brokers = 3;
  int partitions = 8;
  std::string port_file;
};

std::string run_command(DevKafkaBroker& broker, const std::string& line) {
  std::istringstream in(line);
  std::string verb;
  in >> verb;
  Status st;
  if (verb == "down" || verb == "up") {
    int id = 0;
    if (!(in >> id)) return "error: usage: " + verb + " BROKER_ID";
    st = verb == "down" ? broker.set_broker_down(id) : broker.set_broker_up(id);
  } else if (verb == "leader") {
    std::string topic;
    int partition = 0, id = 0;
    if (!(in >> topic >> partition >> id)) return "error: usage: leader TOPIC PARTITION BROKER_ID";
    st = broker.set_partition_leader(topic, partition, id);
  } else if (verb == "errors") {
    int api_key = 0, count = 0, code = 0;
    if (!(in >> api_key >> count >> code)) return "error: usage: errors API_KEY COUNT ERROR_CODE";
    broker.push_request_errors(api_key, count, code);
  } else {
    return "error: unknown command '" + verb + "' (down, up, leader, errors)";
  }
  return st ? "ok" : "error: " + st.error().message;
}

int dev_kafka(const DevKafkaFlags& flags) {
  // Block the stop signals before librdkafka starts its threads, so only sigtimedwait sees them.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  init_logging({});  // logs on stderr: stdout carries only the bootstrap line and command answers

  DevKafkaBrokerOptions options;
  options.brokers = flags.brokers;
  options.partitions = flags.partitions;
  options.replication_factor = flags.brokers;
  for (auto t : topics::kAll) options.topics.emplace_back(t);
  auto broker = DevKafkaBroker::start(options);
  if (!broker) {
    std::cerr << "error: " << broker.error().to_string() << "\n";
    return 1;
  }
  const std::string line = "bootstrap.servers=" + (*broker)->bootstrap_servers();
  if (!flags.port_file.empty()) {
    const std::filesystem::path tmp = flags.port_file + ".tmp";
    {
      std::ofstream out(tmp, std::ios::trunc);
      out << line << "\n";
      if (!out) {
        std::cerr << "error: cannot write " << tmp << "\n";
        return 1;
      }
    }
    std::error_code ec;
    std::filesystem::rename(tmp, flags.port_file, ec);
    if (ec) {
      std::cerr << "error: cannot write " << flags.port_file << ": " << ec.message() << "\n";
      return 1;
    }
  }
  std::cout << line << std::endl;
  std::cerr << "dev-kafka: librdkafka mock cluster, " << flags.brokers
            << " brokers, in memory only - NOT FOR PRODUCTION. Ctrl-C to stop.\n";

  bool stdin_open = true;
  std::string pending;
  while (true) {
    const timespec no_wait{0, 0};
    if (sigtimedwait(&stop_signals, nullptr, &no_wait) > 0) break;
    if (!stdin_open) {
      const timespec tick{0, 200'000'000};
      if (sigtimedwait(&stop_signals, nullptr, &tick) > 0) break;
      continue;
    }
    pollfd p{STDIN_FILENO, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    char chunk[1024];
    const ssize_t n = ::read(STDIN_FILENO, chunk, sizeof chunk);
    if (n <= 0) {
      stdin_open = false;  // no more commands; keep serving until a signal
      continue;
    }
    pending.append(chunk, static_cast<size_t>(n));
    for (auto nl = pending.find('\n'); nl != std::string::npos; nl = pending.find('\n')) {
      const std::string cmd = pending.substr(0, nl);
      pending.erase(0, nl + 1);
      if (!cmd.empty()) std::cout << run_command(**broker, cmd) << std::endl;
    }
  }
  (*broker)->stop();
  return 0;
}

}  // namespace

void register_dev_kafka_command(CLI::App& root, int* exit_code) {
  auto* cmd = root.add_subcommand(
      "dev-kafka", "Run an in-memory Kafka-protocol dev cluster (librdkafka mock; NOT for production: loses everything on exit)");
  auto flags = std::make_shared<DevKafkaFlags>();
  cmd->add_option("--brokers", flags->brokers, "Number of brokers (default 3)")->check(CLI::Range(1, 16));
  cmd->add_option("--partitions", flags->partitions, "Partitions of each pre-created topic (default 8)")->check(CLI::Range(1, 256));
  cmd->add_option("--port-file", flags->port_file, "Also write the bootstrap.servers=... line to this file");
  cmd->callback([flags, exit_code] { *exit_code = dev_kafka(*flags); });
}

}  // namespace deeplens::app
