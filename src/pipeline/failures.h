// What failed and what is waiting to be retried, for one tenant (the jobs page, GET
// /api/v1/dead-letters): dead letters not yet replayed, and scheduled retries with the error of the
// attempt that failed and when the next one is due. Reads only.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "pipeline/context.h"

namespace deeplens {

struct RetryingImage {
  std::string image_id;
  std::string stage;  // "orchestration", "feature_extraction", "vector_indexing"
  std::string model;  // empty when the stage has none
  int attempt = 0;    // the attempt that is due next
  int max_attempts = 0;
  Timestamp next_attempt_at;
  std::string last_error;  // of the step that failed, when it recorded one
};

struct FailureReport {
  std::vector<DeadLetter> dead_letters;
  std::vector<RetryingImage> retrying;
};

// At most `limit` of each. Scheduled retries are not stored by tenant, so the soonest
// `scan_retries` are read and the tenant's kept. with_errors false leaves last_error empty and
// reads no step records (for counting, e.g. the jobs page's refresh).
Result<FailureReport> list_failures(PipelineContext& ctx, const std::string& tenant_id, int limit,
                                    bool with_errors = true, int scan_retries = 5000);

}  // namespace deeplens
