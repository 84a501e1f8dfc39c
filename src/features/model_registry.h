// ModelRegistry: the extractors this process can run, by model name, plus which one serves
// requests that name no model. Built once at start-up by app/ (build_model_registry), which is the
// only code that knows the Extractor implementations; everything else looks models up here.
//
// Ownership: the registry owns its extractors; pointers from find() stay valid for the registry's
// lifetime.
// Thread-safety: add() and set_default() are for construction only (one thread, before the
// registry is shared). After that the registry is immutable and every const method is safe from
// any number of threads; the Extractor objects themselves are thread-safe (extractor.h).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "features/extractor.h"
#include "features/model_spec.h"

namespace deeplens {

class ModelRegistry {
 public:
  ModelRegistry() = default;
  ModelRegistry(const ModelRegistry&) = delete;
  ModelRegistry& operator=(const ModelRegistry&) = delete;

  // Registers an extractor under extractor->info().name, with the spec it was built from (kept for
  // batch_size and the like). kAlreadyExists when the name is taken; kInvalidArgument when the
  // spec names another model. The first model added becomes the default until set_default().
  Status add(std::unique_ptr<Extractor> extractor, ModelSpec spec);

  // kNotFound unless the model was added.
  Status set_default(std::string_view name);

  // The extractor for `name`, or nullptr when no such model is registered.
  Extractor* find(std::string_view name) const;

  // The spec `name` was registered with, or nullptr.
  const ModelSpec* spec(std::string_view name) const;

  // Registered names in registration order.
  std::vector<std::string> names() const;

  // The model for requests that name none; "" when the registry is empty.
  const std::string& default_model() const { return default_; }

  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    std::string name;
    std::unique_ptr<Extractor> extractor;
    ModelSpec spec;
  };
  const Entry* entry(std::string_view name) const;

  std::vector<Entry> entries_;  // few models: a linear scan beats a map
  std::string default_;
};

}  // namespace deeplens
