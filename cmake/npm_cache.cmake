# Where scripts/setup installs the pinned npm packages (scripts/tiktoken/, scripts/openai/):
# $ADMIT_CACHE_DIR, else $XDG_CACHE_HOME/admit, else ~/.cache/admit. Sets ADMIT_NPM_CACHE_DIR.
# The build and the tests read them from there; they never download anything.
if(DEFINED ENV{ADMIT_CACHE_DIR} AND NOT "$ENV{ADMIT_CACHE_DIR}" STREQUAL "")
  set(ADMIT_NPM_CACHE_DIR "$ENV{ADMIT_CACHE_DIR}")
elseif(DEFINED ENV{XDG_CACHE_HOME} AND NOT "$ENV{XDG_CACHE_HOME}" STREQUAL "")
  set(ADMIT_NPM_CACHE_DIR "$ENV{XDG_CACHE_HOME}/admit")
else()
  set(ADMIT_NPM_CACHE_DIR "$ENV{HOME}/.cache/admit")
endif()
