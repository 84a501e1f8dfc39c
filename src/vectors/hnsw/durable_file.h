// Small POSIX file primitives for the embedded vector store's durability: CRC-32 for log records
// and snapshots, fsync of files and directories, and whole-file replacement that is atomic across
// a crash (write a temp file, fsync it, rename over the target, fsync the directory).
//
// Free functions, no shared state: safe to call from any thread. Every failure is a kIoError that
// names the path and carries errno.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.h"

namespace deeplens::hnsw {

// CRC-32 (IEEE 802.3, reflected 0xEDB88320, the zlib crc32) of data, continuing from crc.
uint32_t crc32(const void* data, size_t size, uint32_t crc = 0);

// kIoError "what: strerror" with path and errno in the context.
Error io_error(std::string_view what, const std::string& path, int err);

// fsync of a directory, so that entries created, renamed or removed in it survive a crash.
Status fsync_directory(const std::string& dir);
// fsync of an existing file.
Status fsync_file(const std::string& path);
// Replaces path with contents atomically and durably (temp file + fsync + rename + dir fsync).
Status write_file_atomically(const std::string& path, std::string_view contents);
// The whole file; kNotFound when it does not exist.
Result<std::string> read_whole_file(const std::string& path);
// Creates dir (and missing parents); OK when it exists. The parent is fsynced when dir is new.
Status create_directories_durably(const std::string& dir);
// Size of a file in bytes.
Result<uint64_t> file_size(const std::string& path);
// Removes a file; OK when it is already gone.
Status remove_file(const std::string& path);

}  // namespace deeplens::hnsw
