#!/usr/bin/env bash
# Markdown review of the recipes a pull request changes, for a PR comment.
#
#   scripts/pr-diff.sh BASE_REV > review.md
#
# For every registry/<name>.toml that differs between BASE_REV's merge base and HEAD:
#   changed -> `dynq diff registry/<name>.toml --rev BASE_REV --format markdown`
#   added   -> `dynq plan registry/<name>.toml --format markdown` (there is nothing to diff)
#   deleted -> one line
# A recipe dynq cannot read is reported in the comment with dynq's one-line error, and the
# script then exits 1 (after printing everything). Usage errors exit 2.
# DYNQ names the command to run (default: dynq), e.g. DYNQ="python -m dynq".
set -uo pipefail

MARKER="<!-- dynq-recipe-diff -->"

if [ $# -ne 1 ]; then
    echo "usage: $0 BASE_REV" >&2
    exit 2
fi
base=$1
read -r -a dynq <<<"${DYNQ:-dynq}"

top=$(git rev-parse --show-toplevel 2>/dev/null) || { echo "$0: not in a git repository" >&2; exit 2; }
cd "$top" || exit 2
if ! git rev-parse --verify --quiet "$base^{commit}" >/dev/null; then
    echo "$0: unknown revision '$base' (fetch it: git fetch origin <branch>, or checkout with fetch-depth: 0)" >&2
    exit 2
fi

# Recipes are the .toml files directly in registry/ (not calibration data or inventories).
# Three dots: changes on HEAD's side since the merge base, as GitHub's "Files changed" shows.
mapfile -t changes < <(git diff --no-renames --name-status "$base...HEAD" -- registry/ |
    awk -F '\t' '$2 ~ /^registry\/[^\/]+\.toml$/ { print $1 "\t" $2 }')

echo "$MARKER"
echo "## Recipe review"
echo
if [ ${#changes[@]} -eq 0 ]; then
    echo "No recipe in \`registry/\` changed (compared with \`$base\`)."
    exit 0
fi
echo "Against \`$base\` ($(git rev-parse --short "$base")), by \`dynq diff --format markdown\`."

status=0
for line in "${changes[@]}"; do
    kind=${line%%$'\t'*}
    path=${line#*$'\t'}
    name=$(basename "$path" .toml)
    echo
    case "$kind" in
    D)
        echo "### \`$name\`: removed"
        echo
        echo "\`$path\` is deleted by this pull request."
        continue
        ;;
    A)
        echo "### \`$name\`: new recipe"
        echo
        cmd=("${dynq[@]}" plan "$path" --format markdown)
        ;;
    *)
        cmd=("${dynq[@]}" diff "$path" --rev "$base" --format markdown)
        ;;
    esac
    err=$(mktemp)
    if out=$("${cmd[@]}" 2>"$err"); then
        if [ "$kind" = A ]; then
            printf '<details><summary>every target'"'"'s plan</summary>\n\n%s\n\n</details>\n' "$out"
        else
            printf '%s\n' "$out"
        fi
    else
        status=1
        [ "$kind" = A ] || echo "### \`$name\`"
        [ "$kind" = A ] || echo
        echo "**dynq could not read this recipe:**"
        echo
        echo '```'
        cat "$err"
        echo '```'
    fi
    rm -f "$err"
done
exit $status
