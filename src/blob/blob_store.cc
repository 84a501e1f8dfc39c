#include "blob/blob_store.h"

#include <cstdio>

namespace deeplens {

std::string blob_key(std::string_view kind, std::string_view tenant_id, std::string_view image_id,
                     std::string_view extension, Timestamp uploaded_at) {
  using namespace std::chrono;
  const year_month_day ymd{floor<days>(uploaded_at)};
  char date[16];
  std::snprintf(date, sizeof date, "%04d/%02u/%02u", int(ymd.year()), unsigned(ymd.month()), unsigned(ymd.day()));
  std::string key = "tenant-";
  key += tenant_id;
  key += '/';
  key += kind;
  key += '/';
  key += date;
  key += '/';
  key += image_id;
  key += '.';
  key += extension;
  return key;
}

}  // namespace deeplens
