#!/usr/bin/env bash
# The `explain` walkthrough over deploy/examples: for each user story, its policies are
# validated and every case in its expected.txt is explained, tier by tier.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${CHOKEPOINT:-target/release/chokepoint}
examples=deploy/examples

"$bin" check "$examples"
echo
for story in "$examples"/*/; do
  [ -f "$story/expected.txt" ] || continue
  echo "=== $(basename "$story") ==="
  if [ -f "$story/README.md" ]; then
    sed -n '/^[^#[:space:]]/{p;q}' "$story/README.md"
  fi
  echo
  while IFS= read -r line; do
    case "$line" in ''|'#'*) continue ;; esac
    from=${line%% -> *}
    rest=${line#* -> }
    to=${rest%% *}
    expect=${line#*=> }
    args=()
    for word in ${rest%%=>*}; do
      case "$word" in name=*) args+=(--name "${word#name=}") ;; esac
    done
    echo "\$ chokepoint explain --from $from --to $to ${args[*]}   (expected: $expect)"
    "$bin" explain --policies "$story" --inventory "$examples/inventory.yaml" \
      --from "$from" --to "$to" "${args[@]}" | sed 's/^/    /'
    echo
  done < "$story/expected.txt"
done
