// Fuzzes the event codec (events/codec.h) with arbitrary bytes as an event's JSON text.
// Invariants, for every event type:
//  - decode_any and the typed decoder of the named eventType agree (both fail, or both give the
//    same value); the other typed decoders refuse it;
//  - a refusal names the JSON path in its "field" context, as codec.h promises;
//  - what decodes re-encodes to JSON that decodes to an equal value, and that encoding is a fixed
//    point (decode(encode(decode(x))) == decode(x), encode of both the same text);
//  - a decoded event's ids have the spec's shape and its tenantId is not empty.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/ids.h"
#include "events/codec.h"
#include "fuzz_check.h"

namespace {

using namespace deeplens;

template <typename T>
void check_refusal(const Result<T>& r) {
  if (r) return;
  const auto field = r.error().context.find("field");
  FUZZ_CHECK(field != r.error().context.end() && !field->second.empty(), r.error().to_string().c_str());
}

// The typed decoder for index i of AnyEvent, as an AnyEvent.
Result<AnyEvent> decode_typed(size_t i, std::string_view text) {
  auto wrap = [](auto r) -> Result<AnyEvent> {
    check_refusal(r);
    if (!r) return std::move(r).error();
    return AnyEvent(std::move(r).value());
  };
  switch (i) {
    case 0: return wrap(decode_image_uploaded(text));
    case 1: return wrap(decode_feature_extraction_requested(text));
    case 2: return wrap(decode_vector_indexing_requested(text));
    case 3: return wrap(decode_processing_completed(text));
    default: return wrap(decode_processing_failed(text));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto any = decode_any(text);
  check_refusal(any);

  for (size_t i = 0; i < std::variant_size_v<AnyEvent>; ++i) {
    const auto typed = decode_typed(i, text);
    if (any && any->index() == i) {
      FUZZ_CHECK(typed, "the typed decoder refuses what decode_any accepts");
      FUZZ_CHECK(*typed == *any, "the typed decoder and decode_any disagree");
    } else {
      FUZZ_CHECK(!typed, "a typed decoder accepts what decode_any does not give as that type");
    }
  }
  if (!any) return 0;

  const auto& env = envelope(*any);
  FUZZ_CHECK(is_event_id(env.event_id), "eventId");
  FUZZ_CHECK(!env.correlation_id || is_event_id(*env.correlation_id), "correlationId");
  FUZZ_CHECK(!env.tenant_id.empty(), "tenantId");
  FUZZ_CHECK(is_image_id(image_id(*any)), "imageId");

  const std::string once = encode(*any);
  const auto again = decode_any(once);
  FUZZ_CHECK(again, (again ? "" : ("re-encoded event does not decode: " + again.error().to_string() + "\n" + once).c_str()));
  FUZZ_CHECK(*again == *any, ("decode(encode(e)) != e: " + once).c_str());
  FUZZ_CHECK(event_type(*again) == event_type(*any), "event type changed");
  FUZZ_CHECK(encode(*again) == once, "encoding is not a fixed point");
  return 0;
}
