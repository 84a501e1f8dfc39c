// Deleting an image: its rows, then its vectors and blobs. Idempotent (an absent image is OK).
//
// Ordering against the pipeline, so that nothing is left behind: the rows go first (in one
// transaction), so the stages stop touching the image; a stage that was mid-way re-checks the row
// in its own transaction after its effect and undoes the effect when the image is gone (the index
// stage removes the vector it just upserted, the thumbnail stage the blob it just wrote). The
// thumbnail is removed at its deterministic key, whatever the row said when it was read. What a
// crash between the steps leaves is found by the Sweeper.
#pragma once

#include <string>

#include "common/result.h"
#include "pipeline/context.h"

namespace deeplens {

Status delete_image(PipelineContext& ctx, const std::string& tenant_id, const std::string& image_id);

}  // namespace deeplens
