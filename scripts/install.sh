#!/usr/bin/env bash
# Install Reverie and everything it needs on a fresh Debian/Ubuntu machine.
#   bash scripts/install.sh            # library + CLI
#   bash scripts/install.sh dev        # + test tools and the Memory Maze extra
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
GL_PACKAGES="libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 libglx-mesa0 libgles2 libosmesa6"

have_gl() {
  ldconfig -p | grep -q 'libEGL.so.1' && ldconfig -p | grep -q 'libOSMesa.so' \
    && ls /usr/lib/*/dri/swrast_dri.so >/dev/null 2>&1
}
if ! have_gl; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "[install] apt-get install $GL_PACKAGES"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $GL_PACKAGES >/dev/null
  else
    echo "[install] MuJoCo needs headless GL libraries. As root, run:" >&2
    echo "    apt-get update && apt-get install -y $GL_PACKAGES" >&2
    exit 1
  fi
fi

spec="."
case "$extras" in
  dev) spec=".[dev,memorymaze]" ;;
  "") ;;
  *) echo "unknown extras '$extras' (use: dev)" >&2; exit 2 ;;
esac
# The browser tests of `reverie play` drive Debian's chromium with Playwright (no browser
# download: tests/play/test_play_browser.py uses executable_path=/usr/bin/chromium).
if [ "$extras" = "dev" ] && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "[install] apt-get install chromium"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "[install] the reverie play browser tests need chromium (skipped without it). As" \
      "root, run: apt-get update && apt-get install -y chromium" >&2
  fi
fi
# torch is pinned to 2.13.0 (the local CPU wheel) by constraints.txt, so no package can pull a
# CUDA build in its place.
python -m pip install -q --disable-pip-version-check -c constraints.txt -e "$spec"
python -c "import reverie, torch, mujoco; print('[install] reverie', reverie.__version__, \
'torch', torch.__version__, 'mujoco', mujoco.__version__)"
