#!/usr/bin/env bash
# Installs what the channel tests need beyond Python, idempotently:
#  - Prism (npm @stoplight/prism-cli, pinned in .ci/node/package.json) into
#    .ci/node/node_modules, for the spec-driven mock servers (tests marked
#    `mockserver`);
#  - a font with Chinese glyphs (Debian fonts-wqy-zenhei) for fax PDFs.
# Pass --docs to also install poppler-utils (pdftoppm), used to regenerate
# docs/img/fax-sample.png.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
node_dir="$here/node"
apt_updated=0

as_root() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }
apt_install() {
  if ! as_root; then
    echo "install-mock-servers: need root with apt-get to install: $*" >&2
    return 1
  fi
  if [ "$apt_updated" = 0 ]; then apt-get update -q; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

# --- Prism -----------------------------------------------------------------
if [ ! -x "$node_dir/node_modules/.bin/prism" ]; then
  command -v npm >/dev/null 2>&1 || apt_install nodejs npm
  cd "$node_dir"
  if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
  else
    npm install --no-audit --no-fund --loglevel=error
  fi
  cd - >/dev/null
fi
echo "prism $("$node_dir/node_modules/.bin/prism" --version 2>/dev/null | tail -n1)"

# --- CJK font ----------------------------------------------------------------
has_cjk_font() {
  if command -v fc-list >/dev/null 2>&1 && [ -n "$(fc-list :lang=zh file 2>/dev/null)" ]; then
    return 0
  fi
  for f in /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc \
           /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc; do
    [ -f "$f" ] && return 0
  done
  return 1
}
if ! has_cjk_font; then
  apt_install fonts-wqy-zenhei fontconfig
fi
echo "cjk font: ok"

# --- optional: pdftoppm for the docs image --------------------------------------
if [ "${1:-}" = "--docs" ] && ! command -v pdftoppm >/dev/null 2>&1; then
  apt_install poppler-utils
fi
