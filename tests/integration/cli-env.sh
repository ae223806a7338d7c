# Sourced by the CLI tests (tests/integration/test_cli*.sh): fw (the facework binary, under
# FW_TEST_WRAPPER when scripts/valgrind.sh sets one), photos, py, a private temporary
# directory tmp (removed at exit) and fail.
fw=${FW_FACEWORK:?}
photos=${FW_PHOTOS_DIR:?}
py=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# FW_TEST_WRAPPER (scripts/valgrind.sh): every facework below runs under it.
if [ -n "${FW_TEST_WRAPPER:-}" ]; then
    printf '#!/bin/sh\nexec %s %q "$@"\n' "$FW_TEST_WRAPPER" "$fw" >"$tmp/fw-wrapped"
    chmod +x "$tmp/fw-wrapped"
    fw=$tmp/fw-wrapped
fi
fail() { echo "FAIL: $*" >&2; exit 1; }
