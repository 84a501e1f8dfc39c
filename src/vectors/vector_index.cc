#include "vectors/vector_index.h"

#include <cmath>

namespace deeplens {
namespace {

char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }
bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

// Callers pass validated slugs and model names, where every character is kept. Anything else (an
// upper-case letter, a '.', a byte outside ASCII) becomes "~" and two hex digits, which no valid
// name contains, so even then two different inputs never share a collection.
std::string escape_name_char(char c, bool underscore_ok) {
  if (is_lower_alnum(c) || c == '-' || (underscore_ok && c == '_')) return std::string(1, c);
  static constexpr char kHex[] = "0123456789abcdef";
  const auto b = static_cast<unsigned char>(c);
  return std::string{'~', kHex[b >> 4], kHex[b & 0xf]};
}

}  // namespace

Status VectorIndex::validate_batch(std::span<const VectorUpsert> batch) const {
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
  return ok_status();
}

Status VectorIndex::upsert_batch(std::span<const VectorUpsert> batch) {
  // Validate everything first so that a bad element rejects the batch without partial effects.
  if (auto st = validate_batch(batch); !st) return st;
  for (const auto& item : batch) {
    if (Status s = upsert_with_version(item.id, item.vector, item.model_version); !s.ok()) return s;
  }
  return ok_status();
}

std::string collection_name(std::string_view tenant_id, std::string_view model_name) {
  // Tenant slugs are [a-z0-9-] and hold no '_', so the tenant ends at the first '_' after the
  // prefix and the model (which may hold '_') is what remains before "_vectors": keeping every
  // character, '-' included, makes the name injective in (tenant, model).
  std::string out = "tenant_";
  for (char c : tenant_id) out += escape_name_char(c, false);
  out += '_';
  for (char c : model_name) out += escape_name_char(c, true);
  out += "_vectors";
  return out;
}

std::string legacy_collection_name(std::string_view tenant_id, std::string_view model_name) {
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
