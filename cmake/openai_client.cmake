# The npm package openai, the real OpenAI client the gateway's end-to-end test runs under node
# (tests/service/gateway_openai_test.mjs; docs/proxy.md, "Tested with the openai client").
# scripts/setup installs it, at the version and integrity hash scripts/openai/package-lock.json
# pins, into a cache outside the tree; nothing here downloads it. Sets:
#   ADMIT_NODE            node (a cache variable; empty if not found)
#   ADMIT_OPENAI_VERSION  the version pinned
#   ADMIT_OPENAI_DIR      the cache directory (a cache variable; node_modules/openai inside)
#   ADMIT_OPENAI_FOUND    TRUE if node_modules/openai there is the pinned version
# A missing node or package is not an error: the test is skipped (exit 77) and says why.
include(${CMAKE_CURRENT_LIST_DIR}/npm_cache.cmake)
find_program(ADMIT_NODE NAMES node nodejs)

set(_admit_openai_manifest ${PROJECT_SOURCE_DIR}/scripts/openai/package.json)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${_admit_openai_manifest})
file(READ ${_admit_openai_manifest} _admit_openai_json)
string(JSON ADMIT_OPENAI_VERSION GET "${_admit_openai_json}" dependencies openai)
set(ADMIT_OPENAI_DIR "${ADMIT_NPM_CACHE_DIR}/openai-${ADMIT_OPENAI_VERSION}" CACHE PATH
    "openai ${ADMIT_OPENAI_VERSION} as scripts/setup installs it (npm ci of scripts/openai)")

set(ADMIT_OPENAI_FOUND FALSE)
set(_admit_openai_package ${ADMIT_OPENAI_DIR}/node_modules/openai/package.json)
if(EXISTS ${_admit_openai_package})
  file(READ ${_admit_openai_package} _admit_openai_json)
  string(JSON _admit_openai_found_version ERROR_VARIABLE _admit_json_error
         GET "${_admit_openai_json}" version)
  if(_admit_openai_found_version STREQUAL ADMIT_OPENAI_VERSION)
    set(ADMIT_OPENAI_FOUND TRUE)
  endif()
endif()
if(NOT ADMIT_OPENAI_FOUND)
  message(STATUS "admit: no openai ${ADMIT_OPENAI_VERSION} in ${ADMIT_OPENAI_DIR}: "
                 "the test admitd_gateway_openai will be skipped (run scripts/setup)")
endif()
