# shellcheck shell=sh
# Move a cloud box's own power-off deadline. Params (quoted assignments before this file):
#   BACKSTOP_FILE  the file the box's timer reads (unix seconds)
#   EXPIRES_AT     the new deadline, unix seconds
# A box without a writable backstop file has none to move: that is success, not an error.
if [ -w "$BACKSTOP_FILE" ]; then
    printf '%s\n' "$EXPIRES_AT" > "$BACKSTOP_FILE"
fi
