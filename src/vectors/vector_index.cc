#include "vectors/vector_index.h"

#include <cmath>

namespace deeplens {
namespace {

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }
bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

}  // namespace

Status VectorIndex::upsert_batch(std::span<const VectorUpsert> batch) {
  // Validate everything first so that a bad element rejects the batch without partial effects.
  for (const auto& item : batch) {
    if (item.id.empty()) {
      return Error(ErrorCode::kInvalidArgument, "vector id is empty").with("collection", name());
    }
    for (float x : item.vector) {
      if (!std::isfinite(x)) {
        return Error(ErrorCode::kInvalidArgument, "vector contains NaN or Inf")
            .with("collection", name())
            .with("id", std::string(item.id));
      }
    }
    if (item.vector.size() != dimension()) {
      return Error(ErrorCode::kInvalidArgument, "vector has the wrong dimension for this collection")
          .with("collection", name())
          .with("id", std::string(item.id))
          .with("dimension", std::to_string(item.vector.size()))
          .with("expected", std::to_string(dimension()));
    }
  }
  for (const auto& item : batch) {
    if (Status s = upsert(item.id, item.vector); !s.ok()) return s;
  }
  return ok_status();
}

std::string collection_name(std::string_view tenant_id, std::string_view model_name) {
  std::string out = "tenant_";
  for (char c : tenant_id) {
    c = ascii_lower(c);
    if (is_lower_alnum(c)) out += c;
  }
  out += '_';
  for (char c : model_name) {
    c = ascii_lower(c);
    out += (is_lower_alnum(c) || c == '_') ? c : '_';
  }
  out += "_vectors";
  return out;
}

}  // namespace deeplens
