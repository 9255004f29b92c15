#!/usr/bin/env bash
# Installs the tools beyond Python that careflow's demo and test suite use,
# idempotently. `make demo` and `make test` run it on every call, so when
# everything is there it only makes cheap checks (well under a second) and
# prints one line.
#
#   .ci/install-tools.sh [demo|test|docs]...     (no argument: test)
#
#   demo  a font with Chinese glyphs (Debian fonts-wqy-zenhei): fax PDFs
#   test  the font, plus Node tools pinned in .ci/node/package-lock.json
#         (Prism, the spec-driven mock server; playwright-core, the driver
#         for the browser test, which never downloads a browser of its own)
#         and Debian's chromium (/usr/bin/chromium) for the Prefect UI test
#   docs  poppler-utils (pdftoppm), to regenerate docs/img/fax-sample.png
#
# Debian packages need root with apt-get (or password-less sudo); without
# that the script names what to install and exits 1.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
node_dir="$here/node"
# npm ci leaves the lock file it installed here; a different one means reinstall.
installed_lock="$node_dir/node_modules/.careflow-installed-lock.json"
apt_updated=0
report=()

die() { echo "install-tools: $*" >&2; exit 1; }

apt_install() {
  local run=()
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      run=(sudo -n)
    else
      die "need root to install Debian packages: apt-get install $*"
    fi
  fi
  command -v apt-get >/dev/null 2>&1 || die "no apt-get here: install $* yourself"
  echo "install-tools: apt-get install $*" >&2
  if [ "$apt_updated" = 0 ]; then
    "${run[@]}" apt-get update -qq
    apt_updated=1
  fi
  "${run[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

has_cjk_font() {
  # the same places careflow/channels/fax.py looks first, then fontconfig
  local f
  for f in /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc \
           /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc; do
    [ -f "$f" ] && return 0
  done
  command -v fc-list >/dev/null 2>&1 && [ -n "$(fc-list :lang=zh file 2>/dev/null)" ]
}

install_font() {
  has_cjk_font || apt_install fonts-wqy-zenhei fontconfig
  has_cjk_font || die "fonts-wqy-zenhei installed but no CJK font found"
  report+=("CJK font")
}

node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

install_node_tools() {
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
  fi
  # playwright-core 1.65 needs Node 20 (Debian 12's own nodejs is 18)
  [ "$(node_major)" -ge 20 ] || die "Node.js 20 or newer needed, found $(node --version)"
  if ! cmp -s "$node_dir/package-lock.json" "$installed_lock" \
     || [ ! -x "$node_dir/node_modules/.bin/prism" ] \
     || [ ! -f "$node_dir/node_modules/playwright-core/package.json" ]; then
    echo "install-tools: npm ci in .ci/node" >&2
    (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    cp "$node_dir/package-lock.json" "$installed_lock"
  fi
  report+=("node $(node --version)" "Prism + playwright-core (.ci/node)")
}

install_browser() {
  [ -x /usr/bin/chromium ] || apt_install chromium
  [ -x /usr/bin/chromium ] || die "chromium installed but /usr/bin/chromium is missing"
  report+=("chromium")
}

install_docs_tools() {
  command -v pdftoppm >/dev/null 2>&1 || apt_install poppler-utils
  report+=("pdftoppm")
}

[ "$#" -gt 0 ] || set -- test
for what in "$@"; do
  case "$what" in
    demo) install_font ;;
    test) install_font; install_node_tools; install_browser ;;
    docs) install_docs_tools ;;
    *) die "unknown part '$what' (demo, test or docs)" ;;
  esac
done
summary="$(printf '%s, ' "${report[@]}")"
echo "tools ok: ${summary%, }"
