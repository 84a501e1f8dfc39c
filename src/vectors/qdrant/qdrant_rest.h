// The pure parts of talking to Qdrant's REST API: the configuration URL, how DeepLens collections
// map to Qdrant collections and point ids, and the tenant filter. No I/O; thread-safe.
//
// Mapping (the logical collection is collection_name(tenant, model), "tenant_<t>_<m>_vectors"):
//   multitenancy "collection" (default): one Qdrant collection per logical collection, of the same
//     name (the spec's naming); point id = UUIDv5(kPointNamespace, imageId).
//   multitenancy "payload" (Qdrant's guidance for many tenants): one Qdrant collection per model,
//     "deeplens_<m>_vectors", a keyword payload index on tenantId with is_tenant: true; point id =
//     UUIDv5(kPointNamespace, "<tenant>/<imageId>") so that two tenants never share a point.
// Every point carries the payload {imageId, tenantId, modelName} (modelVersion when known), and
// every request that reads or deletes points carries the tenant filter (tenant_filter below) in
// both modes: the handle of a logical collection has no way to build a filter without it.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "common/result.h"

namespace deeplens::qdrant {

enum class Multitenancy { kCollection, kPayload };

// uuid5(NAMESPACE_URL, "urn:deeplens:qdrant:point-id"): the namespace of DeepLens point ids, fixed
// forever (changing it would orphan every stored point).
inline constexpr std::string_view kPointNamespace = "d4598ac5-a58b-51ef-92fc-dfc95fd17279";

// "qdrant+http://HOST:PORT[/prefix]" or "qdrant+https://..." -> "http(s)://HOST:PORT[/prefix]"
// (no trailing '/'); anything else is kInvalidArgument naming the expected form.
Result<std::string> endpoint_of(std::string_view vectors_url);
Result<Multitenancy> parse_multitenancy(std::string_view text);

// RFC 4122 version 5 UUID (SHA-1) of name in the namespace given in canonical text form, lowercase
// canonical text.
std::string uuid_v5(std::string_view namespace_uuid, std::string_view name);

struct Target {
  std::string logical;     // "tenant_<t>_<m>_vectors", what DeepLens calls the collection
  std::string collection;  // the Qdrant collection
  std::string tenant;
  std::string model;
};

// kInvalidArgument for a name that collection_name() does not produce.
Result<Target> target_of(std::string_view logical, Multitenancy mode);
// The Qdrant collection of a model in payload mode ("deeplens_<m>_vectors").
std::string shared_collection(std::string_view model);
// The model of a payload-mode collection name, or empty when name is not one.
std::string model_of_shared(std::string_view name);

std::string point_id(const Target& target, std::string_view image_id, Multitenancy mode);

// {"must": [{"key": "tenantId", "match": {"value": tenant}}, extra...]}; extra is a condition or null.
nlohmann::json tenant_filter(const Target& target, const nlohmann::json& extra = nullptr);
nlohmann::json match(std::string_view key, std::string_view value);

// Qdrant's error text from an error answer ({"status": {"error": "..."}}), or the body's start.
std::string error_text(std::string_view body);

}  // namespace deeplens::qdrant
