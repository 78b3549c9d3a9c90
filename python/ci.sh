#!/usr/bin/env bash
# The Python package's CI, as its users get it:
#
#   bash python/ci.sh [VENV]     (VENV defaults to target/py-venv)
#
# 1. fmt + clippy of the binding;
# 2. one abi3 manylinux2014 wheel (python/build-wheel.sh, checked by
#    auditwheel), built once;
# 3. that wheel installed in a fresh virtual environment per supported
#    Python (3.10, 3.11, 3.12, 3.13; from PATH or pyenv), with numpy, pytest
#    and spdl-core from PyPI; on 3.11 and 3.12 mypy too, and on 3.12 (VENV
#    itself, the one benches/python/ uses) torch, PyPI's build, run on CPU;
# 4. python/tests on each, under fork, spawn and forkserver, with no Rust
#    toolchain on PATH (the wheel tests check that). spdl-core 0.8.0 runs on
#    3.11 and 3.12 only: its tests skip, with the reason, on 3.10 and 3.13,
#    and must run (not skip) where CI installed it, as must torch's;
# 5. the source install (pip install ./python) once, with a short run.
#
# The environments (torch is about 2 GB of wheels with its CUDA libraries)
# and the source build are made in the background while clippy and the
# wheel build; every test runs after all of them finished, on quiet cores.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-target/py-venv}
logs=target/py-logs
mkdir -p "$logs" target
t_start=$(date +%s)
stamp() { printf '\n--- %s (%ss)\n' "$1" "$(($(date +%s) - t_start))"; }

# An interpreter for Python $1: pythonX.Y on PATH (pyenv's shims answer only
# for the active versions), else pyenv's own install of it.
find_python() {
  local c
  for c in "$(command -v "python$1" || true)" "${PYENV_ROOT:-$HOME/.pyenv}"/versions/"$1".*/bin/"python$1"; do
    if [ -n "$c" ] && [ -x "$c" ] && "$c" -c 'import venv, ensurepip' >/dev/null 2>&1; then
      echo "$c"
      return 0
    fi
  done
  return 1
}

# A fresh virtual environment for Python $1 at $2 with pip packages $3...
make_venv() {
  local py
  py=$(find_python "$1") || { echo "python$1 not found" >&2; return 1; }
  rm -rf "$2"
  "$py" -m venv "$2"
  "$2/bin/python" -m pip install -q --disable-pip-version-check "${@:3}"
}

versions=(3.10 3.11 3.12 3.13)
env_of() { if [ "$1" = 3.12 ]; then echo "$venv"; else echo "$venv-$1"; fi; }
extras_of() {
  case $1 in
    3.12) echo "mypy torch" ;;
    3.11) echo "mypy" ;;
  esac
}
base_pkgs=(numpy pytest "spdl-core==0.8.0")

stamp "virtual environments (3.10, 3.11, 3.12 with torch, 3.13), in the background"
declare -A env_job
for v in "${versions[@]}"; do
  # shellcheck disable=SC2046
  (make_venv "$v" "$(env_of "$v")" "${base_pkgs[@]}" $(extras_of "$v")) >"$logs/venv-$v.log" 2>&1 &
  env_job[$v]=$!
done

stamp "source install (pip install ./python), in the background"
# Its own cargo target dir (the wheel's is built for the zig linker and an
# explicit target triple), and no LTO: it proves the source build works;
# the wheel is the optimized build.
(make_venv 3.11 "$venv-source" pytest numpy &&
  CARGO_TARGET_DIR="$PWD/target/py-source-build" CARGO_PROFILE_RELEASE_LTO=off \
    CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 "$venv-source/bin/python" -m pip install -q ./python) \
  >"$logs/source.log" 2>&1 &
source_job=$!

stamp "fmt + clippy (python/)"
(cd python && cargo fmt --check && cargo clippy --all-targets -- -D warnings)

stamp "wheel (python/build-wheel.sh)"
dist=target/py-dist
bash python/build-wheel.sh "$dist"
wheel=$(realpath "$(ls "$dist"/segpool-*.whl)")

for v in "${versions[@]}"; do
  stamp "waiting for the environment of Python $v"
  wait "${env_job[$v]}" || { cat "$logs/venv-$v.log"; exit 1; }
done
stamp "waiting for the source install"
wait "$source_job" || { cat "$logs/source.log"; exit 1; }

# PATH without any Rust toolchain: the wheel must need none.
norust=$(tr ':' '\n' <<<"$PATH" | while read -r d; do
  [ -n "$d" ] && ! [ -x "$d/cargo" ] && ! [ -x "$d/rustc" ] && ! [ -x "$d/rustup" ] && echo "$d"
done | paste -sd: -)

status=0
summary=()
run_pytest() { # label env method [pytest args...]
  local label=$1 env=$2 method=$3 line
  shift 3
  echo "=== pytest, $label, default start method: $method"
  set +e
  (cd target && SEGPOOL_START_METHOD=$method PATH="$(realpath "../$env")/bin:$norust" \
    "$(realpath "../$env")/bin/python" -m pytest "$@" -q -rs -p no:cacheprovider) \
    | tee "$logs/pytest.log"
  local rc=${PIPESTATUS[0]}
  set -e
  line=$(grep -E '^[0-9]+ (passed|failed)|^=+ .*(passed|failed|error)' "$logs/pytest.log" | tail -1 | tr -d '=')
  summary+=("$label, $method:$line")
  [ "$rc" = 0 ] || status=1
}

stamp "tests of the wheel"
for v in "${versions[@]}"; do
  env=$(env_of "$v")
  "$env/bin/python" -m pip install -q --no-deps --force-reinstall "$wheel"
  req_spdl=0 req_torch=0
  case $v in 3.11) req_spdl=1 ;; 3.12) req_spdl=1 req_torch=1 ;; esac
  for method in fork spawn forkserver; do
    SEGPOOL_WHEEL=$wheel SEGPOOL_REQUIRE_SPDL=$req_spdl SEGPOOL_REQUIRE_TORCH=$req_torch \
      SEGPOOL_MYPY_CACHE="$PWD/target/py-mypy-$v" \
      run_pytest "Python $v (wheel)" "$env" "$method" "$PWD/python/tests"
  done
done

stamp "tests of the source install"
run_pytest "Python 3.11 (pip install ./python)" "$venv-source" fork \
  "$PWD/python/tests/test_protocol.py" "$PWD/python/tests/test_wheel.py" \
  "$PWD/python/tests/test_findings.py"

stamp "done"
printf '%s\n' "${summary[@]}"
exit $status
