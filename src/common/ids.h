// Identifiers in the spec's shape: "img_" / "evt_" + a UUID ("img_98765432-4321-...").
// New ids are UUIDv4 drawn from an injectable RandomSource so tests can make them deterministic.
//
// RandomSource implementations here are thread-safe. IdGenerator is thread-safe when its source is.
#pragma once

#include <cstdint>
#include <mutex>
#include <random>
#include <string>
#include <string_view>

namespace deeplens {

class RandomSource {
 public:
  virtual ~RandomSource() = default;
  virtual uint64_t next_u64() = 0;
};

// The operating system's CSPRNG through OpenSSL's RAND_bytes: API keys, ids and secrets must not
// be predictable from earlier outputs (a seeded Mersenne Twister is). Thread-safe; aborts if the
// generator fails (it only does when the kernel cannot seed it, a start-up failure).
class SystemRandom final : public RandomSource {
 public:
  uint64_t next_u64() override;
};

// Deterministic sequence for tests.
class SeededRandom final : public RandomSource {
 public:
  explicit SeededRandom(uint64_t seed) : engine_(seed) {}
  uint64_t next_u64() override {
    std::lock_guard lock(mu_);
    return engine_();
  }

 private:
  std::mutex mu_;
  std::mt19937_64 engine_;
};

class IdGenerator {
 public:
  explicit IdGenerator(RandomSource& random) : random_(random) {}
  std::string uuid_v4();
  // n random bytes as lower-case hex (2n characters).
  std::string hex(size_t n);
  std::string image_id() { return "img_" + uuid_v4(); }
  std::string event_id() { return "evt_" + uuid_v4(); }

 private:
  RandomSource& random_;
};

// True when text is 8-4-4-4-12 lowercase-or-uppercase hex. Any UUID version is accepted because the
// spec's own examples are not v4.
bool is_uuid(std::string_view text);
bool is_image_id(std::string_view text);  // "img_" + uuid
bool is_event_id(std::string_view text);  // "evt_" + uuid

}  // namespace deeplens
