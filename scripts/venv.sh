# Sourced by scripts/demo and scripts/test, from the project's root. Outside a
# virtualenv, make (once) and activate the project's own, .venv: nothing is
# installed into the system's Python (Debian's refuses with
# externally-managed-environment). Inside an active one, that one is used.
if [ -z "${VIRTUAL_ENV:-}" ]; then
  if [ ! -x .venv/bin/python ]; then
    rm -rf .venv
    if ! python3 -m venv .venv >/dev/null 2>&1; then
      rm -rf .venv
      # Debian's python3 makes virtualenvs only with its python3-venv package.
      if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv
        python3 -m venv .venv
      else
        echo "$0: python3 cannot make a virtualenv; install it with: sudo apt-get install python3-venv" >&2
        exit 1
      fi
    fi
  fi
  # shellcheck disable=SC1091
  source .venv/bin/activate
fi
