# Installation layout and the Debian package (CPack DEB; scripts/package builds it):
#   /usr/bin/deeplens
#   /etc/deeplens/deeplens.toml                    (conffile, commented)
#   /lib/systemd/system/deeplens.service           (serve), deeplens-api.service, deeplens-worker@.service
#   /usr/share/doc/deeplens/                       README.md, the OpenAPI and AsyncAPI documents
#   /var/lib/deeplens                              data, owned by the deeplens system user (postinst)
# Dependencies come from dpkg-shlibdeps over the binary, so `apt install ./deeplens_*.deb` pulls the
# shared libraries it links (OpenCV, libvips, librdkafka, libpqxx, ...).
install(TARGETS deeplens RUNTIME DESTINATION bin)
install(FILES ${PROJECT_SOURCE_DIR}/packaging/deeplens.toml DESTINATION /etc/deeplens)
install(FILES ${PROJECT_SOURCE_DIR}/packaging/systemd/deeplens.service
              ${PROJECT_SOURCE_DIR}/packaging/systemd/deeplens-api.service
              ${PROJECT_SOURCE_DIR}/packaging/systemd/deeplens-worker@.service
        DESTINATION /lib/systemd/system)
install(FILES ${PROJECT_SOURCE_DIR}/README.md ${PROJECT_SOURCE_DIR}/schemas/openapi.yaml
              ${PROJECT_SOURCE_DIR}/schemas/asyncapi.yaml
        DESTINATION share/doc/deeplens)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME deeplens)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT "DeepLens maintainers <deeplens@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "self-hostable image ingestion and visual search on an asynchronous event pipeline")
set(CPACK_PACKAGE_DESCRIPTION "Upload API that answers at once, an event pipeline behind it (embedded SQLite log or
 Kafka), CNN feature extraction, a vector index per tenant and model (embedded HNSW or Qdrant), real-time
 status (WebSocket, SSE), webhooks, and search by visual similarity.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_PACKAGE_DIRECTORY ${PROJECT_SOURCE_DIR}/build)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # deeplens_<version>_amd64.deb
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/packaging/debian/postinst ${PROJECT_SOURCE_DIR}/packaging/debian/prerm
    ${PROJECT_SOURCE_DIR}/packaging/debian/postrm ${PROJECT_SOURCE_DIR}/packaging/debian/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
