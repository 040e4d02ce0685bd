#!/usr/bin/env bash
# Regenerates api/ktpb from api/proto, and the OpenAPI document of the
# Directory's HTTP/JSON API (api/openapi, docs/design.md 10.1) from the same
# file. Needs protoc (Debian: protobuf-compiler)
# and the plugins at the versions pinned below (installed with go install).
set -euo pipefail
cd "$(dirname "$0")/.."
PROTOC_GEN_GO=v1.36.12
PROTOC_GEN_GO_GRPC=v1.6.2
bin=$(go env GOPATH)/bin
want_go="protoc-gen-go $PROTOC_GEN_GO"
if [ "$("$bin/protoc-gen-go" --version 2>/dev/null)" != "$want_go" ]; then
  go install google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO
fi
if [ "$("$bin/protoc-gen-go-grpc" --version 2>/dev/null)" != "protoc-gen-go-grpc ${PROTOC_GEN_GO_GRPC#v}" ]; then
  go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC
fi
if ! command -v protoc >/dev/null; then
  echo "protoc not found: apt-get install protobuf-compiler" >&2
  exit 1
fi
PATH="$bin:$PATH" protoc -I api/proto \
  --go_out=api/ktpb --go_opt=paths=source_relative \
  --go-grpc_out=api/ktpb --go-grpc_opt=paths=source_relative \
  kt/v1/kt.proto
# Flatten kt/v1/ into api/ktpb.
mv api/ktpb/kt/v1/*.go api/ktpb/
rm -rf api/ktpb/kt
# The OpenAPI document, from a descriptor set with the .proto's comments.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
protoc -I api/proto --include_source_info --descriptor_set_out="$tmp/kt.pb" kt/v1/kt.proto
mkdir -p api/openapi
go run ./internal/genopenapi -in "$tmp/kt.pb" -out api/openapi/kt.v1.directory.json
