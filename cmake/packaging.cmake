# The Debian package (cpack -G DEB in the build directory): one package, `admit`, with admitd,
# admit, the headers, the static libraries, the CMake and pkg-config files, the profiles, the
# systemd unit and /etc/admit/admitd.yaml (a conffile). It installs under /usr: configure the
# build with -DCMAKE_INSTALL_PREFIX=/usr so that the profile directory compiled into the
# libraries is /usr/share/admit/profiles (admitd also finds them next to /usr/bin).
set(CPACK_PACKAGE_NAME admit)
set(CPACK_PACKAGE_VENDOR "the admit authors")
set(CPACK_PACKAGE_CONTACT "the admit authors <admit@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "${PROJECT_DESCRIPTION}")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_RESOURCE_FILE_LICENSE ${PROJECT_SOURCE_DIR}/LICENSE)
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)  # admitd and admit (install(TARGETS) strips no static library)

set(CPACK_DEBIAN_PACKAGE_NAME admit)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)  # admit_0.2.0-1_amd64.deb
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_SECTION net)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# The synopsis is CPACK_PACKAGE_DESCRIPTION_SUMMARY; this is the extended description.
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION "admitd, an HTTP service that decides whether a call to a model may go out
now, the admit CLI (admit migrate), the provider profiles, and the C++20
static libraries with their headers, CMake package (find_package(admit)) and
pkg-config files (admit, admit-limiter).")
# Runtime libraries of admitd and admit, found by dpkg-shlibdeps; linking the static libraries
# needs the -dev packages below.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_SUGGESTS
    "libabsl-dev, libhowardhinnant-date-dev, libboost-json1.81-dev, libboost-url1.81-dev, libyaml-cpp-dev, libsqlite3-dev, libhiredis-dev, libssl-dev, libpcre2-dev, pkg-config")
if(ADMIT_BUILD_APPS)  # /etc/admit/admitd.yaml: dpkg keeps local edits on upgrades
  configure_file(${PROJECT_SOURCE_DIR}/packaging/conffiles
                 ${PROJECT_BINARY_DIR}/package/deb/conffiles COPYONLY)
  set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA ${PROJECT_BINARY_DIR}/package/deb/conffiles)
endif()
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_DEBIAN_COMPRESSION_TYPE gzip)

include(CPack)
