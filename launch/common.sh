# Shared by launch/*.sh: find a Python that dm-reverb supports and make the project's venv.
# Usage: source this file, then `ensure_venv` or `ensure_venv test`.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DISTRIBUTED_SAC_VENV:-$REPO_ROOT/.venv}"
SUPPORTED_PYTHONS="3.9 3.10 3.11"

python_version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null; }

is_supported() {
  local v
  v="$(python_version "$1")" || return 1
  case " $SUPPORTED_PYTHONS " in *" $v "*) return 0 ;; esac
  return 1
}

find_python() {
  # $PYTHON, when set, is the only candidate: the user chose it.
  if [ -n "${PYTHON:-}" ]; then
    if is_supported "$PYTHON"; then echo "$PYTHON"; return 0; fi
    echo "error: \$PYTHON=$PYTHON is Python $(python_version "$PYTHON" || echo '?'); distributed_sac needs CPython 3.9, 3.10 or 3.11 (dm-reverb 0.14 ships wheels only for these)" >&2
    return 1
  fi
  local candidate
  for candidate in python3.11 python3.10 python3.9 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && is_supported "$candidate"; then
      command -v "$candidate"; return 0
    fi
  done
  echo "error: no CPython 3.9, 3.10 or 3.11 found (dm-reverb 0.14 ships wheels only for these); install one or set PYTHON=/path/to/python3.11" >&2
  return 1
}

check_python() {
  # The venv's Python, or the one that would make it, is supported: said before any slow work.
  if [ -x "$VENV/bin/python" ]; then
    is_supported "$VENV/bin/python" && return 0
    echo "error: $VENV uses Python $(python_version "$VENV/bin/python"); distributed_sac needs CPython 3.9, 3.10 or 3.11. Remove $VENV and retry." >&2
    return 1
  fi
  find_python >/dev/null
}

ensure_venv() {
  local extras="${1:-}" spec="." stamp
  [ -n "$extras" ] && spec=".[$extras]"
  stamp="$VENV/.distributed_sac-installed${extras:+-$extras}"
  check_python || return 1
  if [ ! -x "$VENV/bin/python" ]; then
    local python
    python="$(find_python)" || return 1
    echo "creating $VENV with $python ($(python_version "$python"))" >&2
    "$python" -m venv "$VENV" || return 1
  fi
  if [ ! -f "$stamp" ] || [ "$REPO_ROOT/pyproject.toml" -nt "$stamp" ]; then
    echo "installing distributed_sac${extras:+ with [$extras]} into $VENV (first run takes a few minutes)" >&2
    local log
    log="$(mktemp)"
    # pip's notes about this machine's local index folders are noise; keep real messages.
    if ! (cd "$REPO_ROOT" && "$VENV/bin/python" -m pip install --quiet -e "$spec") >"$log" 2>&1; then
      grep -v "is ignored: it is neither a file nor a directory" "$log" >&2 || true
      rm -f "$log"
      echo "error: installing distributed_sac into $VENV failed; see pip's output above" >&2
      return 1
    fi
    grep -v "is ignored: it is neither a file nor a directory" "$log" >&2 || true
    rm -f "$log"
    touch "$stamp"
  fi
}

SYSTEM_PACKAGES_FILE="$REPO_ROOT/launch/system-packages.txt"

system_packages() {
  # The package names of the given groups in launch/system-packages.txt.
  local group
  for group in "$@"; do
    awk -v g="$group" '$1 == g { print $2 }' "$SYSTEM_PACKAGES_FILE"
  done
}

ensure_system_packages() {
  # Installs the Debian packages of the given groups that are not installed yet (apt-get, as
  # root); a non-root user missing some is told the command. Not Debian: a note, and on.
  local wanted missing=() package
  wanted="$(system_packages "$@")"
  if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    echo "note: not a Debian-like system; make sure these are installed:" $wanted >&2
    return 0
  fi
  for package in $wanted; do
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null)" = installed ] \
      || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "error: missing Debian packages: ${missing[*]}; install them with: sudo apt-get install --no-install-recommends ${missing[*]}" >&2
    return 1
  fi
  echo "installing ${missing[*]} with apt-get" >&2
  local log
  log="$(mktemp)"
  apt_install() {
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q \
      --no-install-recommends "${missing[@]}" >"$log" 2>&1
  }
  # A new machine may have no package lists yet, or old ones.
  if ! apt_install && ! { apt-get -o DPkg::Lock::Timeout=300 update -q >>"$log" 2>&1 && apt_install; }; then
    tail -5 "$log" >&2
    rm -f "$log"
    echo "error: apt-get install ${missing[*]} failed; see apt-get's output above" >&2
    return 1
  fi
  rm -f "$log"
}
