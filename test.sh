#!/usr/bin/env bash
# The test command README.md gives: installs what the tests need beyond the Rust
# toolchain, then runs every test of the workspace.
#
# - python3: the example and test workflows use its standard library;
# - python3's rdflib: the demo's W3C PROV-O export is read back with it;
# - python3's venv: the Python package (python/) is tested with pytest in a
#   virtual environment under target/, with its dependencies from PyPI;
# - iproute2 (ip, tc), as root only: the partition and slow-link scenarios;
# - bubblewrap (bwrap), as root only: the job sandbox's tests;
# - cwltool, as root only: the cwl executor's tests;
# - slurm-wlm and munge, as root only: the slurm executor's test starts a
#   single-node cluster (slurmctld, slurmd, munged);
# - podman, runc and busybox-static, as root only: the container executor's
#   tests import a busybox image from files (no registry is reachable).
#
# As root, missing Debian packages are installed with apt-get (rdflib with pip
# when python3 is not the system's); otherwise the script says what to install.
set -euo pipefail
cd "$(dirname "$0")"

root=false
[ "$(id -u)" = 0 ] && root=true
packages=()
command -v python3 >/dev/null 2>&1 || packages+=(python3)
if $root && ! command -v ip >/dev/null 2>&1; then packages+=(iproute2); fi
if $root && ! command -v bwrap >/dev/null 2>&1; then packages+=(bubblewrap); fi
if $root && ! command -v cwltool >/dev/null 2>&1; then packages+=(cwltool); fi
if $root && ! command -v slurmctld >/dev/null 2>&1; then packages+=(slurm-wlm munge); fi
if $root && ! command -v podman >/dev/null 2>&1; then packages+=(podman runc); fi
if $root && ! dpkg -s busybox-static >/dev/null 2>&1; then packages+=(busybox-static); fi

has_rdflib() { command -v python3 >/dev/null 2>&1 && python3 -c 'import rdflib' 2>/dev/null; }
system_python() {
  # The python3 on PATH is Debian's own (so python3-rdflib serves it).
  [ "$(command -v python3 2>/dev/null)" = /usr/bin/python3 ] || [ "$(command -v python3 2>/dev/null)" = /bin/python3 ]
}
if ! python3 -c 'import ensurepip' >/dev/null 2>&1 && system_python; then packages+=(python3-venv); fi
pip_rdflib=false
if ! has_rdflib; then
  if ! command -v python3 >/dev/null 2>&1 || system_python; then
    packages+=(python3-rdflib)
  else
    pip_rdflib=true
  fi
fi

if [ ${#packages[@]} -gt 0 ]; then
  if $root; then
    apt-get update -qq && apt-get install -y -qq "${packages[@]}"
  else
    echo "missing: ${packages[*]}; install them (e.g. sudo apt-get install ${packages[*]}) and rerun" >&2
    exit 1
  fi
fi
if $pip_rdflib; then
  python3 -m pip install --quiet rdflib || {
    echo "cannot install rdflib for $(command -v python3); install it (python3 -m pip install rdflib) and rerun" >&2
    exit 1
  }
fi

cargo test --workspace

# The Python package against the oda-node just built: the package and its
# test extra (blake3, pytest) from PyPI into a virtual environment.
venv=target/python-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check ./python'[test]' pytest
ODA_NODE_BIN="$PWD/target/debug/oda-node" "$venv/bin/python" -m pytest -q python/tests
