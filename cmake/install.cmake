# Install rules, the CMake package (find_package(admit)), the pkg-config files and the Debian
# package (CPack). Included from the top-level CMakeLists.txt when ADMIT_INSTALL is on.
#
#   <prefix>/include/admit/...                  headers, with the generated admit/version.hpp
#   <prefix>/<libdir>/libadmit_<component>.a    core tokens store limiter adapt sched sqlite redis
#                                               (static; libadmit_tokens.a holds the rank tables)
#   <prefix>/<libdir>/cmake/admit/              admitConfig.cmake, a targets file per component
#   <prefix>/<libdir>/pkgconfig/                admit.pc (everything), admit-limiter.pc (memory)
#   <prefix>/share/admit/profiles/*.yaml        the provider profiles
#   <prefix>/share/doc/admit/LICENSE
# and with ADMIT_BUILD_APPS:
#   <prefix>/bin/admitd, <prefix>/bin/admit
#   <prefix>/lib/systemd/system/admitd.service  the systemd unit
#   <etc>/admit/admitd.yaml                     config/sample.yaml; <etc> is /etc for the prefix
#                                               /usr (the .deb), else <prefix>/etc
include(CMakePackageConfigHelpers)

set(ADMIT_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/admit)

# ---- headers ----
set(_admit_header_excludes "")
if(NOT ADMIT_WITH_SQLITE)
  list(APPEND _admit_header_excludes PATTERN sqlite_store.hpp EXCLUDE)
endif()
if(NOT ADMIT_WITH_REDIS)
  list(APPEND _admit_header_excludes PATTERN redis_*.hpp EXCLUDE)
endif()
if(NOT ADMIT_WITH_TOKENS)
  list(APPEND _admit_header_excludes PATTERN tokens.hpp EXCLUDE)
endif()
install(DIRECTORY include/admit DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT dev
        FILES_MATCHING PATTERN "*.hpp" ${_admit_header_excludes})
install(FILES ${PROJECT_BINARY_DIR}/include/admit/version.hpp
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/admit COMPONENT dev)

# ---- libraries: one export set, so one targets file, per component ----
# A static library's PRIVATE dependencies are exported as $<LINK_ONLY:...>, so admitConfig.cmake
# finds each component's dependencies before it includes that component's targets file.
foreach(_c IN LISTS ADMIT_COMPONENTS)
  install(TARGETS admit_${_c} EXPORT admit-${_c}-targets
          ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT dev)
  install(EXPORT admit-${_c}-targets NAMESPACE admit:: FILE admit-${_c}-targets.cmake
          DESTINATION ${ADMIT_CMAKE_DIR} COMPONENT dev)
endforeach()

configure_package_config_file(cmake/admitConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/package/admitConfig.cmake
                              INSTALL_DESTINATION ${ADMIT_CMAKE_DIR} NO_SET_AND_CHECK_MACRO)
# 0.x: a minor version may break the API, so 0.2 accepts 0.2.* only.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/package/admitConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/package/admitConfig.cmake
              ${PROJECT_BINARY_DIR}/package/admitConfigVersion.cmake
        DESTINATION ${ADMIT_CMAKE_DIR} COMPONENT dev)

# ---- pkg-config: relocatable (prefix from ${pcfiledir}); the libraries are static, so Libs
# lists what they link ----
file(RELATIVE_PATH ADMIT_PC_PREFIX_FROM_PCDIR ${CMAKE_INSTALL_FULL_LIBDIR}/pkgconfig
     ${CMAKE_INSTALL_PREFIX})
string(REGEX REPLACE "/$" "" ADMIT_PC_PREFIX_FROM_PCDIR "${ADMIT_PC_PREFIX_FROM_PCDIR}")
# admit-limiter: Limiter, MemoryStore, GuardedStore (core, store, limiter).
set(ADMIT_PC_NAME admit-limiter)
set(ADMIT_PC_DESCRIPTION "admit's Limiter with the in-memory store (no SQLite, Redis or YAML)")
set(ADMIT_PC_REQUIRES "absl_flat_hash_map")
set(ADMIT_PC_LIBS "-ladmit_limiter -ladmit_store -ladmit_core -lboost_json -ldate-tz -pthread")
configure_file(cmake/admit.pc.in ${PROJECT_BINARY_DIR}/package/admit-limiter.pc @ONLY)
# admit: every component built.
set(ADMIT_PC_NAME admit)
set(ADMIT_PC_DESCRIPTION "Admission control and rate limiting for LLM API traffic: every store")
set(ADMIT_PC_REQUIRES "absl_flat_hash_map absl_hash yaml-cpp")
set(ADMIT_PC_LIBS "-ladmit_sched -ladmit_adapt -ladmit_limiter")
if(ADMIT_WITH_SQLITE)
  string(APPEND ADMIT_PC_REQUIRES " sqlite3")
  string(APPEND ADMIT_PC_LIBS " -ladmit_sqlite")
endif()
if(ADMIT_WITH_REDIS)
  string(APPEND ADMIT_PC_REQUIRES " hiredis libssl")
  string(APPEND ADMIT_PC_LIBS " -ladmit_redis")
endif()
string(APPEND ADMIT_PC_LIBS " -ladmit_store")
if(ADMIT_WITH_TOKENS)
  string(APPEND ADMIT_PC_REQUIRES " libpcre2-8")
  string(APPEND ADMIT_PC_LIBS " -ladmit_tokens")
endif()
string(APPEND ADMIT_PC_LIBS " -ladmit_core")
if(ADMIT_WITH_REDIS)
  string(APPEND ADMIT_PC_LIBS " -lboost_url")
endif()
string(APPEND ADMIT_PC_LIBS " -lboost_json -ldate-tz -pthread")
configure_file(cmake/admit.pc.in ${PROJECT_BINARY_DIR}/package/admit.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/package/admit.pc ${PROJECT_BINARY_DIR}/package/admit-limiter.pc
        DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT dev)

install(FILES LICENSE DESTINATION ${CMAKE_INSTALL_DOCDIR} COMPONENT dev)

# ---- provider profiles (default_profiles_dir() looks here) ----
install(DIRECTORY profiles/ DESTINATION ${CMAKE_INSTALL_DATADIR}/admit/profiles COMPONENT admitd
        FILES_MATCHING PATTERN "*.yaml")

# ---- admitd and admit, the systemd unit, /etc/admit/admitd.yaml ----
if(ADMIT_BUILD_APPS)
  install(TARGETS admitd admit_cli RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT admitd)
  # Placed by the prefix given at install time (cmake --install --prefix, cpack), so the unit
  # names the admitd and the config actually installed: cmake/install_admitd_files.cmake.
  install(CODE "set(ADMIT_PACKAGING_DIR [[${PROJECT_SOURCE_DIR}/packaging]])
set(ADMIT_SAMPLE_CONFIG [[${PROJECT_SOURCE_DIR}/config/sample.yaml]])
set(ADMIT_STAGING_DIR [[${PROJECT_BINARY_DIR}/package]])
set(ADMIT_INSTALL_BINDIR [[${CMAKE_INSTALL_BINDIR}]])"
          COMPONENT admitd)
  install(SCRIPT cmake/install_admitd_files.cmake COMPONENT admitd)
endif()

# ---- the Debian package: cpack -G DEB (one package, `admit`, with all of the above) ----
include(${PROJECT_SOURCE_DIR}/cmake/packaging.cmake)
