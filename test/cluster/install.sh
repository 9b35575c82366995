#!/usr/bin/env bash
# Installs what the cluster tests start: PostgreSQL (Debian's package; it also creates the
# `postgres` system user the server runs as, since postgres refuses to run as root), a JDK and
# Maven, and S3Proxy (an S3-compatible server on the JDK) from Maven Central into
# .cache/s3proxy/. Everything already present is left alone, so a second run costs ~nothing.
# Prints the S3Proxy jar's path last.
set -euo pipefail
cd "$(dirname "$0")/../.."

S3PROXY_VERSION="${S3PROXY_VERSION:-4.1.0}"
JAR=".cache/s3proxy/s3proxy-${S3PROXY_VERSION}-jar-with-dependencies.jar"

sudo=""; [[ $(id -u) == 0 ]] || sudo="sudo"
missing=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing+=(postgresql)
command -v java >/dev/null || missing+=(default-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
if ((${#missing[@]})); then
  echo "cluster tests: installing ${missing[*]} (Debian packages)" >&2
  $sudo apt-get update -qq
  $sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian package starts a cluster of its own on port 5432; the tests never use it (each run
# makes its own in a temp dir on a free port), so it is left as the package set it up.

if [[ ! -s "$JAR" ]]; then
  echo "cluster tests: fetching org.gaul:s3proxy:${S3PROXY_VERSION} (jar-with-dependencies) from Maven Central" >&2
  mkdir -p .cache/s3proxy
  # The plugin is named with its version: Maven 3.8's default dependency plugin (2.x) has no
  # standalone `copy -Dartifact`.
  mvn -q -B org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
    -Dartifact="org.gaul:s3proxy:${S3PROXY_VERSION}:jar:jar-with-dependencies" \
    -DoutputDirectory=.cache/s3proxy >&2
fi
echo "$PWD/$JAR"
