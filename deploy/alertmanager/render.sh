#!/bin/sh
# Writes the Alertmanager config IN to OUT with ALERT_WEBHOOK_URL in place of the placeholder
# receiver URL, then runs the rest of the arguments (the compose service's command).
#
#   render.sh IN OUT [COMMAND ...]
#
# A missing URL, or one that is not http(s), stops here with a message.
set -eu
in=$1
out=$2
shift 2
placeholder='http://alert-webhook.invalid/'
url=${ALERT_WEBHOOK_URL:-}
case $url in
  http://?* | https://?*) ;;
  *)
    echo "alertmanager: set ALERT_WEBHOOK_URL to the http(s) URL of the on-call webhook" >&2
    exit 1
    ;;
esac
# Inside a YAML double-quoted string, then a sed replacement: escape \ and " , then \ | and &.
quoted=$(printf '%s\n' "$url" | sed -e 's/[\\"]/\\&/g' -e 's/[\\|&]/\\&/g')
grep -q "\"$placeholder\"" "$in" || { echo "alertmanager: no placeholder in $in" >&2; exit 1; }
sed "s|\"$placeholder\"|\"$quoted\"|" "$in" >"$out"
[ $# -eq 0 ] || exec "$@"
