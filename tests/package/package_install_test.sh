#!/usr/bin/env bash
# The Debian package on a clean Debian 12 root, as a new operator would meet it: build the .deb
# (cpack over the release build), make a minimal bookworm root with mmdebstrap (cached as a tarball;
# apt's package cache too), `apt-get install ./deeplens_*.deb` in a chroot (the package's
# dependencies come from Debian, nothing from this host), check the user, the data directory, the
# conffile and the units; start `deeplens serve` there as the deeplens user with the packaged
# configuration, upload a photograph and see it completed; stop it with SIGTERM (clean exit); remove
# (data kept) and purge (data and user gone).
#
# usage: package_install_test.sh SOURCE_DIR BUILD_DIR
# Needs root (chroot, mounts) and network access to a Debian mirror. ctest label `package`: where
# that is not available, `scripts/test -LE package` leaves it out.
set -euo pipefail
src=$1
build=$2
if [ "$(id -u)" -ne 0 ]; then
  echo "FAIL: the package-install test needs root (chroot and mounts); leave it out with: scripts/test -LE package"
  exit 1
fi
for tool in mmdebstrap cpack dpkg-deb curl; do
  command -v "$tool" > /dev/null || { echo "FAIL: $tool is missing (scripts/bootstrap installs it)"; exit 1; }
done
photo=/usr/share/doc/opencv-doc/examples/data/HappyFish.jpg
[ -f "$photo" ] || { echo "FAIL: $photo is missing (package opencv-doc; scripts/bootstrap installs it)"; exit 1; }

step() { echo "== $*"; }

step "build the package"
rm -f "$src"/build/deeplens_*_amd64.deb
(cd "$build" && cpack -G DEB --config CPackConfig.cmake > cpack.log 2>&1) || { cat "$build/cpack.log"; exit 1; }
deb=$(ls "$src"/build/deeplens_*_amd64.deb)
dpkg-deb --field "$deb" Package Version Architecture Depends
dpkg-deb --contents "$deb" | awk '{print $6}' | grep -E '^\./(usr/bin/deeplens|etc/deeplens/deeplens.toml|lib/systemd/system/deeplens(-api|-worker@)?\.service|usr/share/bash-completion/completions/deeplens)$' | sort > /tmp/deeplens-pkg-files.$$
[ "$(wc -l < /tmp/deeplens-pkg-files.$$)" -eq 6 ] || { echo "FAIL: the package lacks files:"; cat /tmp/deeplens-pkg-files.$$; exit 1; }
rm -f /tmp/deeplens-pkg-files.$$

cache=${DEEPLENS_TEST_CACHE:-/var/cache/deeplens-test}
mkdir -p "$cache/apt-archives/partial"
base=$cache/bookworm-apt.tar
# A directory there is what an earlier version of this script left (mmdebstrap picks the output
# format from the file name, and "*.tar.tmp" is not a tarball's): make the tarball again.
[ -d "$base" ] && rm -rf --one-file-system "$base"
if [ ! -f "$base" ]; then
  step "make a clean Debian 12 root (mmdebstrap, cached in $base)"
  rm -rf --one-file-system "$base.tmp"
  mmdebstrap --quiet --variant=apt --format=tar --include=ca-certificates bookworm "$base.tmp"
  mv "$base.tmp" "$base"
fi
root=$(mktemp -d /var/tmp/deeplens-root-XXXXXX)
server_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill -9 "$server_pid" 2> /dev/null || true
  for m in var/cache/apt/archives dev/pts dev proc; do
    mountpoint -q "$root/$m" && umount -l "$root/$m" || true
  done
  rm -rf --one-file-system "$root"
}
trap cleanup EXIT
tar -xf "$base" -C "$root"
mount -t proc proc "$root/proc"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"
mount --bind "$cache/apt-archives" "$root/var/cache/apt/archives"
cp /etc/resolv.conf "$root/etc/resolv.conf"
cp "$deb" "$root/tmp/"
in_root() { chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"; }

step "apt-get install ./$(basename "$deb") in the clean root"
in_root apt-get update -q > "$build/package-apt.log" 2>&1 || { cat "$build/package-apt.log"; exit 1; }
in_root apt-get install -y -q --no-install-recommends "/tmp/$(basename "$deb")" >> "$build/package-apt.log" 2>&1 ||
  { tail -40 "$build/package-apt.log"; exit 1; }
in_root /usr/bin/deeplens --version
in_root getent passwd deeplens
[ "$(in_root stat -c %U:%G /var/lib/deeplens)" = deeplens:deeplens ] || { echo "FAIL: /var/lib/deeplens is not the deeplens user's"; exit 1; }
in_root grep -q '^/etc/deeplens/deeplens.toml$' /var/lib/dpkg/info/deeplens.conffiles || { echo "FAIL: the config is not a conffile"; exit 1; }
ldd_missing=$(in_root ldd /usr/bin/deeplens | grep -c "not found" || true)
[ "$ldd_missing" -eq 0 ] || { echo "FAIL: libraries missing in the clean root:"; in_root ldd /usr/bin/deeplens | grep "not found"; exit 1; }

step "deeplens serve as the deeplens user, with the packaged configuration"
out=$root/tmp/serve.out
chroot --userspec=deeplens:deeplens "$root" env -i PATH=/usr/bin:/bin HOME=/var/lib/deeplens \
  /usr/bin/deeplens --config /etc/deeplens/deeplens.toml --set server.listen=127.0.0.1:0 serve > "$out" 2> "$root/tmp/serve.err" &
server_pid=$!
url="" key=""
for _ in $(seq 1 300); do
  url=$(grep -o 'serving on http://[^ ]*' "$out" | head -1 | cut -d' ' -f3 || true)
  key=$(grep -o 'dlk_[0-9a-f]*' "$out" | head -1 || true)
  [ -n "$url" ] && [ -n "$key" ] && break
  kill -0 "$server_pid" 2> /dev/null || { echo "FAIL: serve exited"; cat "$out" "$root/tmp/serve.err"; exit 1; }
  sleep 0.1
done
[ -n "$url" ] && [ -n "$key" ] || { echo "FAIL: serve did not start"; cat "$out" "$root/tmp/serve.err"; exit 1; }
echo "serving on $url"
reply=$(curl -sS -H "Authorization: Bearer $key" -F "file=@$photo;type=image/jpeg" "$url/api/v1/images/upload")
image=$(echo "$reply" | python3 -c 'import json,sys; print(json.load(sys.stdin)["imageId"])') || { echo "FAIL: upload: $reply"; exit 1; }
status=""
for _ in $(seq 1 600); do
  status=$(curl -sS -H "Authorization: Bearer $key" "$url/api/v1/images/$image/status" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
  [ "$status" = completed ] || [ "$status" = failed ] && break
  sleep 0.1
done
[ "$status" = completed ] || { echo "FAIL: image $image is $status"; cat "$root/tmp/serve.err"; exit 1; }
echo "image $image completed"
[ "$(in_root stat -c %U /var/lib/deeplens/deeplens.db)" = deeplens ] || { echo "FAIL: the database is not the deeplens user's"; exit 1; }
kill -TERM "$server_pid"
code=0
wait "$server_pid" || code=$?
server_pid=""
[ "$code" -eq 0 ] || { echo "FAIL: serve exited $code on SIGTERM"; tail -20 "$root/tmp/serve.err"; exit 1; }
echo "SIGTERM: clean exit"

step "remove keeps the data; purge removes it and the user"
in_root apt-get remove -y -q deeplens >> "$build/package-apt.log" 2>&1
[ ! -e "$root/usr/bin/deeplens" ] || { echo "FAIL: the binary is still there after remove"; exit 1; }
[ -f "$root/var/lib/deeplens/deeplens.db" ] || { echo "FAIL: remove deleted the data"; exit 1; }
in_root apt-get purge -y -q deeplens >> "$build/package-apt.log" 2>&1
[ ! -e "$root/var/lib/deeplens" ] || { echo "FAIL: purge left /var/lib/deeplens"; exit 1; }
! in_root getent passwd deeplens > /dev/null || { echo "FAIL: purge left the deeplens user"; exit 1; }
[ ! -e "$root/etc/deeplens/deeplens.toml" ] || { echo "FAIL: purge left the conffile"; exit 1; }
echo "PASS: the package installs, serves, completes an upload, stops cleanly, removes and purges"
