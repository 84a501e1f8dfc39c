// Prints, as JSON Lines, what the encoder writes for every event type: once with every optional
// field set and once with none. check_schemas.sh validates the output against schemas/.
#include <iostream>

#include "common/clock.h"
#include "events/codec.h"
#include "events/topics.h"

using namespace deeplens;

int main() {
  const Timestamp t = *parse_iso8601("2026-03-04T05:06:07.089Z");
  const EventEnvelope root{"evt_0b0c6a0e-1d7c-4b8e-9f3a-2c1d0e9f8a7b", t, "acme-corp", std::nullopt};
  EventEnvelope child{"evt_1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f", t, "acme-corp", root.event_id};
  const std::string image = "img_2f1e0d9c-8b7a-4654-a321-0fedcba98765";

  ImageUploadedEvent full_up;
  full_up.envelope = root;
  full_up.data = {image, "cat.jpg", "/data/tenant-acme-corp/images/2026/03/04/" + image + ".jpg",
                  12345, "image/jpeg", "user_1",
                  {640, 480, "JPEG", "srgb", "cat.jpg"},
                  {"local", "/data", "tenant-acme-corp/images/2026/03/04/" + image + ".jpg"}};
  full_up.processing_options = {{"builtin", "mobilenet_v2"}, Priority::kHigh, false, true};
  ImageUploadedEvent min_up = full_up;
  min_up.data.uploaded_by.reset();
  min_up.data.metadata.color_profile.reset();
  min_up.data.metadata.original_file_name.reset();
  min_up.data.storage_provider = {"local", std::nullopt, std::nullopt};
  min_up.processing_options = {{"builtin"}, std::nullopt, std::nullopt, std::nullopt};

  FeatureExtractionRequestedEvent full_fx;
  full_fx.envelope = child;
  full_fx.data = {image, full_up.data.file_path, "mobilenet_v2", "1.0", 1280,
                  ExtractionOptions{true, true, 30}, Priority::kHigh};
  full_fx.retry_policy = {3, 1000, 2};
  FeatureExtractionRequestedEvent min_fx = full_fx;
  min_fx.data.model_version.reset();
  min_fx.data.expected_dimension.reset();
  min_fx.data.extraction_options.reset();
  min_fx.data.priority.reset();

  VectorIndexingRequestedEvent full_vx;
  full_vx.envelope = child;
  full_vx.data.image_id = image;
  full_vx.data.model_name = "mobilenet_v2";
  full_vx.data.feature_vector = {0.25f, -0.5f, 0.125f, 0.8f};
  full_vx.data.expected_dimension = 4;
  full_vx.data.vector_metadata = {t, 15, "1.0", 0.97};
  full_vx.data.image_metadata = IndexedImageMetadata{640, 480, "JPEG", 12345};
  full_vx.retry_policy = RetryPolicy{3, 1000, 1};
  VectorIndexingRequestedEvent min_vx = full_vx;
  min_vx.data.expected_dimension.reset();
  min_vx.data.vector_metadata.confidence.reset();
  min_vx.data.image_metadata.reset();
  min_vx.retry_policy.reset();

  ProcessingCompletedEvent done;
  done.envelope = child;
  done.data.image_id = image;
  done.data.processing_steps = {{"feature_extraction", "completed", 15, "mobilenet_v2", std::nullopt},
                                {"vector_indexing", "completed", 2, std::nullopt,
                                 "tenant_acmecorp_mobilenet_v2_vectors"}};
  done.data.total_processing_time_ms = 40;
  done.data.searchable_after = t;
  ProcessingCompletedEvent min_done = done;
  min_done.data.processing_steps = {{"vector_indexing", "completed", 2, std::nullopt, std::nullopt}};

  ProcessingFailedEvent failed;
  failed.envelope = child;
  failed.data = {image, "feature_extraction", "mobilenet_v2", "EXTRACTION_FAILED", "decoder error",
                 1, 3, true, t + std::chrono::seconds(1), std::string(topics::kFeaturesExtraction),
                 encode(full_fx)};
  ProcessingFailedEvent min_failed = failed;
  min_failed.data.model_name.reset();
  min_failed.data.next_attempt_at.reset();
  min_failed.data.retryable = false;

  for (const AnyEvent& e : std::initializer_list<AnyEvent>{full_up, min_up, full_fx, min_fx, full_vx, min_vx,
                                                            done, min_done, failed, min_failed})
    std::cout << encode(e) << "\n";
  return 0;
}
