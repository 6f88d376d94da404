#!/usr/bin/env bash
# A development certificate authority for sessiond's TLS (issue 9), with
# openssl only. NOT for production: the CA key sits unencrypted next to the
# certificates it signs.
#
#   tools/dev-ca.sh [--nodes N] [--days D] OUT_DIR [IDENTITY...]
#
# Makes in OUT_DIR (created 0700 if missing), each only if it is missing:
#   ca.pem, ca-key.pem               the CA (EC P-256, 10 years)
#   node-I.pem, node-I-key.pem       for I in 1..N (default 3): server AND
#                                    client usage; SAN IP:127.0.0.1,
#                                    DNS:localhost, DNS:node-I; CN node-I
#   IDENTITY.pem, IDENTITY-key.pem   a client certificate (client usage
#                                    only) with CN IDENTITY and SAN
#                                    DNS:IDENTITY, e.g. app, admin, reader
# Idempotent: files that exist are kept, so running it again only adds what
# is new. A certificate whose key exists is re-issued from that key (with a
# new random serial) when only its .pem was deleted: delete node-1.pem and
# run again to rotate node-1's certificate without changing its key. Keys
# are written 0600. Prints one line per file made or kept. Fails if a
# certificate it kept is not signed by the CA in OUT_DIR (ca.pem replaced).
# --days D: validity of node and client certificates (default 825).
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
}

nodes=3
days=825
out=""
identities=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --nodes)
      [ $# -ge 2 ] || { echo "dev-ca.sh: --nodes needs a number" >&2; exit 2; }
      nodes="$2"; shift 2 ;;
    --nodes=*) nodes="${1#--nodes=}"; shift ;;
    --days)
      [ $# -ge 2 ] || { echo "dev-ca.sh: --days needs a number" >&2; exit 2; }
      days="$2"; shift 2 ;;
    --days=*) days="${1#--days=}"; shift ;;
    -*) echo "dev-ca.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *)
      if [ -z "$out" ]; then out="$1"; else identities+=("$1"); fi
      shift ;;
  esac
done
if [ -z "$out" ]; then
  echo "dev-ca.sh: missing OUT_DIR (see --help)" >&2
  exit 2
fi
if ! [[ "$nodes" =~ ^[0-9]+$ ]] || [ "$nodes" -gt 99 ]; then
  echo "dev-ca.sh: --nodes must be 0..99, got '$nodes'" >&2
  exit 2
fi
if ! [[ "$days" =~ ^[1-9][0-9]*$ ]]; then
  echo "dev-ca.sh: --days must be a positive number, got '$days'" >&2
  exit 2
fi
for id in "${identities[@]}"; do
  # The identity becomes a CN and a DNS SAN, and a file name.
  if ! [[ "$id" =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$ ]]; then
    echo "dev-ca.sh: identity '$id' must match [A-Za-z0-9][A-Za-z0-9._-]{0,62}" >&2
    exit 2
  fi
  if [[ "$id" =~ ^(ca|node-[0-9]+)$ ]]; then
    echo "dev-ca.sh: identity '$id' is reserved (the CA and the nodes)" >&2
    exit 2
  fi
done
command -v openssl >/dev/null || { echo "dev-ca.sh: openssl not found" >&2; exit 1; }

umask 077
mkdir -p "$out"
out="$(cd "$out" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

report() { printf '%-5s %s\n' "$1" "$2"; }

# make_key FILE: an EC P-256 key, 0600, unless FILE exists.
make_key() {
  if [ -e "$1" ]; then
    report kept "$1"
  else
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.tmp" 2>/dev/null
    chmod 0600 "$1.tmp"
    mv "$1.tmp" "$1"
    report made "$1"
  fi
}

# ca
make_key "$out/ca-key.pem"
if [ -e "$out/ca.pem" ]; then
  report kept "$out/ca.pem"
else
  cat >"$tmp/ca.cnf" <<'EOF'
[req]
distinguished_name = dn
x509_extensions = ca_ext
prompt = no
[dn]
O = sessiond development
CN = sessiond dev CA
[ca_ext]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
EOF
  openssl req -new -x509 -config "$tmp/ca.cnf" -key "$out/ca-key.pem" -sha256 -days 3650 \
    -set_serial "0x$(openssl rand -hex 16)" -out "$out/ca.pem.tmp" 2>"$tmp/err" ||
    { cat "$tmp/err" >&2; exit 1; }
  chmod 0644 "$out/ca.pem.tmp"
  mv "$out/ca.pem.tmp" "$out/ca.pem"
  report made "$out/ca.pem"
fi

# issue NAME EKU SAN: NAME.pem signed by the CA from NAME-key.pem.
issue() {
  local name="$1" eku="$2" san="$3"
  make_key "$out/$name-key.pem"
  if [ -e "$out/$name.pem" ]; then
    if ! openssl verify -CAfile "$out/ca.pem" "$out/$name.pem" >/dev/null 2>&1; then
      echo "dev-ca.sh: $out/$name.pem is not signed by $out/ca.pem; delete it to re-issue" >&2
      exit 1
    fi
    report kept "$out/$name.pem"
    return
  fi
  cat >"$tmp/$name.ext" <<EOF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = $eku
subjectAltName = $san
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
  openssl req -new -key "$out/$name-key.pem" -subj "/O=sessiond development/CN=$name" \
    -config /dev/null -out "$tmp/$name.csr" 2>"$tmp/err" || { cat "$tmp/err" >&2; exit 1; }
  openssl x509 -req -in "$tmp/$name.csr" -CA "$out/ca.pem" -CAkey "$out/ca-key.pem" \
    -set_serial "0x$(openssl rand -hex 16)" -sha256 -days "$days" \
    -extfile "$tmp/$name.ext" -out "$out/$name.pem.tmp" 2>"$tmp/err" ||
    { cat "$tmp/err" >&2; exit 1; }
  chmod 0644 "$out/$name.pem.tmp"
  # rename(2): a reader (gRPC's file watcher) sees the old or the new file.
  mv "$out/$name.pem.tmp" "$out/$name.pem"
  report made "$out/$name.pem"
}

for ((i = 1; i <= nodes; i++)); do
  issue "node-$i" "serverAuth, clientAuth" "IP:127.0.0.1, DNS:localhost, DNS:node-$i"
done
for id in "${identities[@]}"; do
  issue "$id" "clientAuth" "DNS:$id"
done
