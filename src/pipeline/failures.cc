#include "pipeline/failures.h"

#include <type_traits>
#include <variant>

#include "events/codec.h"

namespace deeplens {

namespace {

// The retry's event says which step it redoes and which attempt it is.
std::optional<RetryingImage> describe_retry(const ScheduledRetry& r, const std::string& tenant_id,
                                            const RetryPolicy& defaults) {
  auto event = decode_any(r.message.payload);
  if (!event || envelope(*event).tenant_id != tenant_id) return std::nullopt;
  RetryingImage out;
  out.image_id = image_id(*event);
  out.next_attempt_at = r.due_at;
  std::visit(
      [&](const auto& ev) {
        using T = std::decay_t<decltype(ev)>;
        if constexpr (std::is_same_v<T, ImageUploadedEvent>) {
          out.stage = "orchestration";
        } else if constexpr (std::is_same_v<T, FeatureExtractionRequestedEvent>) {
          out.stage = "feature_extraction";
          out.model = ev.data.model_name;
          out.attempt = ev.retry_policy.current_attempt;
          out.max_attempts = ev.retry_policy.max_attempts;
        } else if constexpr (std::is_same_v<T, VectorIndexingRequestedEvent>) {
          out.stage = "vector_indexing";
          out.model = ev.data.model_name;
          const RetryPolicy p = ev.retry_policy.value_or(defaults);
          out.attempt = p.current_attempt;
          out.max_attempts = p.max_attempts;
        } else {
          out.stage = "completion";
        }
      },
      *event);
  return out;
}

}  // namespace

Result<FailureReport> list_failures(PipelineContext& ctx, const std::string& tenant_id, int limit, bool with_errors,
                                    int scan_retries) {
  FailureReport report;
  auto letters = ctx.store.list_dead_letters(false, limit, tenant_id);
  if (!letters) return std::move(letters).error();
  report.dead_letters = std::move(*letters);
  auto retries = ctx.store.list_scheduled_retries(scan_retries);
  if (!retries) return std::move(retries).error();
  for (const auto& r : *retries) {
    if (static_cast<int>(report.retrying.size()) >= limit) break;
    auto retrying = describe_retry(r, tenant_id, ctx.options.retry);
    if (!retrying) continue;
    // The error is the failed step's own record (the retry event does not carry it).
    if (!with_errors) {
      report.retrying.push_back(std::move(*retrying));
      continue;
    }
    if (auto steps = ctx.store.get_steps(retrying->image_id))
      for (const auto& s : *steps)
        if (s.step == retrying->stage && (retrying->model.empty() || s.model == retrying->model) && !s.last_error.empty())
          retrying->last_error = s.last_error;
    report.retrying.push_back(std::move(*retrying));
  }
  return report;
}

}  // namespace deeplens
