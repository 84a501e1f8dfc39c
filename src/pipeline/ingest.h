// Accepting an upload: the blob (already streamed into a BlobWriter, hashed and probed by the
// caller) is committed under its final key, then ONE metadata transaction inserts the image row
// and its ImageUploadedEvent (outbox / event log). Nothing touches the bus on this path.
//
// Returns the existing image instead when the idempotency key was seen before or (unless
// skipDuplicateCheck) the same bytes were uploaded before by the tenant; the new blob is then
// removed. On any failure the committed blob is removed again: no image is half-written.
#pragma once

#include <memory>
#include <string>

#include "blob/blob_store.h"
#include "events/events.h"
#include "imaging/image.h"
#include "pipeline/context.h"

namespace deeplens {

struct UploadRequest {
  std::string tenant_id;
  std::string file_name;    // display name (sanitised by the caller)
  std::string uploaded_by;  // may be empty
  ProcessingOptions options;
  std::string idempotency_key;  // may be empty
  std::string sha256;           // hex of the bytes
  ImageInfo info;               // probed from content
  std::unique_ptr<BlobWriter> blob;
  StorageQuota quota;           // the tenant's limits, enforced in the insert's transaction
};

Result<CreateImageOutcome> accept_upload(PipelineContext& ctx, UploadRequest request);

// Keeps only characters that are safe to show and store; path separators and control characters
// become '_', and the result is at most 255 bytes ("../../etc/passwd" -> ".._.._etc_passwd").
std::string sanitize_file_name(std::string_view name);

// Replays a dead letter: the original event again with a new eventId and attempt 1.
Status replay_dead_letter(PipelineContext& ctx, int64_t id);

// Replays every dead letter not yet replayed, oldest first: one tenant's, or with tenant_id empty
// all of them (`deeplens dlq replay --all`, POST /api/v1/dead-letters/replay). One that fails to
// replay does not stop the others; it is reported with its error.
struct ReplayOutcome {
  int replayed = 0;
  std::vector<std::pair<int64_t, Error>> failed;
};
Result<ReplayOutcome> replay_dead_letters(PipelineContext& ctx, const std::string& tenant_id);

}  // namespace deeplens
