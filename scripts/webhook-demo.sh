#!/usr/bin/env bash
# The webhook on this machine: generate a CA and serving certificate, start the webhook over
# HTTPS, send it a real-shaped AdmissionReview with curl trusting only that CA (as the API server
# does with caBundle), and show the JSON patch it answers with. Cleans up on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO=${DEMO_DIR:-.demo/webhook}
PORT=${PORT:-8443}
mkdir -p "$DEMO"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
now() { date +%s%3N; }

WEBHOOK_PID=
cleanup() { [ -n "$WEBHOOK_PID" ] && kill "$WEBHOOK_PID" 2>/dev/null && wait "$WEBHOOK_PID" 2>/dev/null; true; }
trap cleanup EXIT INT TERM

step "1. certificates for Service dynamic-volumes-webhook.dynamic-volumes (plus localhost)"
t=$(now)
npx tsx certs/main.ts generate --service dynamic-volumes-webhook --namespace dynamic-volumes \
  --out-dir "$DEMO" --extra-dns localhost --extra-ip 127.0.0.1
[ -s "$DEMO/signing-key" ] || (umask 077 && head -c 32 /dev/urandom | base64 > "$DEMO/signing-key")
echo "   $(( $(now) - t )) ms: $(ls "$DEMO" | tr '\n' ' ')"

step "2. start the webhook on https://localhost:$PORT"
if curl -s -o /dev/null -k "https://localhost:$PORT/"; then
  echo "   something already listens on port $PORT; stop it or run with PORT=<free port>" >&2
  exit 1
fi
t=$(now)
# The same as `npm run webhook -- …`, without npm and tsx in between, so SIGTERM reaches it directly.
node_modules/.bin/node --import tsx webhook/main.ts --listen "127.0.0.1:$PORT" --tls-cert-file "$DEMO/tls.crt" --tls-key-file "$DEMO/tls.key" \
  --signing-key-file "$DEMO/signing-key" > "$DEMO/webhook.log" 2>&1 &
WEBHOOK_PID=$!
until curl -fsS --cacert "$DEMO/ca.crt" "https://localhost:$PORT/readyz" >/dev/null 2>&1; do
  kill -0 "$WEBHOOK_PID" 2>/dev/null || { cat "$DEMO/webhook.log"; exit 1; }
  sleep 0.1
done
echo "   ready after $(( $(now) - t )) ms (pid $WEBHOOK_PID)"

step "3. POST test/fixtures/admission-review.json (a Deployment's pod asking for two buckets)"
echo "   curl --cacert $DEMO/ca.crt -H 'Content-Type: application/json' --data @test/fixtures/admission-review.json https://localhost:$PORT/mutate"
t=$(now)
curl -sS --cacert "$DEMO/ca.crt" -H 'Content-Type: application/json' \
  --data @test/fixtures/admission-review.json "https://localhost:$PORT/mutate" > "$DEMO/response.json"
echo "   answered in $(( $(now) - t )) ms (curl round trip, including the TLS handshake)"

step "4. the AdmissionReview response, with its JSONPatch decoded"
node_modules/.bin/node -e '
  const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).response;
  const { patch, ...rest } = r;
  console.log(JSON.stringify(rest, null, 2));
  console.log("patch (decoded from base64):");
  console.log(JSON.stringify(JSON.parse(Buffer.from(patch, "base64").toString()), null, 2));
' "$DEMO/response.json"

step "5. a malformed review gets a clear 400"
curl -sS --cacert "$DEMO/ca.crt" -H 'Content-Type: application/json' --data '{"apiVersion":"v1"}' \
  -w '\n   HTTP %{http_code}\n' "https://localhost:$PORT/mutate"

step "6. metrics"
curl -sS --cacert "$DEMO/ca.crt" "https://localhost:$PORT/metrics" | grep -E '^dynamic_volumes_webhook_requests_total'

step "7. SIGTERM: graceful shutdown"
kill -TERM "$WEBHOOK_PID"; wait "$WEBHOOK_PID" || true; WEBHOOK_PID=
grep -E '"msg":"(shutting down|stopped)' "$DEMO/webhook.log"
