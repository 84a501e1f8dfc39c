# Every third-party library as an imported target, so its headers are SYSTEM includes and
# never trip -Werror. scripts/bootstrap installs all of them from Debian bookworm.
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(spdlog REQUIRED)
find_package(fmt REQUIRED)
find_package(CLI11 REQUIRED)
find_package(tomlplusplus REQUIRED)
find_package(OpenSSL REQUIRED)
find_package(ZLIB REQUIRED)
find_package(GTest REQUIRED)
include(GoogleTest)

pkg_check_modules(SQLITE3 REQUIRED IMPORTED_TARGET sqlite3)
pkg_check_modules(VIPS REQUIRED IMPORTED_TARGET vips-cpp)
pkg_check_modules(LIBCURL REQUIRED IMPORTED_TARGET libcurl)
# libxml2: the Azure Blob service answers in XML (listings, error bodies).
pkg_check_modules(LIBXML2 REQUIRED IMPORTED_TARGET libxml-2.0)
pkg_check_modules(RDKAFKA REQUIRED IMPORTED_TARGET rdkafka)
pkg_check_modules(PQXX REQUIRED IMPORTED_TARGET libpqxx)

# OpenCV: only the DNN module and what it needs (Debian's libopencv-dnn-dev ships no CMake config
# without the full libopencv-dev), as an imported target so its headers are SYSTEM includes.
find_path(OPENCV_INCLUDE_DIR opencv2/dnn.hpp PATHS /usr/include/opencv4 REQUIRED)
find_library(OPENCV_CORE_LIB opencv_core REQUIRED)
find_library(OPENCV_IMGPROC_LIB opencv_imgproc REQUIRED)
find_library(OPENCV_DNN_LIB opencv_dnn REQUIRED)
add_library(deeplens_opencv INTERFACE IMPORTED)
set_target_properties(deeplens_opencv PROPERTIES
  INTERFACE_INCLUDE_DIRECTORIES "${OPENCV_INCLUDE_DIR}"
  INTERFACE_LINK_LIBRARIES "${OPENCV_DNN_LIB};${OPENCV_IMGPROC_LIB};${OPENCV_CORE_LIB}")

# hnswlib is header-only.
find_path(HNSWLIB_INCLUDE_DIR hnswlib/hnswlib.h REQUIRED)
add_library(deeplens_hnswlib INTERFACE IMPORTED)
set_target_properties(deeplens_hnswlib PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${HNSWLIB_INCLUDE_DIR}")

# Boost.Beast/Asio are header-only; Boost.System for error codes.
find_package(Boost 1.74 REQUIRED COMPONENTS system)
