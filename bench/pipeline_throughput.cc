// pipeline_throughput: what the pipeline costs on top of the extractor, measured in one run
// (issue #8, parts 2 and 3). In-process: the same Node (backends + stages) that `deeplens serve`
// runs, fed through accept_upload (the API's ingest path without HTTP), embedded and on Kafka (the
// dev broker: librdkafka's mock cluster, in this process).
//
//   pipeline_throughput                         mobilenet_v2, embedded and Kafka, 200 images
//   pipeline_throughput --model noop --raw      a no-op extractor, plus raw librdkafka
//                                               produce+consume of the same messages
//   pipeline_throughput --priority both         priority lanes against FIFO (issue #17): a backlog
//                                               of --backlog low uploads, then --high high uploads
//                                               one every 100 ms; with lanes vs everything normal
//   pipeline_throughput --help
//
// For each bus it reports:
//   throughput  N uploads waiting, then the stages started: images/s from the first completion to
//               the last, and the ratio to the extractor alone (decode + extract in batches of pipeline.extract_batch, on this
//               thread, on the same images, in the same run);
//   latency     one image at a time: upload -> ProcessingCompleted seen by a listener, and that
//               minus the extraction step's own duration (the pipeline's overhead per image).
// --raw: the same number of messages through a chain of 4 topics (our 4 hops: uploaded ->
// extraction -> indexing -> completed) with plain librdkafka, each hop a consumer that produces
// to the next topic and commits, message sizes as measured on our own topics.
#include <librdkafka/rdkafka.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "app/models.h"
#include "app/node.h"
#include "bus/kafka/dev_broker.h"
#include "common/log.h"
#include "common/sha256.h"
#include "events/priority.h"
#include "events/topics.h"
#include "imaging/image.h"
#include "load.h"
#include "noop_extractor.h"
#include "pipeline/ingest.h"
#include "pipeline/status.h"

namespace deeplens::bench {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

double ms_between(SteadyClock::time_point a, SteadyClock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

struct Args {
  std::string model = "mobilenet_v2";  // or "noop", "builtin"
  std::vector<std::string> buses = {"embedded", "kafka"};
  size_t images = 200;
  size_t latency_samples = 30;
  size_t extract_batch = 8;
  bool raw = false;
  bool thumbnails = true;  // processingOptions.generateThumbnail (the API's default: true)
  std::vector<std::string> priority_modes;  // "lanes", "fifo": run the priority scenario instead
  size_t backlog = 1000;
  size_t high = 20;
  std::string models_dir = std::string(DEEPLENS_SOURCE_DIR) + "/../shared/models";
};

[[noreturn]] void usage(int code) {
  std::cout << "pipeline_throughput [--model mobilenet_v2|builtin|noop] [--bus embedded|kafka|both]\n"
               "                    [--images 200] [--latency-samples 30] [--extract-batch 8] [--raw]\n"
               "                    [--no-thumbnails] [--priority lanes|fifo|both [--backlog 1000] [--high 20]]\n"
               "                    [--models-dir DIR]\n";
  std::exit(code);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string f = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage(2);
      return argv[++i];
    };
    if (f == "--model") a.model = next();
    else if (f == "--bus") {
      const std::string b = next();
      a.buses = b == "both" ? std::vector<std::string>{"embedded", "kafka"} : std::vector<std::string>{b};
    } else if (f == "--images") a.images = std::stoul(next());
    else if (f == "--latency-samples") a.latency_samples = std::stoul(next());
    else if (f == "--extract-batch") a.extract_batch = std::stoul(next());
    else if (f == "--raw") a.raw = true;
    else if (f == "--no-thumbnails") a.thumbnails = false;
    else if (f == "--priority") {
      const std::string m = next();
      a.priority_modes = m == "both" ? std::vector<std::string>{"fifo", "lanes"} : std::vector<std::string>{m};
    } else if (f == "--backlog") a.backlog = std::stoul(next());
    else if (f == "--high") a.high = std::stoul(next());
    else if (f == "--models-dir") a.models_dir = next();
    else if (f == "--help" || f == "-h") usage(0);
    else {
      std::cerr << "unknown flag " << f << "\n";
      usage(2);
    }
  }
  return a;
}

std::vector<std::string> load_photos() {
  std::vector<std::string> out;
  const fs::path dir = "/usr/share/doc/opencv-doc/examples/data";
  for (const char* name : {"baboon.jpg", "fruits.jpg", "butterfly.jpg", "home.jpg", "orange.jpg", "apple.jpg",
                           "building.jpg", "messi5.jpg", "board.jpg", "aero1.jpg", "aero3.jpg", "squirrel_cls.jpg",
                           "starry_night.jpg", "lena.jpg", "graf1.png", "smarties.png", "pic1.png", "pic3.png"}) {
    std::error_code ec;
    if (fs::exists(dir / name, ec)) out.push_back(read_file((dir / name).string()));
  }
  if (out.empty()) throw std::runtime_error("no photos in " + dir.string() + " (install opencv-doc)");
  return out;
}

// Hears completions and remembers when each image's arrived.
class CompletionClock final : public ImageEventListener {
 public:
  void on_completed(const ProcessingCompletedEvent& e) override {
    int64_t extract_ms = 0;
    for (const auto& s : e.data.processing_steps)
      if (s.step == "feature_extraction") extract_ms = s.duration_ms;
    std::lock_guard lock(mu_);
    done_[e.data.image_id] = {SteadyClock::now(), extract_ms};
    cv_.notify_all();
  }
  void on_failed(const ProcessingFailedEvent& e, bool final) override {
    if (!final) return;
    std::lock_guard lock(mu_);
    ++failed_;
    std::fprintf(stderr, "image %s failed: %s\n", e.data.image_id.c_str(), e.data.error_message.c_str());
    cv_.notify_all();
  }
  // Waits until `n` images completed (or failed); false on timeout.
  bool wait_for(size_t n, std::chrono::seconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return done_.size() + failed_ >= n; });
  }
  std::pair<SteadyClock::time_point, int64_t> at(const std::string& id) {
    std::lock_guard lock(mu_);
    return done_.at(id);
  }
  SteadyClock::time_point last() {
    std::lock_guard lock(mu_);
    SteadyClock::time_point t{};
    for (const auto& [id, d] : done_) t = std::max(t, d.first);
    return t;
  }
  SteadyClock::time_point first() {
    std::lock_guard lock(mu_);
    SteadyClock::time_point t = SteadyClock::time_point::max();
    for (const auto& [id, d] : done_) t = std::min(t, d.first);
    return t;
  }
  size_t failed() {
    std::lock_guard lock(mu_);
    return failed_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::pair<SteadyClock::time_point, int64_t>> done_;
  size_t failed_ = 0;
};

std::string upload(PipelineContext& ctx, const std::string& bytes, const std::string& model, bool thumbnail,
                   std::optional<Priority> priority = std::nullopt) {
  auto span = std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  auto info = probe_buffer(span, ctx.options.limits);
  if (!info) throw std::runtime_error("probe: " + info.error().to_string());
  auto writer = ctx.blobs.begin_write();
  if (!writer) throw std::runtime_error(writer.error().to_string());
  if (auto st = (*writer)->write(span); !st) throw std::runtime_error(st.error().to_string());
  UploadRequest req;
  req.tenant_id = "bench";
  req.file_name = "bench.jpg";
  req.options.models = {model};
  req.options.skip_duplicate_check = true;
  req.options.generate_thumbnail = thumbnail;
  req.options.priority = priority;
  req.sha256 = sha256_hex(bytes);
  req.info = std::move(info).value();
  req.blob = std::move(writer).value();
  auto r = accept_upload(ctx, std::move(req));
  if (!r) throw std::runtime_error("upload: " + r.error().to_string());
  return r->image.image_id;
}

// The extractor alone: decode (when the model takes pixels) + extract, in batches, this thread.
double extractor_alone(Extractor& model, const std::vector<std::string>& photos, size_t n, size_t batch,
                       const ImageLimits& limits) {
  const auto& info = model.info();
  const auto t0 = SteadyClock::now();
  for (size_t i = 0; i < n; i += batch) {
    const size_t m = std::min(batch, n - i);
    std::vector<DecodedImage> pixels(m);
    std::vector<ExtractorInput> inputs(m);
    for (size_t k = 0; k < m; ++k) {
      const std::string& bytes = photos[(i + k) % photos.size()];
      if (info.input_width > 0) {
        auto d = decode_for_model(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()),
                                  info.input_width, info.input_height, limits);
        if (!d) throw std::runtime_error("decode: " + d.error().to_string());
        pixels[k] = std::move(d).value();
      }
      inputs[k] = ExtractorInput{info.input_width > 0 ? &pixels[k] : nullptr, bytes, "img"};
    }
    auto v = model.extract(inputs);
    if (!v) throw std::runtime_error("extract: " + v.error().to_string());
  }
  return static_cast<double>(n) / std::chrono::duration<double>(SteadyClock::now() - t0).count();
}

// Thumbnails alone (what the orchestrator makes per image unless generateThumbnail is false).
double thumbnails_alone(const std::vector<std::string>& photos, size_t n, int edge, const ImageLimits& limits) {
  const auto t0 = SteadyClock::now();
  for (size_t i = 0; i < n; ++i) {
    const std::string& bytes = photos[i % photos.size()];
    auto t = make_thumbnail(std::span(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()), edge,
                            ThumbnailFormat::kJpeg, limits);
    if (!t) throw std::runtime_error("thumbnail: " + t.error().to_string());
  }
  return static_cast<double>(n) / std::chrono::duration<double>(SteadyClock::now() - t0).count();
}

struct BusRun {
  double images_per_s = 0;
  double upload_s = 0;
  double first_s = 0;  // start of the stages -> first completion
  Percentiles e2e_ms, overhead_ms, extract_ms;
};

// Raw librdkafka: `n` messages through a chain of topics; sizes[h] bytes on hop h.
double raw_kafka_chain(const std::string& bootstrap, size_t n, const std::vector<size_t>& sizes) {
  auto conf = [&](bool consumer, const std::string& group) {
    rd_kafka_conf_t* c = rd_kafka_conf_new();
    char err[512];
    auto set = [&](const char* k, const char* v) {
      if (rd_kafka_conf_set(c, k, v, err, sizeof err) != RD_KAFKA_CONF_OK) throw std::runtime_error(err);
    };
    set("bootstrap.servers", bootstrap.c_str());
    set("socket.nagle.disable", "true");
    if (consumer) {
      set("group.id", group.c_str());
      set("auto.offset.reset", "earliest");
      set("enable.auto.commit", "false");
      set("fetch.wait.max.ms", "10");
    } else {
      set("enable.idempotence", "true");
      set("acks", "all");
      set("linger.ms", "1");
    }
    return c;
  };
  char err[512];
  rd_kafka_t* producer = rd_kafka_new(RD_KAFKA_PRODUCER, conf(false, ""), err, sizeof err);
  if (!producer) throw std::runtime_error(err);
  const std::string run = std::to_string(::getpid()) + "-" + std::to_string(SteadyClock::now().time_since_epoch().count());
  auto topic = [&](size_t h) { return "bench.raw." + run + "." + std::to_string(h); };
  const size_t hops = sizes.size();
  std::atomic<size_t> arrived{0};
  std::atomic<bool> stop{false};
  std::atomic<int> assigned{0};
  std::vector<std::thread> stages;
  SteadyClock::time_point last_arrival;
  for (size_t h = 0; h < hops; ++h) {
    stages.emplace_back([&, h] {
      rd_kafka_t* c = rd_kafka_new(RD_KAFKA_CONSUMER, conf(true, "raw-" + run + "-" + std::to_string(h)), err, sizeof err);
      rd_kafka_poll_set_consumer(c);
      rd_kafka_topic_partition_list_t* subs = rd_kafka_topic_partition_list_new(1);
      rd_kafka_topic_partition_list_add(subs, topic(h).c_str(), RD_KAFKA_PARTITION_UA);
      rd_kafka_subscribe(c, subs);
      rd_kafka_topic_partition_list_destroy(subs);
      ++assigned;
      const std::string payload(h + 1 < hops ? sizes[h + 1] : 0, 'x');
      size_t since_commit = 0;
      while (!stop) {
        rd_kafka_message_t* m = rd_kafka_consumer_poll(c, 20);
        if (!m) {
          if (since_commit) rd_kafka_commit(c, nullptr, 0), since_commit = 0;
          continue;
        }
        if (m->err) {
          rd_kafka_message_destroy(m);
          continue;
        }
        if (h + 1 < hops) {
          while (rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(topic(h + 1).c_str()),
                                   RD_KAFKA_V_KEY(m->key, m->key_len),
                                   RD_KAFKA_V_VALUE(const_cast<char*>(payload.data()), payload.size()),
                                   RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(producer, 10);
        } else {
          last_arrival = SteadyClock::now();
          ++arrived;
        }
        rd_kafka_message_destroy(m);
        if (++since_commit >= 64) rd_kafka_commit(c, nullptr, 0), since_commit = 0;
      }
      rd_kafka_consumer_close(c);
      rd_kafka_destroy(c);
    });
  }
  // Let the groups settle: a warm-up message through the whole chain first.
  std::thread poller([&] {
    while (!stop) rd_kafka_poll(producer, 50);
  });
  auto produce0 = [&](size_t i, size_t size) {
    const std::string key = "img_" + std::to_string(i);
    const std::string payload(size, 'x');
    while (rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(topic(0).c_str()), RD_KAFKA_V_KEY(key.data(), key.size()),
                             RD_KAFKA_V_VALUE(const_cast<char*>(payload.data()), payload.size()),
                             RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
      std::this_thread::sleep_for(1ms);
  };
  produce0(0, sizes[0]);
  const auto settle_end = SteadyClock::now() + 60s;
  while (arrived < 1 && SteadyClock::now() < settle_end) std::this_thread::sleep_for(10ms);
  if (arrived < 1) throw std::runtime_error("raw chain: the warm-up message did not arrive");
  const auto t0 = SteadyClock::now();
  for (size_t i = 1; i <= n; ++i) produce0(i, sizes[0]);
  const auto end = SteadyClock::now() + 300s;
  while (arrived < n + 1 && SteadyClock::now() < end) std::this_thread::sleep_for(2ms);
  const double rate = static_cast<double>(arrived - 1) / std::chrono::duration<double>(last_arrival - t0).count();
  stop = true;
  for (auto& t : stages) t.join();
  poller.join();
  rd_kafka_flush(producer, 5000);
  rd_kafka_destroy(producer);
  return rate;
}

// Average message size on each of our four hop topics (read back from the dev broker).
std::vector<size_t> topic_sizes(const std::string& bootstrap, size_t expect) {
  std::vector<size_t> out;
  for (auto t : {topics::kImagesUploaded, topics::kFeaturesExtraction, topics::kVectorsIndexing,
                 topics::kProcessingCompleted}) {
    rd_kafka_conf_t* c = rd_kafka_conf_new();
    char err[512];
    rd_kafka_conf_set(c, "bootstrap.servers", bootstrap.c_str(), err, sizeof err);
    const std::string group = "bench.sizes." + std::to_string(::getpid()) + std::string(t);
    rd_kafka_conf_set(c, "group.id", group.c_str(), err, sizeof err);
    rd_kafka_conf_set(c, "auto.offset.reset", "earliest", err, sizeof err);
    rd_kafka_conf_set(c, "fetch.wait.max.ms", "10", err, sizeof err);
    rd_kafka_t* k = rd_kafka_new(RD_KAFKA_CONSUMER, c, err, sizeof err);
    rd_kafka_poll_set_consumer(k);
    auto* subs = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(subs, std::string(t).c_str(), RD_KAFKA_PARTITION_UA);
    rd_kafka_subscribe(k, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    size_t count = 0, bytes = 0;
    const auto end = SteadyClock::now() + 30s;
    while (count < expect && SteadyClock::now() < end) {
      rd_kafka_message_t* m = rd_kafka_consumer_poll(k, 100);
      if (!m) continue;
      if (!m->err) ++count, bytes += m->len;
      rd_kafka_message_destroy(m);
    }
    rd_kafka_consumer_close(k);
    rd_kafka_destroy(k);
    out.push_back(count ? bytes / count : 0);
  }
  return out;
}

struct PriorityRun {
  Percentiles high_ms;       // upload -> completed of the images that jump the backlog
  double images_per_s = 0;   // every image, first completion to last
  // estimatedTimeRemaining / the time the image then took, for every 10th backlog image, read
  // once the late uploads are in (issue #17: within a factor of 2).
  std::vector<double> eta_ratios;  // sorted
  size_t eta_within_2x = 0;
};

std::unique_ptr<app::Node> open_node(const Args& a, const fs::path& dir, Extractor& model, DevKafkaBroker* broker,
                                     const Clock& clock, RandomSource& random);

// Issue #17: a backlog of low-priority uploads is waiting when the stages start; while it drains,
// `high` uploads arrive one every 100 ms. With lanes they are high priority and the backlog low;
// FIFO is the same load with every image normal (one lane: the order of arrival).
PriorityRun run_priority(const Args& a, const std::string& bus, bool lanes, Extractor& model,
                         const std::vector<std::string>& photos, DevKafkaBroker* broker) {
  const fs::path dir = fs::temp_directory_path() /
                       ("deeplens-bench-priority-" + std::to_string(::getpid()) + "-" + bus + (lanes ? "-lanes" : "-fifo"));
  fs::remove_all(dir);
  SystemClock clock;
  SystemRandom random;
  auto node = open_node(a, dir, model, broker, clock, random);
  CompletionClock done;
  auto& ctx = node->context();
  const std::string model_name = model.info().name;
  const auto backlog_priority = lanes ? std::optional(Priority::kLow) : std::nullopt;
  std::vector<std::string> backlog_ids;
  backlog_ids.reserve(a.backlog);
  for (size_t i = 0; i < a.backlog; ++i)
    backlog_ids.push_back(upload(ctx, photos[i % photos.size()], model_name, a.thumbnails, backlog_priority));
  if (auto st = node->start_pipeline(); !st) throw std::runtime_error(st.error().to_string());
  node->pipeline()->notifier().add_listener(&done);
  // The stages have begun on the backlog before the first high upload.
  if (!done.wait_for(std::min<size_t>(a.backlog, 20), 600s)) throw std::runtime_error("priority: the backlog did not start");
  std::vector<std::pair<std::string, SteadyClock::time_point>> high;
  for (size_t i = 0; i < a.high; ++i) {
    const auto t = SteadyClock::now();
    high.emplace_back(upload(ctx, photos[(i * 7) % photos.size()], model_name, a.thumbnails,
                             lanes ? std::optional(Priority::kHigh) : std::nullopt),
                      t);
    std::this_thread::sleep_for(100ms);
  }
  // What the status API answers for the backlog now, against what then happens.
  StatusOptions so;
  so.lane_weights = ctx.options.lane_weights;
  std::vector<std::pair<std::string, std::pair<SteadyClock::time_point, int64_t>>> estimates;
  for (size_t i = 0; i < backlog_ids.size(); i += 10) {
    auto view = load_status(ctx.store, "bench", backlog_ids[i], so);
    if (!view) throw std::runtime_error("status: " + view.error().to_string());
    if (view->estimated_time_remaining_ms) estimates.push_back({backlog_ids[i], {SteadyClock::now(), *view->estimated_time_remaining_ms}});
  }
  if (!done.wait_for(a.backlog + a.high, 1800s) || done.failed()) throw std::runtime_error("priority: not every image completed");
  std::vector<double> ms;
  for (const auto& [id, t] : high) ms.push_back(ms_between(t, done.at(id).first));
  PriorityRun r;
  r.high_ms = percentiles(ms);
  std::vector<double> ratios;
  for (const auto& [id, e] : estimates) {
    const double actual = std::max(ms_between(e.first, done.at(id).first), 1.0);
    const double ratio = static_cast<double>(e.second) / actual;
    ratios.push_back(ratio);
    if (ratio >= 0.5 && ratio <= 2.0) ++r.eta_within_2x;
  }
  std::sort(ratios.begin(), ratios.end());
  r.eta_ratios = std::move(ratios);
  r.images_per_s = static_cast<double>(a.backlog + a.high - 1) / std::chrono::duration<double>(done.last() - done.first()).count();
  node->stop();
  node.reset();
  fs::remove_all(dir);
  return r;
}

std::unique_ptr<app::Node> open_node(const Args& a, const fs::path& dir, Extractor& model, DevKafkaBroker* broker,
                                     const Clock& clock, RandomSource& random) {
  app::NodeOptions o;
  o.data_dir = dir;
  o.run.extract_batch = a.extract_batch;
  if (broker) {
    KafkaBusOptions k;
    k.bootstrap_servers = broker->bootstrap_servers();
    k.client_id = "deeplens-bench";
    k.consumer_settings = {{"fetch.wait.max.ms", "10"}};
    for (auto t : topics::kAll) k.topics.emplace_back(t);
    o.kafka = k;
  }
  const std::string model_name = model.info().name;
  // By value: the lookup outlives this function.
  auto node = app::Node::open(
      o, [&model, model_name](const std::string& name) -> Extractor* { return name == model_name ? &model : nullptr; },
      clock, random);
  if (!node) throw std::runtime_error("node: " + node.error().to_string());
  return std::move(node).value();
}

BusRun run_bus(const Args& a, const std::string& bus, Extractor& model, const std::vector<std::string>& photos,
               DevKafkaBroker* broker) {
  const fs::path dir = fs::temp_directory_path() / ("deeplens-bench-pipeline-" + std::to_string(::getpid()) + "-" + bus);
  fs::remove_all(dir);
  SystemClock clock;
  SystemRandom random;
  auto node = open_node(a, dir, model, broker, clock, random);
  const std::string model_name = model.info().name;
  CompletionClock done;
  auto& ctx = node->context();
  BusRun r;

  // Throughput: N images waiting in the first topic, then the stages drain them (uploads are
  // measured by upload_ack; here they would only limit the rate). Steady state: from the first
  // completion to the last, so consumer-group joins and the model's first forward are left out.
  const auto u0 = SteadyClock::now();
  for (size_t i = 0; i < a.images; ++i) upload(ctx, photos[i % photos.size()], model_name, a.thumbnails);
  r.upload_s = std::chrono::duration<double>(SteadyClock::now() - u0).count();
  const auto t0 = SteadyClock::now();
  if (auto st = node->start_pipeline(); !st) throw std::runtime_error(st.error().to_string());
  node->pipeline()->notifier().add_listener(&done);
  if (!done.wait_for(a.images, 1800s) || done.failed()) throw std::runtime_error("throughput: not every image completed");
  r.first_s = std::chrono::duration<double>(done.first() - t0).count();
  r.images_per_s = static_cast<double>(a.images - 1) / std::chrono::duration<double>(done.last() - done.first()).count();

  // Latency on the idle pipeline: one image at a time.
  std::vector<double> e2e, overhead, extract;
  for (size_t i = 0; i < a.latency_samples; ++i) {
    const auto t0 = SteadyClock::now();
    const std::string id = upload(ctx, photos[i % photos.size()], model_name, a.thumbnails);
    if (!done.wait_for(a.images + i + 1, 120s) || done.failed()) throw std::runtime_error("latency: image did not complete");
    const auto [t1, ex_ms] = done.at(id);
    e2e.push_back(ms_between(t0, t1));
    overhead.push_back(ms_between(t0, t1) - static_cast<double>(ex_ms));
    extract.push_back(static_cast<double>(ex_ms));
  }
  r.e2e_ms = percentiles(e2e);
  r.overhead_ms = percentiles(overhead);
  r.extract_ms = percentiles(extract);
  node->stop();
  node.reset();
  fs::remove_all(dir);
  return r;
}

int run(const Args& a) {
  LogOptions lo;
  lo.level = LogLevel::kWarn;
  init_logging(lo);
  if (auto st = init_imaging(); !st) throw std::runtime_error(st.error().to_string());
  const auto photos = load_photos();

  std::unique_ptr<ModelRegistry> registry;
  NoopExtractor noop;
  Extractor* model = &noop;
  if (a.model != "noop") {
    std::vector<ConfigSection> sections;
    if (a.model == "mobilenet_v2")
      sections.push_back({{"name", "mobilenet_v2"},
                          {"file", a.models_dir + "/mobilenet_v2_1.0_224_quint8.pb"},
                          {"output_layer", "embedding"},
                          {"dimension", "1280"},
                          {"mean", "127.5"},
                          {"scale", "0.00784313725490196"}});
    auto built = app::build_model_registry(sections);
    if (!built) throw std::runtime_error(built.error().to_string());
    registry = std::move(built).value();
    model = registry->find(a.model);
    if (!model) throw std::runtime_error("unknown model " + a.model);
  }

  std::printf("machine: %u cores; model %s (%d-d); %zu photos; extract batch %zu; load average at start: ",
              std::thread::hardware_concurrency(), model->info().name.c_str(), model->info().dimension, photos.size(),
              a.extract_batch);
  std::fflush(stdout);
  std::system("cut -d' ' -f1-3 /proc/loadavg");

  // Warm the model up, then the extractor alone on the same images.
  extractor_alone(*model, photos, std::min<size_t>(16, a.images), a.extract_batch, ImageLimits{});
  const double alone = extractor_alone(*model, photos, a.images, a.extract_batch, ImageLimits{});
  std::printf("extractor alone      %8.1f images/s  (%zu images, decode + extract, batches of %zu)\n", alone,
              a.images, a.extract_batch);
  if (a.thumbnails) {
    const double thumbs = thumbnails_alone(photos, a.images, PipelineOptions{}.thumbnail_edge, ImageLimits{});
    const double both = 1.0 / (1.0 / alone + 1.0 / thumbs);
    std::printf("thumbnails alone     %8.1f images/s  -> extractor + thumbnail, back to back: %.1f images/s\n", thumbs,
                both);
  }

  std::unique_ptr<DevKafkaBroker> broker;
  std::map<std::string, double> rates;
  if (!a.priority_modes.empty()) {
    for (const auto& bus : a.buses) {
      if (bus == "kafka" && !broker) {
        DevKafkaBrokerOptions bo;
        for (auto t : topics::kAll) bo.topics.emplace_back(t);
        auto b = DevKafkaBroker::start(bo);
        if (!b) throw std::runtime_error(b.error().to_string());
        broker = std::move(b).value();
      }
      std::map<std::string, PriorityRun> runs;
      for (const auto& mode : a.priority_modes) {
        const PriorityRun r = run_priority(a, bus, mode == "lanes", *model, photos, bus == "kafka" ? broker.get() : nullptr);
        runs[mode] = r;
        std::printf("%-8s %-5s %zu backlog + %zu late uploads: late upload -> completed p50 %8.1f  p99 %8.1f ms;"
                    " throughput %7.1f images/s\n",
                    bus.c_str(), mode.c_str(), a.backlog, a.high, r.high_ms.p50, r.high_ms.p99, r.images_per_s);
        const auto& e = r.eta_ratios;
        auto q = [&](double f) { return e.empty() ? 0.0 : e[std::min(e.size() - 1, static_cast<size_t>(f * static_cast<double>(e.size())))]; };
        std::printf("%-8s %-5s estimatedTimeRemaining / actual, %zu backlog images: min %.2f  p10 %.2f  p50 %.2f  p90 %.2f"
                    "  max %.2f; within 2x: %zu (%.1f%%)\n",
                    bus.c_str(), mode.c_str(), e.size(), q(0), q(0.1), q(0.5), q(0.9), e.empty() ? 0.0 : e.back(),
                    r.eta_within_2x, e.empty() ? 0.0 : 100.0 * static_cast<double>(r.eta_within_2x) / static_cast<double>(e.size()));
        std::fflush(stdout);
      }
      if (runs.count("lanes") && runs.count("fifo"))
        std::printf("%-8s lanes/fifo: late p50 %.3f x, p99 %.3f x; throughput %.3f x\n", bus.c_str(),
                    runs["lanes"].high_ms.p50 / runs["fifo"].high_ms.p50, runs["lanes"].high_ms.p99 / runs["fifo"].high_ms.p99,
                    runs["lanes"].images_per_s / runs["fifo"].images_per_s);
    }
    return 0;
  }
  for (const auto& bus : a.buses) {
    if (bus == "kafka") {
      DevKafkaBrokerOptions bo;
      for (auto t : topics::kAll) bo.topics.emplace_back(t);
      auto b = DevKafkaBroker::start(bo);
      if (!b) throw std::runtime_error(b.error().to_string());
      broker = std::move(b).value();
    } else if (bus != "embedded") {
      throw std::runtime_error("--bus: embedded, kafka or both");
    }
    const BusRun r = run_bus(a, bus, *model, photos, bus == "kafka" ? broker.get() : nullptr);
    rates[bus] = r.images_per_s;
    std::printf("%-8s throughput %8.1f images/s  = %.2f x the extractor alone  (first completion after %.2f s)\n",
                bus.c_str(), r.images_per_s, r.images_per_s / alone, r.first_s);
    std::printf("%-8s latency    upload -> completed  p50 %7.1f  p90 %7.1f  p99 %7.1f ms  (%zu, one at a time)\n",
                bus.c_str(), r.e2e_ms.p50, r.e2e_ms.p90, r.e2e_ms.p99, r.e2e_ms.count);
    std::printf("%-8s            extraction step      p50 %7.1f  p90 %7.1f  p99 %7.1f ms\n", bus.c_str(),
                r.extract_ms.p50, r.extract_ms.p90, r.extract_ms.p99);
    std::printf("%-8s            overhead (e2e - ext) p50 %7.1f  p90 %7.1f  p99 %7.1f ms\n", bus.c_str(),
                r.overhead_ms.p50, r.overhead_ms.p90, r.overhead_ms.p99);
    std::fflush(stdout);
  }
  if (a.raw) {
    if (!broker) throw std::runtime_error("--raw needs the kafka run (message sizes come from its topics)");
    const auto sizes = topic_sizes(broker->bootstrap_servers(), a.images);
    std::printf("raw      message bytes per hop (measured on our topics): %zu, %zu, %zu, %zu\n", sizes[0], sizes[1],
                sizes[2], sizes[3]);
    const double raw = raw_kafka_chain(broker->bootstrap_servers(), a.images, sizes);
    std::printf("raw      librdkafka produce+consume through 4 topics: %.1f messages/s end to end\n", raw);
    for (const auto& [bus, rate] : rates) std::printf("ratio    deeplens %s / raw librdkafka = %.2f\n", bus.c_str(), rate / raw);
  }
  return 0;
}

}  // namespace
}  // namespace deeplens::bench

int main(int argc, char** argv) {
  try {
    return deeplens::bench::run(deeplens::bench::parse(argc, argv));
  } catch (const std::exception& e) {
    std::cerr << "pipeline_throughput: " << e.what() << "\n";
    return 1;
  }
}
