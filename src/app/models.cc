#include "app/models.h"

#include <optional>
#include <string>

#include "features/builtin/builtin_descriptor.h"
#include "features/dnn/dnn_extractor.h"
#include "features/model_spec.h"
#include "features/remote/remote_extractor.h"

namespace deeplens::app {
namespace {

std::string table_name(size_t index) { return "models[" + std::to_string(index) + "]"; }

Error in_table(Error e, size_t index, const ModelSpec& spec) {
  e.message = table_name(index) + " (" + spec.name + "): " + e.message;
  auto key = e.context.find("key");
  if (key == e.context.end()) {
    e.context["key"] = table_name(index);
  } else if (!key->second.starts_with("models[")) {
    key->second = table_name(index) + "." + key->second;
  }
  e.context["model"] = spec.name;
  return e;
}

std::string resolve(const std::string& path, const std::filesystem::path& base_dir) {
  if (path.empty() || base_dir.empty() || std::filesystem::path(path).is_absolute()) return path;
  return (base_dir / path).lexically_normal().string();
}

Result<std::unique_ptr<Extractor>> make_builtin(ModelSpec& spec) {
  auto extractor = make_builtin_descriptor();
  if (!extractor) return Error(ErrorCode::kInternal, "the built-in descriptor could not be created");
  const ModelInfo& info = extractor->info();
  if (spec.dimension != 0 && spec.dimension != info.dimension)
    return Error(ErrorCode::kInvalidArgument,
                 "dimension = " + std::to_string(spec.dimension) + " but the built-in descriptor gives " +
                     std::to_string(info.dimension) + " (leave `dimension` out)")
        .with("key", "dimension");
  // The registry keeps a spec that describes what the extractor really is.
  spec.name = info.name;
  spec.version = info.version;
  spec.dimension = info.dimension;
  spec.normalize = info.normalize;
  spec.input_width = info.input_width;
  spec.input_height = info.input_height;
  return std::unique_ptr<Extractor>(std::move(extractor));
}

}  // namespace

Result<std::unique_ptr<ModelRegistry>> build_model_registry(const std::vector<ConfigSection>& models,
                                                            const ModelRegistryOptions& options) {
  // Validate everything before loading anything.
  std::vector<ModelSpec> specs;
  specs.reserve(models.size() + 1);
  std::optional<size_t> default_index;
  for (size_t i = 0; i < models.size(); ++i) {
    auto spec = parse_model_spec(models[i], i);
    if (!spec.ok()) return std::move(spec).error();
    for (size_t j = 0; j < specs.size(); ++j) {
      if (specs[j].name == spec->name)
        return Error(ErrorCode::kInvalidArgument, table_name(i) + ".name: model '" + spec->name +
                                                      "' is already declared by " + table_name(j))
            .with("key", table_name(i) + ".name")
            .with("model", spec->name);
    }
    spec->file = resolve(spec->file, options.base_dir);
    spec->config_file = resolve(spec->config_file, options.base_dir);
    specs.push_back(std::move(*spec));
    if (specs.back().is_default) {
      if (default_index)
        return Error(ErrorCode::kInvalidArgument,
                     table_name(i) + ".default: only one model can be the default; " +
                         table_name(*default_index) + " (" + specs[*default_index].name + ") already is")
            .with("key", table_name(i) + ".default");
      default_index = i;
    }
  }
  const std::string default_name = default_index ? specs[*default_index].name : "";
  bool has_builtin = false;
  for (const auto& s : specs) has_builtin = has_builtin || s.kind == ModelKind::kBuiltin;
  if (!has_builtin) {
    ModelSpec builtin;
    builtin.name = "builtin";
    builtin.kind = ModelKind::kBuiltin;
    builtin.duplicate_threshold = default_duplicate_threshold(ModelKind::kBuiltin);
    specs.push_back(std::move(builtin));
  }

  auto registry = std::make_unique<ModelRegistry>();
  for (size_t i = 0; i < specs.size(); ++i) {
    ModelSpec& spec = specs[i];
    Result<std::unique_ptr<Extractor>> extractor = Error(ErrorCode::kInternal, "unreachable");
    switch (spec.kind) {
      case ModelKind::kDnn: extractor = make_dnn_extractor(spec); break;
      case ModelKind::kRemote: extractor = make_remote_extractor(spec); break;
      case ModelKind::kBuiltin: extractor = make_builtin(spec); break;
    }
    if (!extractor.ok()) {
      // The implicit builtin entry has no table of its own.
      if (i >= models.size()) return std::move(extractor).error();
      return in_table(std::move(extractor).error(), i, spec);
    }
    if (auto st = registry->add(std::move(*extractor), spec); !st) return std::move(st).error();
  }
  if (!default_name.empty()) {
    if (auto st = registry->set_default(default_name); !st) return std::move(st).error();
  }
  return registry;
}

}  // namespace deeplens::app
