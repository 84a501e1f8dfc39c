// The client CLI over the HTTP API: `deeplens upload FILE... [--wait]` (waits on the WebSocket,
// polling status if it cannot connect), `deeplens watch [IMAGE_ID...]`, `deeplens status ID`,
// `deeplens search FILE | --image ID`, plus `deeplens routes` (the server's route table, for the
// OpenAPI check). URL and key come from --url/--api-key or DEEPLENS_URL/DEEPLENS_API_KEY.
#include <curl/curl.h>

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <functional>
#include <sstream>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "api/api_service.h"
#include "app/commands.h"
#include "app/ws_client.h"

namespace deeplens::app {

namespace {

struct ClientFlags {
  std::string url;
  std::string key;
};

struct Reply {
  long status = 0;
  std::string body;
  std::string error;  // transport error
};

size_t collect(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

class Client {
 public:
  explicit Client(const ClientFlags& f) : flags_(f) {
    if (flags_.url.empty()) flags_.url = std::getenv("DEEPLENS_URL") ? std::getenv("DEEPLENS_URL") : "http://127.0.0.1:8080";
    if (flags_.key.empty() && std::getenv("DEEPLENS_API_KEY")) flags_.key = std::getenv("DEEPLENS_API_KEY");
    while (!flags_.url.empty() && flags_.url.back() == '/') flags_.url.pop_back();
    curl_ = curl_easy_init();
  }
  ~Client() { curl_easy_cleanup(curl_); }
  const ClientFlags& flags() const { return flags_; }

  Reply get(const std::string& path) { return perform(path, nullptr, nullptr); }
  Reply post_json(const std::string& path, const std::string& body) { return perform(path, nullptr, &body); }
  // Any method, with an optional JSON body.
  Reply send(const std::string& method, const std::string& path, const std::string* json_body = nullptr) {
    return perform(path, nullptr, json_body, method);
  }
  Reply post_file(const std::string& path, const std::string& file, const std::vector<std::pair<std::string, std::string>>& fields) {
    curl_mime* mime = curl_mime_init(curl_);
    curl_mimepart* part = curl_mime_addpart(mime);
    curl_mime_name(part, "file");
    curl_mime_filedata(part, file.c_str());
    for (const auto& [k, v] : fields) {
      part = curl_mime_addpart(mime);
      curl_mime_name(part, k.c_str());
      curl_mime_data(part, v.c_str(), CURL_ZERO_TERMINATED);
    }
    Reply r = perform(path, mime, nullptr);
    curl_mime_free(mime);
    return r;
  }
  bool has_key() const { return !flags_.key.empty(); }

 private:
  Reply perform(const std::string& path, curl_mime* mime, const std::string* json_body,
                const std::string& method = {}) {
    Reply r;
    curl_easy_reset(curl_);
    const std::string url = flags_.url + path;
    curl_easy_setopt(curl_, CURLOPT_URL, url.c_str());
    if (!method.empty()) curl_easy_setopt(curl_, CURLOPT_CUSTOMREQUEST, method.c_str());
    if (method == "POST" && !json_body) curl_easy_setopt(curl_, CURLOPT_POSTFIELDS, "");
    curl_easy_setopt(curl_, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl_, CURLOPT_WRITEDATA, &r.body);
    curl_easy_setopt(curl_, CURLOPT_TIMEOUT, 120L);
    struct curl_slist* headers = nullptr;
    const std::string auth = "Authorization: Bearer " + flags_.key;
    if (!flags_.key.empty()) headers = curl_slist_append(headers, auth.c_str());
    headers = curl_slist_append(headers, "Expect:");
    if (json_body) {
      headers = curl_slist_append(headers, "Content-Type: application/json");
      curl_easy_setopt(curl_, CURLOPT_POSTFIELDS, json_body->c_str());
    }
    if (mime) curl_easy_setopt(curl_, CURLOPT_MIMEPOST, mime);
    curl_easy_setopt(curl_, CURLOPT_HTTPHEADER, headers);
    const CURLcode rc = curl_easy_perform(curl_);
    if (rc != CURLE_OK) r.error = std::string(curl_easy_strerror(rc)) + " (" + url + ")";
    curl_easy_getinfo(curl_, CURLINFO_RESPONSE_CODE, &r.status);
    curl_slist_free_all(headers);
    return r;
  }

  ClientFlags flags_;
  CURL* curl_;
};

// Prints an error reply; returns the exit code for it.
int report(const Reply& r) {
  if (!r.error.empty()) {
    std::cerr << "error: cannot reach DeepLens: " << r.error << " (is `deeplens serve` running? set --url or DEEPLENS_URL)\n";
    return 3;
  }
  auto j = nlohmann::json::parse(r.body, nullptr, false);
  if (!j.is_discarded() && j.contains("error"))
    std::cerr << "error: HTTP " << r.status << " " << j["error"].value("code", "") << ": " << j["error"].value("message", "") << "\n";
  else
    std::cerr << "error: HTTP " << r.status << ": " << r.body << "\n";
  return r.status == 401 ? 4 : 1;
}

// A progress bar on the terminal's last line (stderr). Lines printed while it shows go above it:
// say() erases the bar, prints the line, draws the bar again, so a file's line never shares the
// bar's line. Off a terminal (a pipe, a log file) no bar is drawn, only "N/M" once at the end.
class ProgressBar {
 public:
  explicit ProgressBar(bool wanted) : tty_(wanted && ::isatty(STDERR_FILENO)), wanted_(wanted) {}
  void update(size_t done, size_t total, size_t failed) {
    done_ = done, total_ = total, failed_ = failed;
    if (tty_) draw();
  }
  // One line on stdout (or stderr), above the bar.
  void say(std::ostream& out, const std::string& line) {
    erase();
    out << line << "\n" << std::flush;
    if (tty_ && total_) draw();
  }
  // Leaves the final count on a line of its own.
  void finish() {
    if (!wanted_ || !total_) return;
    erase();
    std::cerr << text() << "\n" << std::flush;
    total_ = 0;
  }

 private:
  std::string text() const {
    const int width = 30;
    const int filled = total_ ? static_cast<int>(width * done_ / total_) : width;
    return "[" + std::string(static_cast<size_t>(filled), '#') + std::string(static_cast<size_t>(width - filled), ' ') + "] " +
           std::to_string(done_) + "/" + std::to_string(total_) + (failed_ ? " (" + std::to_string(failed_) + " failed)" : "");
  }
  void draw() {
    std::cerr << "\r" << text() << std::flush;
    shown_ = true;
  }
  void erase() {
    if (!shown_) return;
    std::cerr << "\r\033[K" << std::flush;
    shown_ = false;
  }
  const bool tty_, wanted_;
  bool shown_ = false;
  size_t done_ = 0, total_ = 0, failed_ = 0;
};

// Final states pushed over the WebSocket, collected by a reader thread while the uploads go on
// (subscribed to the whole tenant before the first upload, so nothing is missed).
class CompletionWatcher {
 public:
  static std::unique_ptr<CompletionWatcher> open(const ClientFlags& flags) {
    auto ws = WsClient::connect(flags.url, flags.key);
    if (!ws) return nullptr;
    if (!(*ws)->send(R"({"type":"subscribe","id":1,"topic":"tenant"})")) return nullptr;
    auto reply = (*ws)->read();  // "subscribed" (or an error: then poll)
    if (!reply || nlohmann::json::parse(*reply, nullptr, false).value("type", "") != "subscribed") return nullptr;
    std::unique_ptr<CompletionWatcher> w(new CompletionWatcher());
    w->ws_ = std::move(ws).value();
    w->reader_ = std::thread([raw = w.get()] { raw->run(); });
    return w;
  }
  ~CompletionWatcher() {
    ws_->close();
    if (reader_.joinable()) reader_.join();
  }
  // Waits until id is final (true; *status set) or the connection broke / deadline (false).
  bool wait_for(const std::string& id, std::chrono::steady_clock::time_point deadline, std::string* status,
                std::string* detail) {
    std::unique_lock lock(mu_);
    cv_.wait_until(lock, deadline, [&] { return broken_ || final_.count(id); });
    auto it = final_.find(id);
    if (it == final_.end()) return false;
    *status = it->second.first;
    *detail = it->second.second;
    return true;
  }

 private:
  CompletionWatcher() = default;
  void run() {
    while (true) {
      auto text = ws_->read();
      std::lock_guard lock(mu_);
      if (!text) {
        broken_ = true;
        cv_.notify_all();
        return;
      }
      auto m = nlohmann::json::parse(*text, nullptr, false);
      if (m.is_discarded() || m.value("type", "") != "event" || m.value("event", "") != "StatusChanged") continue;
      const auto& d = m["data"];
      const std::string status = d.value("status", "");
      if (status == "completed" || status == "failed") {
        final_[d.value("imageId", "")] = {status, d.dump()};
        cv_.notify_all();
      }
    }
  }
  std::unique_ptr<WsClient> ws_;
  std::thread reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::pair<std::string, std::string>> final_;
  bool broken_ = false;
};

int upload(const ClientFlags& flags, const std::vector<std::string>& files, bool wait, const std::string& models) {
  Client client(flags);
  std::unique_ptr<CompletionWatcher> watcher;
  if (wait) {
    watcher = CompletionWatcher::open(client.flags());
    if (!watcher) std::cerr << "note: no WebSocket; waiting by polling status\n";
  }
  std::vector<std::string> ids;
  size_t failed = 0;
  ProgressBar bar(files.size() > 1);
  std::vector<std::pair<std::string, std::string>> fields;
  if (!models.empty()) {
    nlohmann::json m = nlohmann::json::array();
    std::stringstream in(models);
    std::string item;
    while (std::getline(in, item, ',')) m.push_back(item);
    fields.emplace_back("processingOptions", nlohmann::json{{"models", m}}.dump());
  }
  for (size_t i = 0; i < files.size(); ++i) {
    Reply r = client.post_file("/api/v1/images/upload", files[i], fields);
    if (!r.error.empty() || (r.status != 202 && r.status != 200)) {
      bar.say(std::cerr, files[i] + ":");
      const int code = report(r);
      if (code == 3 || code == 4) return code;
      ++failed;
    } else {
      auto j = nlohmann::json::parse(r.body, nullptr, false);
      const std::string id = j.value("imageId", "");
      ids.push_back(id);
      bar.say(std::cout, id + "\t" + files[i] + (j.value("duplicate", false) ? "\t(duplicate)" : ""));
    }
    bar.update(i + 1, files.size(), failed);
  }
  bar.finish();
  if (wait) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(10);
    size_t finished = 0, failures = 0;
    std::vector<bool> done(ids.size(), false);
    bar.update(0, ids.size(), 0);
    if (watcher) {
      for (size_t i = 0; i < ids.size(); ++i) {
        std::string status, detail;
        if (!watcher->wait_for(ids[i], deadline, &status, &detail)) break;  // broken: poll the rest
        done[i] = true;
        ++finished;
        if (status == "failed") {
          ++failures;
          bar.say(std::cerr, ids[i] + ": failed: " + detail);
        }
        bar.update(finished, ids.size(), failures);
      }
    }
    while (finished < ids.size() && std::chrono::steady_clock::now() < deadline) {
      for (size_t i = 0; i < ids.size(); ++i) {
        if (done[i]) continue;
        Reply r = client.get("/api/v1/images/" + ids[i] + "/status");
        auto j = nlohmann::json::parse(r.body, nullptr, false);
        const std::string status = j.is_discarded() ? "" : j.value("status", "");
        if (status == "completed" || status == "failed") {
          done[i] = true;
          ++finished;
          if (status == "failed") {
            ++failures;
            bar.say(std::cerr, ids[i] + ": failed: " + j.dump());
          }
        }
      }
      bar.update(finished, ids.size(), failures);
      if (finished < ids.size()) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    bar.finish();
    std::cerr << finished - failures << " completed, " << failures << " failed, " << ids.size() - finished << " still processing\n";
    if (failures || finished < ids.size()) return 1;
  }
  return failed ? 1 : 0;
}

// `deeplens watch [ID...]`: one line per event; with ids, until each is completed or failed.
int watch(const ClientFlags& f, const std::vector<std::string>& ids) {
  Client client(f);  // resolves --url / --api-key from the environment
  auto ws = WsClient::connect(client.flags().url, client.flags().key);
  if (!ws) {
    std::cerr << "error: " << ws.error().message << "\n";
    return 3;
  }
  if (ids.empty()) {
    (void)(*ws)->send(R"({"type":"subscribe","id":0,"topic":"tenant"})");
  } else {
    for (size_t i = 0; i < ids.size(); ++i)
      (void)(*ws)->send(nlohmann::json{{"type", "subscribe"}, {"id", i}, {"topic", "image:" + ids[i]}}.dump());
  }
  std::set<std::string> pending(ids.begin(), ids.end());
  while (true) {
    auto text = (*ws)->read();
    if (!text) {
      std::cerr << "error: " << text.error().message << "\n";
      return 1;
    }
    auto m = nlohmann::json::parse(*text, nullptr, false);
    const std::string type = m.is_discarded() ? "" : m.value("type", "");
    if (type == "error") {
      std::cerr << "error: " << m["error"].value("code", "") << ": " << m["error"].value("message", "") << "\n";
      if (m.contains("id") && m["id"].is_number_unsigned() && m["id"].get<size_t>() < ids.size())
        pending.erase(ids[m["id"].get<size_t>()]);
      if (!ids.empty() && pending.empty()) return 1;
      continue;
    }
    if (type != "event") continue;
    const std::string event = m.value("event", "");
    const auto& d = m["data"];
    std::string image, what;
    if (event == "StatusChanged") {
      image = d.value("imageId", "");
      what = d.value("status", "") + "\t" + d.value("transition", "");
      if (d.contains("step")) what += " " + d.value("step", "");
      if (d.contains("modelName")) what += " (" + d.value("modelName", "") + ")";
    } else {
      image = d.contains("data") ? d["data"].value("imageId", "") : "";
      what = d.value("eventType", "");
    }
    std::cout << m.value("seq", uint64_t{0}) << "\t" << event << "\t" << image << "\t" << what << std::endl;
    if (event == "StatusChanged" && (d.value("status", "") == "completed" || d.value("status", "") == "failed")) {
      pending.erase(image);
      if (!ids.empty() && pending.empty()) return 0;
    }
  }
}

}  // namespace

// `deeplens webhooks ...`: the /api/v1/webhooks routes from the command line.
static void register_webhook_commands(CLI::App& root, const std::shared_ptr<ClientFlags>& flags,
                               const std::function<void(CLI::App*)>& add_flags, int* exit_code) {
  auto* wh = root.add_subcommand("webhooks", "Manage webhook endpoints and read their delivery logs");
  wh->require_subcommand(1);
  // Runs one request and prints the JSON answer (or the error); `ok` is the expected status.
  auto run = [flags, exit_code](const std::string& method, const std::string& path, const nlohmann::json* body,
                                long ok) {
    Client client(*flags);
    const std::string text = body ? body->dump() : std::string();
    Reply r = client.send(method, path, body ? &text : nullptr);
    if (!r.error.empty() || r.status != ok) {
      *exit_code = report(r);
      return;
    }
    if (!r.body.empty()) std::cout << nlohmann::json::parse(r.body, nullptr, false).dump(2) << "\n";
  };
  auto split = [](const std::string& list) {
    std::vector<std::string> out;
    std::stringstream in(list);
    for (std::string item; std::getline(in, item, ',');)
      if (!item.empty()) out.push_back(item);
    return out;
  };

  auto url = std::make_shared<std::string>();
  auto events = std::make_shared<std::string>("processing.completed,processing.failed");
  auto description = std::make_shared<std::string>();
  auto* create = wh->add_subcommand("create", "Register an endpoint; prints its secret (shown once)");
  create->add_option("endpoint_url", *url, "Where to POST events (http or https)")->required();
  create->add_option("--events", *events,
                     "Comma-separated: image.uploaded, processing.completed, processing.failed, image.deleted "
                     "(default processing.completed,processing.failed)");
  create->add_option("--description", *description, "A label for people");
  add_flags(create);
  create->callback([run, split, url, events, description] {
    nlohmann::json body{{"url", *url}, {"events", split(*events)}};
    if (!description->empty()) body["description"] = *description;
    run("POST", "/api/v1/webhooks", &body, 201);
  });

  auto* list = wh->add_subcommand("list", "List this tenant's endpoints");
  add_flags(list);
  list->callback([run] { run("GET", "/api/v1/webhooks", nullptr, 200); });

  auto id = std::make_shared<std::string>();
  auto* show = wh->add_subcommand("show", "Show one endpoint");
  show->add_option("id", *id, "Webhook id (wh_...)")->required();
  add_flags(show);
  show->callback([run, id] { run("GET", "/api/v1/webhooks/" + *id, nullptr, 200); });

  auto new_url = std::make_shared<std::string>();
  auto new_events = std::make_shared<std::string>();
  auto enable = std::make_shared<bool>(false);
  auto disable = std::make_shared<bool>(false);
  auto* update = wh->add_subcommand("update", "Change an endpoint's url or events, or enable/disable it");
  update->add_option("id", *id, "Webhook id (wh_...)")->required();
  update->add_option("--endpoint-url", *new_url, "New endpoint url");
  update->add_option("--events", *new_events, "New comma-separated event types");
  update->add_flag("--enable", *enable, "Enable (also after DeepLens disabled it)");
  update->add_flag("--disable", *disable, "Disable: nothing is sent until enabled");
  add_flags(update);
  update->callback([run, split, id, new_url, new_events, enable, disable, exit_code] {
    nlohmann::json body = nlohmann::json::object();
    if (!new_url->empty()) body["url"] = *new_url;
    if (!new_events->empty()) body["events"] = split(*new_events);
    if (*enable && *disable) {
      std::cerr << "error: --enable or --disable, not both\n";
      *exit_code = 2;
      return;
    }
    if (*enable || *disable) body["enabled"] = *enable;
    run("PATCH", "/api/v1/webhooks/" + *id, &body, 200);
  });

  auto* del = wh->add_subcommand("delete", "Delete an endpoint and its delivery log");
  del->add_option("id", *id, "Webhook id (wh_...)")->required();
  add_flags(del);
  del->callback([run, id] { run("DELETE", "/api/v1/webhooks/" + *id, nullptr, 204); });

  auto overlap = std::make_shared<int64_t>(-1);
  auto* rotate = wh->add_subcommand("rotate-secret", "New secret; the old one also signs for the overlap");
  rotate->add_option("id", *id, "Webhook id (wh_...)")->required();
  rotate->add_option("--overlap", *overlap, "Seconds the old secret keeps signing (default webhooks.secret_overlap_s)");
  add_flags(rotate);
  rotate->callback([run, id, overlap] {
    nlohmann::json body = nlohmann::json::object();
    if (*overlap >= 0) body["overlapSeconds"] = *overlap;
    run("POST", "/api/v1/webhooks/" + *id + "/rotate-secret", &body, 200);
  });

  auto* test = wh->add_subcommand("test", "Send a webhook.test event");
  test->add_option("id", *id, "Webhook id (wh_...)")->required();
  add_flags(test);
  test->callback([run, id] { run("POST", "/api/v1/webhooks/" + *id + "/test", nullptr, 202); });

  auto status = std::make_shared<std::string>();
  auto limit = std::make_shared<int>(20);
  auto* deliveries = wh->add_subcommand("deliveries", "The delivery log of an endpoint, newest first");
  deliveries->add_option("id", *id, "Webhook id (wh_...)")->required();
  deliveries->add_option("--status", *status, "pending, succeeded or failed");
  deliveries->add_option("--limit", *limit, "How many (default 20)");
  add_flags(deliveries);
  deliveries->callback([run, id, status, limit] {
    std::string path = "/api/v1/webhooks/" + *id + "/deliveries?limit=" + std::to_string(*limit);
    if (!status->empty()) path += "&status=" + *status;
    run("GET", path, nullptr, 200);
  });

  auto delivery = std::make_shared<std::string>();
  auto* redeliver = wh->add_subcommand("redeliver", "Send a delivery again (same webhook-id)");
  redeliver->add_option("id", *id, "Webhook id (wh_...)")->required();
  redeliver->add_option("delivery_id", *delivery, "Delivery id (msg_...)")->required();
  add_flags(redeliver);
  redeliver->callback([run, id, delivery] {
    run("POST", "/api/v1/webhooks/" + *id + "/deliveries/" + *delivery + "/redeliver", nullptr, 202);
  });
}

void register_client_commands(CLI::App& root, int* exit_code) {
  auto flags = std::make_shared<ClientFlags>();
  auto add_flags = [flags](CLI::App* cmd) {
    cmd->add_option("--url", flags->url, "DeepLens URL (or DEEPLENS_URL; default http://127.0.0.1:8080)");
    cmd->add_option("--api-key", flags->key, "API key (or DEEPLENS_API_KEY)");
  };

  auto files = std::make_shared<std::vector<std::string>>();
  auto wait = std::make_shared<bool>(false);
  auto models = std::make_shared<std::string>();
  auto* up = root.add_subcommand("upload", "Upload images (client of a running server)");
  up->add_option("files", *files, "Image files")->required()->check(CLI::ExistingFile);
  up->add_flag("--wait", *wait, "Wait until every image is completed or failed");
  up->add_option("--models", *models, "Comma-separated models (default: the server's default model)");
  add_flags(up);
  up->callback([flags, files, wait, models, exit_code] { *exit_code = upload(*flags, *files, *wait, *models); });

  auto watch_ids = std::make_shared<std::vector<std::string>>();
  auto* wa = root.add_subcommand("watch", "Print real-time events: of the given images until each finishes, else the whole tenant's");
  wa->add_option("image_ids", *watch_ids, "Image ids (img_...); none = every image of the tenant, until Ctrl-C");
  add_flags(wa);
  wa->callback([flags, watch_ids, exit_code] { *exit_code = watch(*flags, *watch_ids); });

  auto id = std::make_shared<std::string>();
  auto status_json = std::make_shared<bool>(false);
  auto* st = root.add_subcommand("status", "Show an image's processing status");
  st->add_option("image_id", *id, "Image id (img_...)")->required();
  st->add_flag("--json", *status_json, "Print the API's JSON (the spec's status fields) instead of a summary");
  add_flags(st);
  st->callback([flags, id, status_json, exit_code] {
    Client client(*flags);
    Reply r = client.get("/api/v1/images/" + *id + "/status");
    if (!r.error.empty() || r.status != 200) {
      *exit_code = report(r);
      return;
    }
    const auto j = nlohmann::json::parse(r.body);
    if (*status_json) {
      std::cout << j.dump() << "\n";
      return;
    }
    std::cout << j.value("imageId", "") << "  " << j.value("status", "") << "  (priority " << j.value("priority", "normal")
              << ")\n";
    for (const auto& step : j["processingSteps"]) {
      std::cout << "  " << step.value("step", "") << "  " << step.value("modelName", "") << "  " << step.value("status", "");
      if (step.contains("duration")) std::cout << "  " << step["duration"].get<int64_t>() << " ms";
      if (step.value("attempts", 1) > 1) std::cout << "  attempts " << step["attempts"].get<int>();
      if (step.contains("lastError")) std::cout << "  last error: " << step.value("lastError", "");
      std::cout << "\n";
    }
    if (j.contains("error") && j["error"].is_object())
      std::cout << "  error: " << j["error"].value("code", "") << ": " << j["error"].value("message", "") << "\n";
    if (j.contains("searchableAfter") && j["searchableAfter"].is_string())
      std::cout << "  searchable since " << j["searchableAfter"].get<std::string>() << "\n";
    else if (j.contains("estimatedTimeRemaining") && j["estimatedTimeRemaining"].is_number())
      std::cout << "  about " << j["estimatedTimeRemaining"].get<int64_t>() << " ms to go\n";
  });

  auto query_file = std::make_shared<std::string>();
  auto by_image = std::make_shared<std::string>();
  auto top_k = std::make_shared<int>(10);
  auto model = std::make_shared<std::string>();
  auto search_json = std::make_shared<bool>(false);
  auto* se = root.add_subcommand("search", "Find visually similar images: by a file, or by an indexed image id");
  se->add_option("file", *query_file, "Query image file")->check(CLI::ExistingFile);
  se->add_option("--image", *by_image, "Search by an indexed image id instead of a file");
  se->add_option("--top-k", *top_k, "Number of results (default 10)");
  se->add_option("--model", *model, "Model (default: the server's default)");
  se->add_flag("--json", *search_json, "Print the API's JSON answer instead of score / id / file lines");
  add_flags(se);
  se->callback([flags, query_file, by_image, top_k, model, search_json, exit_code] {
    if (query_file->empty() == by_image->empty()) {
      std::cerr << "error: give a query FILE or --image ID (one of them)\n";
      *exit_code = 2;
      return;
    }
    Client client(*flags);
    Reply r;
    if (!by_image->empty()) {
      nlohmann::json body{{"imageId", *by_image}, {"topK", *top_k}};
      if (!model->empty()) body["model"] = *model;
      r = client.post_json("/api/v1/search", body.dump());
    } else {
      std::vector<std::pair<std::string, std::string>> fields{{"topK", std::to_string(*top_k)}};
      if (!model->empty()) fields.emplace_back("model", *model);
      r = client.post_file("/api/v1/search", *query_file, fields);
    }
    if (!r.error.empty() || r.status != 200) {
      *exit_code = report(r);
      return;
    }
    auto j = nlohmann::json::parse(r.body);
    if (*search_json) {
      std::cout << j.dump() << "\n";
      return;
    }
    for (const auto& hit : j["results"])
      std::printf("%.4f  %s  %s\n", hit["score"].get<double>(), hit["imageId"].get<std::string>().c_str(),
                  hit.value("fileName", "").c_str());
    if (j["results"].empty()) std::cerr << "no results\n";
  });

  register_webhook_commands(root, flags, add_flags, exit_code);

  auto* routes = root.add_subcommand("routes", "Print the HTTP API's routes (METHOD PATTERN)");
  routes->group("");  // hidden: used by the OpenAPI conformance test
  routes->callback([] {
    for (const auto& [method, pattern] : api::ApiService::route_table()) std::cout << method << " " << pattern << "\n";
  });
}

}  // namespace deeplens::app
