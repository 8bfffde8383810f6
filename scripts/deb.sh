#!/usr/bin/env bash
# Builds the Debian package from the static musl release binary (build that first:
# cargo build --release --target x86_64-unknown-linux-musl) and checks it: its files,
# modes and conffiles (dpkg-deb -c), its control fields (dpkg-deb -f), its maintainer
# scripts (install and upgrade start nothing), the binary in it, and its unit
# (systemd-analyze verify, warnings fatal). Installs cargo-deb and systemd-analyze when
# missing. Prints the package's path last.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-musl
name=taskrouter-summarizer
bin=target/$target/release/$name
SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"

[ -x "$bin" ] || { echo "deb.sh: no $bin: cargo build --release --target $target first" >&2; exit 1; }
if ! command -v cargo-deb >/dev/null 2>&1; then
  echo "deb.sh: installing cargo-deb from crates.io (cargo install cargo-deb --locked)" >&2
  cargo install cargo-deb --locked
fi
cargo deb --version

# A clean output directory: the glob below then names this build's package only.
rm -rf target/debian
cargo deb --no-build --target "$target" --output target/debian/ >&2
shopt -s nullglob
debs=(target/debian/"$name"_*_amd64.deb)
[ "${#debs[@]}" = 1 ] || { echo "deb.sh: expected one package in target/debian: ${debs[*]}" >&2; exit 1; }
deb=${debs[0]}

fail() { echo "deb.sh: $deb: $*" >&2; exit 1; }

# Control fields: the version is Cargo's, plus cargo-deb's revision.
version=$("$bin" --version | awk '{print $2}')
[ "$(dpkg-deb -f "$deb" Package)" = "$name" ] || fail "Package is not $name"
[ "$(dpkg-deb -f "$deb" Version)" = "$version-1" ] || fail "Version is not $version-1"
[ "$(dpkg-deb -f "$deb" Architecture)" = amd64 ] || fail "Architecture is not amd64"
for field in Maintainer Section Priority Description; do
  [ -n "$(dpkg-deb -f "$deb" "$field")" ] || fail "no $field"
done
# A static binary needs no library; the DynamicUser needs no account.
[ -z "$(dpkg-deb -f "$deb" Depends)" ] && [ -z "$(dpkg-deb -f "$deb" Pre-Depends)" ] \
  || fail "it has dependencies"
dpkg-deb -f "$deb" Package Version Architecture Section Priority Maintainer

# Contents: "mode path" for every file, compared with what the repository says it holds.
listing=$(dpkg-deb -c "$deb")
echo "$listing"
# (Here-strings, not `echo | grep -q`: with pipefail an early exit of grep could turn
# into a SIGPIPE failure of the writer.)
[ -z "$(awk '$2 != "0/0"' <<<"$listing")" ] || fail "a file not owned by root"
actual=$(awk '$1 !~ /^d/ {print $1, $6}' <<<"$listing" | sort)
doc=./usr/share/doc/$name
expected=$(
  {
    echo "-rwxr-xr-x ./usr/bin/$name"
    echo "-rw-r--r-- ./usr/lib/systemd/system/$name.service"
    echo "-rw-r----- ./etc/$name/config.toml"
    echo "-rw------- ./etc/$name/env"
    echo "-rw-r--r-- $doc/copyright"
    echo "-rw-r--r-- $doc/README.md"
    for f in docs/*.md docs/*.png; do echo "-rw-r--r-- $doc/$f"; done
  } | sort
)
if [ "$actual" != "$expected" ]; then
  diff <(echo "$expected") <(echo "$actual") >&2 || true
  fail "contents differ from the expected files and modes (< expected, > in the package)"
fi

# Both files in /etc are conffiles (an upgrade keeps the operator's edits).
conffiles=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles | sort)
[ "$conffiles" = "$(printf '/etc/%s/config.toml\n/etc/%s/env' "$name" "$name")" ] \
  || fail "conffiles are: $conffiles"

# The maintainer scripts: installing and upgrading never start, restart or stop the
# service (it needs its config, secrets and database first; after an upgrade the operator
# migrates, then restarts); removing stops it.
scripts=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./postinst ./prerm ./postrm)
if grep -Eq 'deb-systemd-invoke +(start|restart|try-restart)|systemctl .*(start|restart|enable)' <<<"$scripts"; then
  fail "a maintainer script starts or enables the service"
fi
prerm=$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./prerm)
grep -q '"$1" = remove' <<<"$prerm" || fail "prerm does not limit the stop to removal"

# The files as installed: the binary is static and this build; the rest is the
# repository's, byte for byte (docs uncompressed).
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dpkg-deb -x "$deb" "$root"
if grep -q "=>" <<<"$(ldd "$root/usr/bin/$name" 2>&1 || true)"; then
  fail "the binary has dynamic dependencies"
fi
[ "$("$root/usr/bin/$name" --version)" = "$name $version" ] || fail "the binary is not version $version"
cmp config.example.toml "$root/etc/$name/config.toml"
cmp systemd/$name.env "$root/etc/$name/env"
cmp systemd/$name.service "$root/usr/lib/systemd/system/$name.service"
cmp README.md "$root/usr/share/doc/$name/README.md"
for f in docs/*.md docs/*.png; do cmp "$f" "$root/usr/share/doc/$name/$f"; done

# The unit, verified inside the extracted package, so its ExecStart= binaries are the
# package's /usr/bin ones; the machine's own units (targets) are copied beside it.
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "deb.sh: installing Debian's systemd for systemd-analyze" >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq systemd >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq systemd >/dev/null; }
fi
cp -an /usr/lib/systemd/system/. "$root/usr/lib/systemd/system/"
# verify exits 0 on an unknown or misspelt key, only warning: any output fails here.
if ! out=$(systemd-analyze verify --root="$root" "/usr/lib/systemd/system/$name.service" 2>&1) || [ -n "$out" ]; then
  echo "$out" >&2
  fail "systemd-analyze verify of the unit failed"
fi
echo "systemd-analyze verify $name.service: ok"
echo "$deb"
