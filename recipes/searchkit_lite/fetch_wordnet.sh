#!/usr/bin/env bash
# Fetch WordNet 3.0 (Debian package wordnet-base, WordNet licence) for the searchkit-lite recipe:
# the ImageNet synsets' hypernyms and glosses become extra captions. Writes DEST/data.noun.
#   recipes/searchkit_lite/fetch_wordnet.sh DEST
# DEST is the recipe's --wordnet folder: CACHE/data/wordnet (CACHE: the recipe's --cache, by
# default <user cache>/searchkit/searchkit-lite-recipe, e.g. ~/.cache/searchkit/... on Linux).
set -euo pipefail
DEST="${1:?usage: $0 DEST (the folder that gets data.noun)}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$DEST"
(cd "$WORK" && apt-get download wordnet-base >/dev/null 2>&1)
dpkg-deb -x "$WORK"/wordnet-base_*.deb "$WORK/x"
cp "$WORK/x/usr/share/wordnet/data.noun" "$WORK/x/usr/share/wordnet/index.noun" "$DEST/"
cp "$WORK/x/usr/share/doc/wordnet-base/copyright" "$DEST/COPYRIGHT"
echo "WordNet nouns in $DEST"
