#!/usr/bin/env bash
# Installs Debian packages for the install scripts: `apt-install.sh WHO PACKAGE...` (WHO
# names the caller in the log). Waits for another install's lock instead of failing; sudo
# when not root. Everything goes to stderr.
set -euo pipefail
who="$1"
shift
echo "$who: installing $*" >&2
SUDO=()
if [ "$(id -u)" -ne 0 ]; then SUDO=(sudo -n); fi
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
"${SUDO[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$@" >&2
