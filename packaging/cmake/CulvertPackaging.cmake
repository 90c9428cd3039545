# Install layout and the Debian package (CPack DEB). `cmake --build build --target package`
# writes build/culvert_<version>_<arch>.deb. Layout (docs/operator-guide.md):
#   /usr/sbin/culvertd, /usr/bin/culvertctl, /usr/lib/cni/culvert-cni
#   /lib/systemd/system/culvertd.service (enabled by postinst, not started)
#   /etc/culvert/bootstrap.yaml (conffile), /etc/culvert/resources/
#   /usr/share/doc/culvert/*.md
include(GNUInstallDirs)

install(TARGETS culvertd RUNTIME DESTINATION sbin COMPONENT culvert)
install(TARGETS culvertctl RUNTIME DESTINATION bin COMPONENT culvert)
install(TARGETS culvert-cni RUNTIME DESTINATION lib/cni COMPONENT culvert)
install(FILES ${CMAKE_SOURCE_DIR}/packaging/systemd/culvertd.service
        DESTINATION /lib/systemd/system COMPONENT culvert)
install(FILES ${CMAKE_SOURCE_DIR}/packaging/etc/bootstrap.yaml
        DESTINATION /etc/culvert COMPONENT culvert)
install(DIRECTORY DESTINATION /etc/culvert/resources COMPONENT culvert)
install(FILES ${CMAKE_SOURCE_DIR}/docs/operator-guide.md ${CMAKE_SOURCE_DIR}/docs/bootstrap.md
              ${CMAKE_SOURCE_DIR}/docs/metrics.md ${CMAKE_SOURCE_DIR}/docs/xds-support.md
        DESTINATION share/doc/culvert COMPONENT culvert)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME culvert)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "per-node eBPF traffic capture and shared L7 proxy, driven by xDS")
set(CPACK_PACKAGE_CONTACT "culvert maintainers <culvert@localhost>")
set(CPACK_STRIP_FILES ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Library dependencies come from dpkg-shlibdeps; deb-systemd-helper from init-system-helpers.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "init-system-helpers (>= 1.52)")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${CMAKE_SOURCE_DIR}/packaging/deb/conffiles
    ${CMAKE_SOURCE_DIR}/packaging/deb/postinst
    ${CMAKE_SOURCE_DIR}/packaging/deb/prerm
    ${CMAKE_SOURCE_DIR}/packaging/deb/postrm)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
