#include "features/model_registry.h"

namespace deeplens {

Status ModelRegistry::add(std::unique_ptr<Extractor> extractor, ModelSpec spec) {
  if (!extractor) return Error(ErrorCode::kInternal, "ModelRegistry::add: null extractor");
  const std::string name = extractor->info().name;
  if (name != spec.name)
    return Error(ErrorCode::kInvalidArgument,
                 "extractor '" + name + "' registered with the spec of model '" + spec.name + "'")
        .with("model", name);
  if (entry(name))
    return Error(ErrorCode::kAlreadyExists,
                 "model '" + name + "' is declared twice; every [[models]] name must be unique")
        .with("model", name);
  entries_.push_back(Entry{name, std::move(extractor), std::move(spec)});
  if (default_.empty()) default_ = name;
  return ok_status();
}

Status ModelRegistry::set_default(std::string_view name) {
  if (!entry(name))
    return Error(ErrorCode::kNotFound, "default model '" + std::string(name) + "' is not registered")
        .with("model", std::string(name));
  default_ = std::string(name);
  return ok_status();
}

const ModelRegistry::Entry* ModelRegistry::entry(std::string_view name) const {
  for (const auto& e : entries_)
    if (e.name == name) return &e;
  return nullptr;
}

Extractor* ModelRegistry::find(std::string_view name) const {
  const Entry* e = entry(name);
  return e ? e->extractor.get() : nullptr;
}

const ModelSpec* ModelRegistry::spec(std::string_view name) const {
  const Entry* e = entry(name);
  return e ? &e->spec : nullptr;
}

std::vector<std::string> ModelRegistry::names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& e : entries_) out.push_back(e.name);
  return out;
}

}  // namespace deeplens
