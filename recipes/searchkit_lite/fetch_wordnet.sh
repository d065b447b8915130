#!/usr/bin/env bash
# Fetch WordNet 3.0 (Debian package wordnet-base, WordNet licence) for the searchkit-lite recipe:
# the ImageNet synsets' hypernyms and glosses become extra captions. Writes DEST/data.noun.
#   scripts/fetch_wordnet.sh [DEST]    (default /work/cache/data/wordnet)
set -euo pipefail
DEST="${1:-/work/cache/data/wordnet}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$DEST"
(cd "$WORK" && apt-get download wordnet-base >/dev/null 2>&1)
dpkg-deb -x "$WORK"/wordnet-base_*.deb "$WORK/x"
cp "$WORK/x/usr/share/wordnet/data.noun" "$WORK/x/usr/share/wordnet/index.noun" "$DEST/"
cp "$WORK/x/usr/share/doc/wordnet-base/copyright" "$DEST/COPYRIGHT"
echo "WordNet nouns in $DEST"
