#!/usr/bin/env bash
# Coverage-guided fuzzing of tern (cargo-fuzz / libFuzzer, see fuzz/README.md).
#
#   tests/fuzz.sh [SECONDS_PER_TARGET]     (default 30)
#
# Builds every target in fuzz/ with `cargo +nightly fuzz build`, runs each for the
# given time on a copy of its seed corpus (fuzz/corpus/<target>/ is never
# modified), and prints one line per target:
#
#   TERN-FUZZ target=NAME execs=N cov=N ft=N corpus=N seconds=S result=ok|crash
#
# Exits non-zero if any target crashed, after printing the crash file (copied to
# fuzz/artifacts/<target>/, which git ignores) and the command that reproduces it.
# TERN_FUZZ_KEEP=1 keeps the work directory (the grown corpora, to merge into
# fuzz/corpus/: see fuzz/README.md).
set -uo pipefail

seconds="${1:-30}"
case "$seconds" in
    '' | *[!0-9]*) echo "usage: tests/fuzz.sh [SECONDS_PER_TARGET]" >&2; exit 2 ;;
esac

root="$(cd "$(dirname "$0")/.." && pwd)"
fuzz="$root/fuzz"
export PATH="$HOME/.cargo/bin:$PATH"
# The fuzz crate builds into its own target directory (nightly + sanitizer flags
# would thrash a shared one).
unset CARGO_TARGET_DIR

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "tests/fuzz.sh: the nightly toolchain is missing (rustup toolchain install nightly)" >&2
    exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "tests/fuzz.sh: installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked || { echo "tests/fuzz.sh: cannot install cargo-fuzz" >&2; exit 2; }
fi

cd "$fuzz" || exit 2
if ! cargo +nightly fuzz build; then
    echo "tests/fuzz.sh: building the fuzz targets failed" >&2
    exit 2
fi
bin_dir="$fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release"
mapfile -t targets < <(cargo +nightly fuzz list)
if [ "${#targets[@]}" -eq 0 ]; then
    echo "tests/fuzz.sh: no fuzz targets found" >&2
    exit 2
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/tern-fuzz.XXXXXX")"
failed=0
for target in "${targets[@]}"; do
    dir="$work/$target"
    mkdir -p "$dir/corpus" "$dir/artifacts" "$dir/tmp"
    if [ -d "$fuzz/corpus/$target" ]; then
        cp "$fuzz/corpus/$target"/* "$dir/corpus/" 2>/dev/null
    fi
    start=$(date +%s)
    # TMPDIR: the block target's images go there and are removed with $work.
    TMPDIR="$dir/tmp" "$bin_dir/$target" "$dir/corpus" \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$dir/artifacts/" >"$dir/log" 2>&1
    rc=$?
    elapsed=$(( $(date +%s) - start ))

    status_line="$(grep -E '^#[0-9]+.*cov: ' "$dir/log" | tail -n 1)"
    cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$status_line")"
    ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$status_line")"
    corpus="$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$status_line")"
    execs="$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$dir/log" | tail -n 1)"
    [ -n "$execs" ] || execs="$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$status_line")"

    crashes=("$dir"/artifacts/*)
    result=ok
    if [ "$rc" -ne 0 ] || [ -e "${crashes[0]}" ]; then
        result=crash
        failed=1
    fi
    echo "TERN-FUZZ target=$target execs=${execs:-0} cov=${cov:-0} ft=${ft:-0} corpus=${corpus:-0} seconds=$elapsed result=$result"
    if [ "$result" = crash ]; then
        mkdir -p "$fuzz/artifacts/$target"
        grep -E 'ERROR: |panicked at|SUMMARY' "$dir/log" | head -n 5 | sed 's/^/  /'
        for crash in "${crashes[@]}"; do
            [ -e "$crash" ] || continue
            cp "$crash" "$fuzz/artifacts/$target/"
            saved="$fuzz/artifacts/$target/$(basename "$crash")"
            echo "  crash file: $saved"
            echo "  reproduce:  (cd $fuzz && cargo +nightly fuzz run $target $saved)"
        done
        [ -e "${crashes[0]}" ] || echo "  exit status $rc without a crash file; log: $dir/log"
    fi
done

if [ "$failed" -eq 0 ] && [ "${TERN_FUZZ_KEEP:-0}" != 1 ]; then
    rm -rf "$work"
else
    echo "tests/fuzz.sh: work directory kept: $work (grown corpora in $work/<target>/corpus, logs in $work/<target>/log)"
fi
exit "$failed"
