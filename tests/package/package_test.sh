#!/usr/bin/env bash
# admit as an installed package (ctest: package, the Release suite of scripts/test).
#   1. cmake --install BUILD into a temporary prefix; admitd/admit --version; the installed
#      admitd serves with the installed config; no build or source paths in the CMake and
#      pkg-config files;
#   2. tests/package/consumer through find_package(admit 0.2 CONFIG REQUIRED COMPONENTS limiter)
#      (no SQLite, hiredis or yaml-cpp looked for; none linked) and find_package(admit 0.2)
#      (admit::admit: SqliteStore, the installed profiles);
#   3. the consumer through add_subdirectory(SOURCE): admit not top-level, only the libraries of
#      admit::limiter built;
#   4. the same sources with g++ and pkg-config admit-limiter / admit;
#   5. systemd-analyze verify on the installed unit;
#   6. cpack -G DEB from BUILD: dpkg-deb -c lists the files, -I the conffile; the unit in the
#      package verified against the package's own tree.
# Usage: package_test.sh SOURCE_DIR BUILD_DIR (a Release build with the apps, built).
set -euo pipefail
src=$(cd "$1" && pwd)
build=$(cd "$2" && pwd)
consumer=$src/tests/package/consumer

tmp=$(mktemp -d "${TMPDIR:-/tmp}/admit-package.XXXXXX")
admitd_pid=""
cleanup() {
  if [ -n "$admitd_pid" ]; then
    kill "$admitd_pid" 2>/dev/null || true
    wait "$admitd_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
prefix=$tmp/prefix
log=$tmp/log

start=$(date +%s)
step() { echo "== $* ($(($(date +%s) - start)) s)"; }
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
quietly() {  # runs a command, showing its output only if it fails
  "$@" >"$log" 2>&1 || { cat "$log" >&2; fail "$*"; }
}
expect_line() {  # expect_line OUTPUT LINE
  grep -qxF -- "$2" <<<"$1" || { printf '%s\n' "$1" >&2; fail "expected the line: $2"; }
}
no_store_libs() {  # no_store_libs BINARY: a memory-only program loads no SQLite and no hiredis
  local libs
  libs=$(ldd "$1")
  if grep -Ei 'sqlite|hiredis|yaml' <<<"$libs"; then fail "$1 links SQLite, hiredis or yaml-cpp"; fi
}

unset ADMIT_PROFILES_DIR
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}
cache() { sed -n "s/^$1:[A-Z]*=//p" "$build/CMakeCache.txt"; }
version=$(cache CMAKE_PROJECT_VERSION)
built_prefix=$(cache CMAKE_INSTALL_PREFIX)
[ -n "$version" ] || fail "no CMAKE_PROJECT_VERSION in $build/CMakeCache.txt"

# ---- 1. install ----
step "cmake --install $build --prefix $prefix"
quietly cmake --install "$build" --prefix "$prefix"
for f in bin/admitd bin/admit include/admit/limiter.hpp include/admit/version.hpp \
         include/admit/store/sqlite_store.hpp include/admit/tokens.hpp \
         share/admit/profiles/openai.yaml \
         lib/systemd/system/admitd.service etc/admit/admitd.yaml; do
  [ -e "$prefix/$f" ] || fail "not installed: $f"
done
config_dir=$(dirname "$(find "$prefix" -name admitConfig.cmake)")
pc_dir=$(dirname "$(find "$prefix" -name admit.pc)")
for f in admitConfigVersion.cmake admit-core-targets.cmake admit-limiter-targets.cmake \
         admit-sqlite-targets.cmake admit-redis-targets.cmake admit-tokens-targets.cmake; do
  [ -f "$config_dir/$f" ] || fail "not installed: $config_dir/$f"
done
[ -f "$pc_dir/admit-limiter.pc" ] || fail "not installed: $pc_dir/admit-limiter.pc"
for d in "$build" "$src"; do
  if grep -rlF -- "$d" "$config_dir" "$pc_dir" "$prefix/include"; then
    fail "installed files name $d"
  fi
done
expect_line "$("$prefix/bin/admitd" --version)" "admitd $version"
expect_line "$("$prefix/bin/admit" --version)" "admit $version"

step "the installed admitd with the installed config"
"$prefix/bin/admitd" --config "$prefix/etc/admit/admitd.yaml" --listen 127.0.0.1:0 \
  >"$tmp/admitd.out" 2>"$tmp/admitd.err" &
admitd_pid=$!
for _ in $(seq 100); do
  grep -q '^listening on ' "$tmp/admitd.out" 2>/dev/null && break
  kill -0 "$admitd_pid" 2>/dev/null || break
  sleep 0.1
done
url=$(sed -n 's/^listening on //p' "$tmp/admitd.out")
[ -n "$url" ] || { cat "$tmp/admitd.err" >&2; fail "admitd did not start"; }
curl -fsS "$url/healthz" >/dev/null || fail "GET $url/healthz"
kill "$admitd_pid"
wait "$admitd_pid" || fail "admitd did not stop cleanly"
admitd_pid=""

limiter_line="limiter consumer: admit $version, memory, user-1 rpm: 4/5"
full_line="full consumer: admit $version, sqlite, profiles"

# ---- 2. find_package ----
step "consumer: find_package(admit $version COMPONENTS limiter)"
quietly cmake -S "$consumer" -B "$tmp/find-limiter" -G Ninja -DCMAKE_PREFIX_PATH="$prefix" \
  -DADMIT_CONSUMER_COMPONENTS=limiter
quietly cmake --build "$tmp/find-limiter"
if grep -Ei 'sqlite|hiredis|yaml' "$tmp/find-limiter/build.ninja"; then
  fail "the limiter-only consumer's link line names SQLite, hiredis or yaml-cpp"
fi
expect_line "$("$tmp/find-limiter/consumer_limiter")" "$limiter_line"
no_store_libs "$tmp/find-limiter/consumer_limiter"

step "consumer: find_package(admit $version), admit::admit"
quietly cmake -S "$consumer" -B "$tmp/find-all" -G Ninja -DCMAKE_PREFIX_PATH="$prefix"
quietly cmake --build "$tmp/find-all"
expect_line "$("$tmp/find-all/consumer_limiter")" "$limiter_line"
out=$("$tmp/find-all/consumer_full" "$tmp/find-all.db")
expect_line "$out" "full consumer: user-1 rpm: 498/500"
expect_line "$out" "full consumer: tokens 2 o200k_base"  # the rank tables came with the library
grep -q "^$full_line" <<<"$out" || fail "unexpected output: $out"
# The profiles are found in the install: the directory compiled in, or (installed elsewhere)
# share/admit/profiles next to the program's bin/.
expected_profiles=$prefix/share/admit/profiles
[ -d "$built_prefix/share/admit/profiles" ] && expected_profiles=$built_prefix/share/admit/profiles
cp "$tmp/find-all/consumer_full" "$prefix/bin/"
expect_line "$("$prefix/bin/consumer_full" "$tmp/installed.db" | head -1)" \
  "$full_line $expected_profiles"

# ---- 3. add_subdirectory ----
step "consumer: add_subdirectory(admit), consumer_limiter only"
quietly cmake -S "$consumer" -B "$tmp/subdir" -G Ninja -DADMIT_CONSUMER_MODE=subdirectory \
  -DADMIT_SOURCE_DIR="$src"
quietly cmake --build "$tmp/subdir" --target consumer_limiter
for lib in sqlite redis adapt sched; do
  [ ! -e "$tmp/subdir/admit/libadmit_$lib.a" ] || fail "add_subdirectory built admit_$lib"
done
[ ! -d "$tmp/subdir/admit/tests" ] || fail "add_subdirectory configured admit's tests"
expect_line "$("$tmp/subdir/consumer_limiter")" "$limiter_line"
no_store_libs "$tmp/subdir/consumer_limiter"

# ---- 4. pkg-config ----
step "consumer: g++ \$(pkg-config --cflags --libs admit-limiter), then admit"
export PKG_CONFIG_PATH=$pc_dir
[ "$(pkg-config --modversion admit)" = "$version" ] || fail "pkg-config --modversion admit"
# shellcheck disable=SC2046
quietly g++ -std=c++20 "$consumer/limiter_main.cpp" -o "$tmp/pc_limiter" \
  $(pkg-config --cflags --libs admit-limiter)
expect_line "$("$tmp/pc_limiter")" "$limiter_line"
no_store_libs "$tmp/pc_limiter"
# shellcheck disable=SC2046
quietly g++ -std=c++20 "$consumer/full_main.cpp" -o "$tmp/pc_full" \
  $(pkg-config --cflags --libs admit)
out=$("$tmp/pc_full" "$tmp/pc.db")
expect_line "$out" "full consumer: user-1 rpm: 498/500"
expect_line "$out" "full consumer: tokens 2 o200k_base"
unset PKG_CONFIG_PATH

# ---- 5. the unit ----
# In a container systemd-analyze may complain about the system it runs on; only its exit code
# and lines about the unit itself count.
verify_unit() {  # verify_unit ARGS...: systemd-analyze verify, no complaint about admitd.service
  local rc=0
  systemd-analyze verify --recursive-errors=no "$@" >"$log" 2>&1 || rc=$?
  if [ $rc -ne 0 ] || grep -q 'admitd\.service' "$log"; then
    cat "$log" >&2
    fail "systemd-analyze verify $*"
  fi
}
step "systemd-analyze verify (the unit installed in $prefix)"
command -v systemd-analyze >/dev/null || fail "no systemd-analyze (scripts/setup installs systemd)"
grep -qxF "ExecStart=$prefix/bin/admitd --config $prefix/etc/admit/admitd.yaml" \
  "$prefix/lib/systemd/system/admitd.service" || fail "the installed unit's ExecStart"
verify_unit "$prefix/lib/systemd/system/admitd.service"

# ---- 6. the .deb ----
step "cpack -G DEB"
quietly cpack -G DEB --config "$build/CPackConfig.cmake" -B "$tmp/deb"
deb=$(find "$tmp/deb" -maxdepth 1 -name "admit_${version}-*.deb")
[ -f "$deb" ] || { cat "$log" >&2; fail "no admit_${version}-*.deb in $tmp/deb"; }
contents=$(dpkg-deb -c "$deb" | awk '{print $NF}')
for f in ./usr/bin/admitd ./usr/bin/admit ./usr/include/admit/limiter.hpp \
         ./usr/include/admit/version.hpp ./usr/include/admit/store/redis_store.hpp \
         ./usr/share/admit/profiles/openai.yaml ./usr/lib/systemd/system/admitd.service \
         ./etc/admit/admitd.yaml; do
  expect_line "$contents" "$f"
done
for re in 'libadmit_(core|tokens|store|limiter|adapt|sqlite|redis)\.a' 'cmake/admit/admitConfig\.cmake' \
          'pkgconfig/admit\.pc' 'pkgconfig/admit-limiter\.pc'; do
  [ "$(grep -cE "^\./usr/lib/(.*/)?$re\$" <<<"$contents")" -ge 1 ] || fail "the .deb has no $re"
done
[ "$(grep -cE 'libadmit_[a-z]+\.a$' <<<"$contents")" -eq 8 ] || fail "the .deb has not 8 libraries"
if grep -E '^\./usr/local|_CPack' <<<"$contents"; then fail "stray paths in the .deb"; fi
info=$(dpkg-deb -I "$deb")
grep -qE '^ +[0-9]+ bytes, .* conffiles *$' <<<"$info" ||
  { echo "$info" >&2; fail "the .deb has no conffiles"; }
expect_line "$(dpkg-deb -I "$deb" conffiles)" "/etc/admit/admitd.yaml"
depends=$(dpkg-deb -f "$deb" Depends)
for dep in libc6 libstdc++6 libyaml-cpp 'libsqlite3-0'; do
  grep -q "$dep" <<<"$depends" || fail "Depends lacks $dep: $depends"
done

step "systemd-analyze verify --root (the unit in the .deb)"
dpkg-deb -x "$deb" "$tmp/root"
grep -qxF "ExecStart=/usr/bin/admitd --config /etc/admit/admitd.yaml" \
  "$tmp/root/usr/lib/systemd/system/admitd.service" || fail "the packaged unit's ExecStart"
verify_unit --root="$tmp/root" /usr/lib/systemd/system/admitd.service

step "package test passed"
