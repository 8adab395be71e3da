# The token counter's rank data (docs/tokens.md#rank-data). scripts/setup installs the npm package
# js-tiktoken, at the version scripts/tiktoken/package.json pins, into a cache outside the tree;
# the build reads its rank files from there (never from the network), cmake/tiktoken_ranks.py
# checks them against the hashes of OpenAI's rank files and writes compact tables, and the
# generated source embeds them with .incbin into admit_tokens. Sets:
#   ADMIT_TIKTOKEN_DIR          the cache directory (a cache variable; its node_modules/ has
#                               js-tiktoken, which the differential test also runs)
#   ADMIT_JS_TIKTOKEN_VERSION   the version pinned
#   ADMIT_TOKENS_DATA_SOURCE    the generated source to compile into admit_tokens
set(_admit_tiktoken_manifest ${PROJECT_SOURCE_DIR}/scripts/tiktoken/package.json)
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${_admit_tiktoken_manifest})
file(READ ${_admit_tiktoken_manifest} _admit_tiktoken_json)
string(JSON ADMIT_JS_TIKTOKEN_VERSION GET "${_admit_tiktoken_json}" dependencies js-tiktoken)

# Where scripts/setup puts it: $ADMIT_CACHE_DIR, else $XDG_CACHE_HOME/admit, else ~/.cache/admit.
include(${CMAKE_CURRENT_LIST_DIR}/npm_cache.cmake)
set(ADMIT_TIKTOKEN_DIR "${ADMIT_NPM_CACHE_DIR}/js-tiktoken-${ADMIT_JS_TIKTOKEN_VERSION}" CACHE PATH
    "js-tiktoken ${ADMIT_JS_TIKTOKEN_VERSION} as scripts/setup installs it (npm ci of scripts/tiktoken)")

set(_admit_js_tiktoken ${ADMIT_TIKTOKEN_DIR}/node_modules/js-tiktoken)
set(_admit_rank_files ${_admit_js_tiktoken}/dist/ranks/o200k_base.cjs
                      ${_admit_js_tiktoken}/dist/ranks/cl100k_base.cjs)
set(_admit_tiktoken_found TRUE)
foreach(_f ${_admit_js_tiktoken}/package.json ${_admit_rank_files})
  if(NOT EXISTS ${_f})
    set(_admit_tiktoken_found FALSE)
  endif()
endforeach()
if(_admit_tiktoken_found)
  file(READ ${_admit_js_tiktoken}/package.json _admit_tiktoken_json)
  string(JSON _admit_tiktoken_found_version ERROR_VARIABLE _admit_json_error
         GET "${_admit_tiktoken_json}" version)
  if(NOT _admit_tiktoken_found_version STREQUAL ADMIT_JS_TIKTOKEN_VERSION)
    set(_admit_tiktoken_found FALSE)
  endif()
endif()
if(NOT _admit_tiktoken_found)
  message(FATAL_ERROR
    "admit: the token counter's rank data is missing: no js-tiktoken ${ADMIT_JS_TIKTOKEN_VERSION} "
    "in ${ADMIT_TIKTOKEN_DIR}.\n"
    "Run scripts/setup (it installs the npm package js-tiktoken there; the build never downloads "
    "it), or point -DADMIT_TIKTOKEN_DIR at such an install, or configure with "
    "-DADMIT_WITH_TOKENS=OFF to build without admit::tokens and the apps.")
endif()

find_package(Python3 REQUIRED COMPONENTS Interpreter)
set(_admit_tokens_gen ${PROJECT_BINARY_DIR}/generated/tokens)
set(ADMIT_TOKENS_DATA_SOURCE ${_admit_tokens_gen}/tokens_data.cpp)
add_custom_command(
  OUTPUT ${ADMIT_TOKENS_DATA_SOURCE} ${_admit_tokens_gen}/o200k_base.bin
         ${_admit_tokens_gen}/cl100k_base.bin
  COMMAND Python3::Interpreter ${PROJECT_SOURCE_DIR}/cmake/tiktoken_ranks.py
          --package ${_admit_js_tiktoken} --version ${ADMIT_JS_TIKTOKEN_VERSION}
          --out ${_admit_tokens_gen}
  DEPENDS ${PROJECT_SOURCE_DIR}/cmake/tiktoken_ranks.py ${_admit_js_tiktoken}/package.json
          ${_admit_rank_files}
  COMMENT "Embedding js-tiktoken ${ADMIT_JS_TIKTOKEN_VERSION}'s o200k_base and cl100k_base ranks"
  VERBATIM)
# .incbin reads the tables when the source compiles: recompile when they change.
set_source_files_properties(${ADMIT_TOKENS_DATA_SOURCE} PROPERTIES
  OBJECT_DEPENDS "${_admit_tokens_gen}/o200k_base.bin;${_admit_tokens_gen}/cl100k_base.bin")
