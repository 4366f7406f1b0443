#!/usr/bin/env bash
# Build gdjax's documentation site into build/docs/html (open index.html).
#
# Strict: sphinx-build -W -n --keep-going, so a broken cross-reference, a public
# object without a docstring, a docstring that does not parse or a README link
# to a file outside the site fails the build (after listing every problem).
# Needs the docs extra: pip install -e '.[docs]'. MathJax 3 is taken once from
# the npm registry (cached in build/docs/mathjax) so the pages render maths
# without network; set GDJAX_DOCS_OFFLINE_MATH=0 to use its CDN instead.
set -euo pipefail
cd "$(dirname "$0")/.."
MATHJAX_VERSION=3.2.2
out=build/docs
mkdir -p "$out"
rm -rf "$out/src" "$out/html"
mkdir -p "$out/src"

if [ "${GDJAX_DOCS_OFFLINE_MATH:-1}" = 1 ] \
  && [ ! -f "$out/mathjax/package/es5/tex-chtml.js" ]; then
  rm -rf "$out/mathjax" && mkdir -p "$out/mathjax"
  if ! (cd "$out/mathjax" && npm pack --silent "mathjax@$MATHJAX_VERSION" >/dev/null \
    && tar -xzf "mathjax-$MATHJAX_VERSION.tgz"); then
    echo "build_docs: npm could not fetch mathjax@$MATHJAX_VERSION;" \
      "the pages will load MathJax from its CDN" >&2
  fi
fi
if [ "${GDJAX_DOCS_OFFLINE_MATH:-1}" = 1 ] \
  && [ -f "$out/mathjax/package/es5/tex-chtml.js" ]; then
  rm -rf "$out/static" && mkdir -p "$out/static/mathjax/output/chtml"
  cp "$out/mathjax/package/es5/tex-chtml.js" "$out/static/mathjax/"
  cp -r "$out/mathjax/package/es5/output/chtml/fonts" "$out/static/mathjax/output/chtml/"
  cp "$out/mathjax/package/LICENSE" "$out/static/mathjax/LICENSE"
  export GDJAX_DOCS_STATIC="$PWD/$out/static"
fi

python -m sphinx -b html -c docs/site -W -n --keep-going -q -j 1 \
  "$out/src" "$out/html"
echo "docs: $out/html/index.html"
