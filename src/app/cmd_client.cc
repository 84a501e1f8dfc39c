// The client CLI over the HTTP API: `deeplens upload FILE... [--wait]`, `deeplens status ID`,
// `deeplens search FILE | --image ID`, plus `deeplens routes` (the server's route table, for the
// OpenAPI check). URL and key come from --url/--api-key or DEEPLENS_URL/DEEPLENS_API_KEY.
#include <curl/curl.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include "api/api_service.h"
#include "app/commands.h"

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

  Reply get(const std::string& path) { return perform(path, nullptr, nullptr); }
  Reply post_json(const std::string& path, const std::string& body) { return perform(path, nullptr, &body); }
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
  Reply perform(const std::string& path, curl_mime* mime, const std::string* json_body) {
    Reply r;
    curl_easy_reset(curl_);
    const std::string url = flags_.url + path;
    curl_easy_setopt(curl_, CURLOPT_URL, url.c_str());
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

void progress_bar(size_t done, size_t total, size_t failed) {
  const int width = 30;
  const int filled = total ? static_cast<int>(width * done / total) : width;
  std::cerr << "\r[" << std::string(static_cast<size_t>(filled), '#') << std::string(static_cast<size_t>(width - filled), ' ') << "] "
            << done << "/" << total << (failed ? " (" + std::to_string(failed) + " failed)" : "") << std::flush;
}

int upload(const ClientFlags& flags, const std::vector<std::string>& files, bool wait, const std::string& models) {
  Client client(flags);
  std::vector<std::string> ids;
  size_t failed = 0;
  const bool bar = files.size() > 1;
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
      if (bar) std::cerr << "\n";
      std::cerr << files[i] << ": ";
      const int code = report(r);
      if (code == 3 || code == 4) return code;
      ++failed;
    } else {
      auto j = nlohmann::json::parse(r.body, nullptr, false);
      const std::string id = j.value("imageId", "");
      ids.push_back(id);
      std::cout << id << "\t" << files[i] << (j.value("duplicate", false) ? "\t(duplicate)" : "") << "\n";
    }
    if (bar) progress_bar(i + 1, files.size(), failed);
  }
  if (bar) std::cerr << "\n";
  if (wait) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(10);
    size_t finished = 0, failures = 0;
    std::vector<bool> done(ids.size(), false);
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
            std::cerr << ids[i] << ": failed: " << j.dump() << "\n";
          }
        }
      }
      if (bar) progress_bar(finished, ids.size(), failures);
      if (finished < ids.size()) std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    if (bar) std::cerr << "\n";
    std::cerr << finished - failures << " completed, " << failures << " failed, " << ids.size() - finished << " still processing\n";
    if (failures || finished < ids.size()) return 1;
  }
  return failed ? 1 : 0;
}

}  // namespace

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

  auto id = std::make_shared<std::string>();
  auto* st = root.add_subcommand("status", "Show an image's processing status");
  st->add_option("image_id", *id, "Image id (img_...)")->required();
  add_flags(st);
  st->callback([flags, id, exit_code] {
    Client client(*flags);
    Reply r = client.get("/api/v1/images/" + *id + "/status");
    if (!r.error.empty() || r.status != 200) {
      *exit_code = report(r);
      return;
    }
    std::cout << nlohmann::json::parse(r.body).dump(2) << "\n";
  });

  auto query_file = std::make_shared<std::string>();
  auto by_image = std::make_shared<std::string>();
  auto top_k = std::make_shared<int>(10);
  auto model = std::make_shared<std::string>();
  auto* se = root.add_subcommand("search", "Find visually similar images: by a file, or by an indexed image id");
  se->add_option("file", *query_file, "Query image file")->check(CLI::ExistingFile);
  se->add_option("--image", *by_image, "Search by an indexed image id instead of a file");
  se->add_option("--top-k", *top_k, "Number of results (default 10)");
  se->add_option("--model", *model, "Model (default: the server's default)");
  add_flags(se);
  se->callback([flags, query_file, by_image, top_k, model, exit_code] {
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
    for (const auto& hit : j["results"])
      std::printf("%.4f  %s  %s\n", hit["score"].get<double>(), hit["imageId"].get<std::string>().c_str(),
                  hit.value("fileName", "").c_str());
    if (j["results"].empty()) std::cerr << "no results\n";
  });

  auto* routes = root.add_subcommand("routes", "Print the HTTP API's routes (METHOD PATTERN)");
  routes->group("");  // hidden: used by the OpenAPI conformance test
  routes->callback([] {
    for (const auto& [method, pattern] : api::ApiService::route_table()) std::cout << method << " " << pattern << "\n";
  });
}

}  // namespace deeplens::app
