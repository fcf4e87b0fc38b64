#!/usr/bin/env bash
# The package test's install and run, inside the throwaway system .ci/package
# makes (an overlay of the machine, private mounts, network and processes).
# $1: the package at this version (N); $2: the same tree packaged at an
# earlier version (N-1), for the upgrade. Packages are installed, upgraded,
# removed and purged with apt, as docs/deploy.md and README.md tell an
# administrator to; there is no network here, so apt must need nothing it
# would download. Each check says what it found when it fails.
set -euo pipefail
deb=$1; prev=$2
SECONDS=0
stage() { echo "  -- $1: ${SECONDS}s"; SECONDS=0; }
export DEBIAN_FRONTEND=noninteractive
fail() { echo "package test: $*" >&2; exit 1; }
ok() { echo "  ok: $*"; }
# No maintainer script here may start or stop a service (invoke-rc.d asks
# policy-rc.d): the MTA apt removes to make room must not touch anything.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d

# apt install ./FILE, as the guides say. The package conflicts with every
# other MTA: apt removes the one installed (Postfix, for the interop tests).
cd /qmgate-package-test
deb=./$(basename "$deb"); prev=./$(basename "$prev")
aptdo() {
  apt -y -q -o Dpkg::Use-Pty=0 "$@" >/tmp/apt.log 2>&1 || { cat /tmp/apt.log >&2; fail "apt $* failed"; }
  if grep -q '^Get:.*://' /tmp/apt.log || grep -q '^Need to get [1-9]' /tmp/apt.log; then
    cat /tmp/apt.log >&2; fail "apt $* wanted to download something"
  fi
}
mtas=$(dpkg-query -W -f '${Package} ${Provides} ${db:Status-Abbrev}\n' 2>/dev/null |
  awk '$0 ~ /mail-transport-agent/ && $NF ~ /^.i/ {print $1}')
aptdo install "$deb"
ok "apt install $deb${mtas:+ (apt removed $(echo $mtas), the MTA it replaces)}"

qmgate config check -config /etc/qmgate/qmgate.toml >/dev/null || fail "the packaged configuration does not check"
ok "qmgate config check -config /etc/qmgate/qmgate.toml"

# The user: a system user with no login shell.
IFS=: read -r _ _ uid _ _ home shell < <(getent passwd qmgate) || fail "no user qmgate"
[ "$uid" -lt 1000 ] || fail "qmgate is not a system user (uid $uid)"
[ "$shell" = /usr/sbin/nologin ] || fail "qmgate's shell is $shell"
ok "user qmgate (uid $uid, home $home, shell $shell)"

# Owners and modes.
want() {
  got=$(stat -c '%U:%G %a' "$1") || fail "$1 is missing"
  [ "$got" = "$2" ] || fail "$1 is $got, want $2"
  ok "$1 $got"
}
want /usr/bin/qmgate "root:root 755"
want /etc/qmgate/qmgate.toml "root:root 644"
want /var/spool/qmgate "qmgate:qmgate 750"
want /run/qmgate "qmgate:qmgate 755"
want /var/lib/qmgate "qmgate:qmgate 750"
want /lib/systemd/system/qmgate.service "root:root 644"
grep -q '^ /etc/qmgate/qmgate.toml ' <<<"$(dpkg-query -W -f '${Conffiles}\n' qmgate)" || fail "qmgate.toml is not a conffile"
ok "/etc/qmgate/qmgate.toml is a conffile"

# sendmail, mailq, newaliases.
[ "$(readlink -f /usr/sbin/sendmail)" = /usr/bin/qmgate ] || fail "/usr/sbin/sendmail is $(readlink -f /usr/sbin/sendmail)"
[ "$(readlink -f /usr/lib/sendmail)" = /usr/bin/qmgate ] || fail "/usr/lib/sendmail is $(readlink -f /usr/lib/sendmail)"
[ "$(readlink -f /usr/bin/mailq)" = /usr/bin/qmgate ] || fail "/usr/bin/mailq is $(readlink -f /usr/bin/mailq)"
newaliases || fail "newaliases failed"
grep -q mail-transport-agent <<<"$(dpkg-query -W -f '${Provides}\n' qmgate)" || fail "no Provides: mail-transport-agent"
ok "sendmail, /usr/lib/sendmail and mailq are qmgate; newaliases exits 0"

# Man pages and completion.
for page in qmgate.8 qmgate.toml.5 qmgate-sendmail.8 qmgate-queue.8 qmgate-qmail.8; do
  [ -f "/usr/share/man/man${page##*.}/$page.gz" ] || fail "no man page $page"
done
if command -v man >/dev/null; then
  man -w qmgate.toml >/dev/null || fail "man qmgate.toml finds nothing"
  grep -q 'max_message_bytes' <<<"$(MANPAGER=cat MANWIDTH=80 man 5 qmgate.toml 2>/dev/null)" || fail "man qmgate.toml does not render"
fi
bash -c 'source /usr/share/bash-completion/completions/qmgate && complete -p qmgate' >/dev/null || fail "bash completion does not load"
ok "man pages (man qmgate.toml renders) and bash completion"
# man-db's index was rebuilt for the install above; the apt runs below need
# not spend their time on it again (nothing below reads the index).
rm -f /var/lib/man-db/auto-update

# The unit.
out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify /lib/systemd/system/qmgate.service 2>&1) || { echo "$out" >&2; fail "systemd-analyze verify failed"; }
if [ -n "$out" ]; then echo "$out" | sed 's/^/  systemd-analyze: /'; fi
ok "systemd-analyze verify qmgate.service"

# Start the daemon as the unit does: its user and group, its umask, only
# CAP_NET_BIND_SERVICE (ambient and bounding), no new privileges, its
# ExecStartPre and ExecStart command lines.
unit=/lib/systemd/system/qmgate.service
grep -q '^User=qmgate$' $unit && grep -q '^AmbientCapabilities=CAP_NET_BIND_SERVICE$' $unit || fail "the unit's user or capabilities changed; update this test"
asunit() {
  umask "$(sed -n 's/^UMask=//p' $unit)"
  exec setpriv --reuid=qmgate --regid=qmgate --init-groups \
    --inh-caps=-all,+net_bind_service --ambient-caps=-all,+net_bind_service \
    --bounding-set=-all,+net_bind_service --no-new-privs "$@"
}
daemon=
start_daemon() {
  local pre cmd
  pre=$(sed -n 's/^ExecStartPre=//p' $unit); cmd=$(sed -n 's/^ExecStart=//p' $unit)
  # shellcheck disable=SC2086
  (asunit $pre) >/dev/null || fail "ExecStartPre failed: $pre"
  # shellcheck disable=SC2086
  (asunit $cmd) 2>/tmp/serve.log &
  daemon=$!
  trap 'kill $daemon 2>/dev/null || true' EXIT
  for _ in $(seq 300); do
    if [ -S /run/qmgate/qmqp.sock ] && (exec 3<>/dev/tcp/127.0.0.1/25) 2>/dev/null; then break; fi
    kill -0 $daemon 2>/dev/null || { cat /tmp/serve.log >&2; fail "the daemon exited"; }
    sleep 0.1
  done
  (exec 3<>/dev/tcp/127.0.0.1/25) 2>/dev/null || { cat /tmp/serve.log >&2; fail "the daemon does not listen on 127.0.0.1:25"; }
  [ "$(stat -c %U /proc/$daemon)" = qmgate ] || fail "the daemon runs as $(stat -c %U /proc/$daemon)"
}
stop_daemon() {
  kill -TERM $daemon
  wait $daemon || { cat /tmp/serve.log >&2; fail "the daemon did not stop cleanly on SIGTERM"; }
  trap - EXIT
}
# delivered BOX TEXT: waits until a message holding TEXT is in BOX.
delivered() {
  for _ in $(seq 300); do
    if grep -qs "$2" "$1"/*; then return 0; fi
    sleep 0.1
  done
  cat /tmp/serve.log >&2; fail "no message with '$2' delivered to $1"
}
box=/var/lib/qmgate/maildir/localhost/postmaster/new

start_daemon
ok "qmgate serve runs as qmgate, listening (SMTP 127.0.0.1:25, QMQP socket)"

# A message through it: an ordinary user's sendmail, over QMQP, into the
# Maildir the route names.
printf 'Subject: package test\n\nhello from the package test\n' |
  setpriv --reuid=nobody --regid=nogroup --clear-groups /usr/sbin/sendmail -i postmaster@localhost ||
  fail "sendmail as nobody failed"
delivered $box 'hello from the package test'
ok "sendmail (as nobody) -> QMQP -> queue -> $box"
mailq >/dev/null || fail "mailq failed"
ok "mailq"

# The guides' TLS and several-hub steps, as written, on this installed
# package (.ci/guides-inside.sh; it leaves the packaged configuration as
# it found it).
stop_daemon
stage "install and run"
bash /qmgate-package-test/guides-inside.sh /qmgate-package-test/guides
stage "the guides' steps"
start_daemon
stop_daemon
ok "SIGTERM: stopped cleanly"

# remove_purge: apt remove, then apt purge, and what each must leave.
remove_purge() {
  aptdo remove qmgate
  [ ! -e /usr/bin/qmgate ] && [ ! -e /usr/sbin/sendmail ] || fail "apt remove left the binary or sendmail"
  [ -f /etc/qmgate/qmgate.toml ] || fail "apt remove removed the conffile"
  ok "apt remove qmgate: programs gone, configuration kept"
  aptdo purge qmgate
  for p in /etc/qmgate /var/spool/qmgate /run/qmgate /lib/systemd/system/qmgate.service \
           /etc/systemd/system/multi-user.target.wants/qmgate.service; do
    [ ! -e "$p" ] || fail "apt purge left $p"
  done
  grep -q 'delivered mail is left in /var/lib/qmgate' /tmp/apt.log || fail "purge did not say that delivered mail stays"
  dpkg-query -W qmgate >/dev/null 2>&1 && [ "$(dpkg-query -W -f '${db:Status-Abbrev}' qmgate)" != "un " ] &&
    fail "dpkg still knows qmgate: $(dpkg-query -W -f '${db:Status-Abbrev}' qmgate)"
  ok "apt purge qmgate: configuration, queue, socket directory and unit gone; delivered mail kept, as it says"
}
remove_purge
stage "remove and purge"

# The upgrade, N-1 to N: an administrator's edited configuration is kept
# (a conffile), the queue and the mail in it survive and are delivered by
# the new version, and the user, its directories and their modes stay.
echo "upgrade $(basename "$prev") -> $(basename "$deb"):"
aptdo install "$prev"
old=$(dpkg-query -W -f '${Version}' qmgate); new=$(dpkg-deb -f "$deb" Version)
dpkg --compare-versions "$old" lt "$new" || fail "$prev ($old) is not older than $deb ($new)"
grep -qF "$old" <<<"$(qmgate version)" || fail "qmgate version does not say $old: $(qmgate version)"
ok "apt install $prev: qmgate $old"
# The administrator's edit.
sed -i 's/^# hostname = "hub.example.net"$/hostname = "upgrade-test.localhost"/' /etc/qmgate/qmgate.toml
grep -q '^hostname = "upgrade-test.localhost"$' /etc/qmgate/qmgate.toml || fail "could not edit the configuration"
sum=$(md5sum < /etc/qmgate/qmgate.toml)
# Mail in the queue: handed to qmail-queue (as qmail's front ends do) while
# the daemon is stopped for the upgrade, so it waits on disk.
printf 'Subject: upgrade\n\nqueued before the upgrade\n' |
  setpriv --reuid=qmgate --regid=qmgate --init-groups qmgate qmail-queue 1< <(printf 'Fops@localhost\0Tpostmaster@localhost\0\0') ||
  fail "qmail-queue as qmgate failed"
grep -q 'postmaster@localhost' <<<"$(mailq)" || { mailq >&2; fail "the message is not in the queue"; }
modes() {
  getent passwd qmgate; getent group qmgate
  stat -c '%n %U:%G %a' /etc/qmgate/qmgate.toml /var/spool/qmgate /run/qmgate /var/lib/qmgate
  find /var/spool/qmgate -printf '%P %u:%g %m\n' | LC_ALL=C sort
}
before=$(modes)
ok "configuration edited (hostname), a message waiting in the queue"
aptdo install "$deb"
[ "$(dpkg-query -W -f '${Version}' qmgate)" = "$new" ] || fail "apt did not upgrade to $new"
grep -qF "$new" <<<"$(qmgate version)" || fail "qmgate version does not say $new: $(qmgate version)"
[ "$(md5sum < /etc/qmgate/qmgate.toml)" = "$sum" ] || fail "the upgrade changed the edited configuration"
for f in /etc/qmgate/qmgate.toml.dpkg-new /etc/qmgate/qmgate.toml.dpkg-dist /etc/qmgate/qmgate.toml.dpkg-old; do
  [ ! -e "$f" ] || fail "the upgrade left $f"
done
after=$(modes)
[ "$before" = "$after" ] || { diff <(echo "$before") <(echo "$after") >&2; fail "the upgrade changed the user, the directories or the queue's files"; }
grep -q 'postmaster@localhost' <<<"$(mailq)" || { mailq >&2; fail "the queued message did not survive the upgrade"; }
ok "apt install $deb: qmgate $new, configuration kept, user, modes and queue unchanged"
start_daemon
delivered $box 'queued before the upgrade'
f=$(grep -ls 'queued before the upgrade' $box/*)
case $f in *upgrade-test.localhost*) ;; *) grep -q 'upgrade-test.localhost' "$f" || fail "$f does not carry the edited hostname" ;; esac
stop_daemon
ok "the new daemon delivered the message queued before the upgrade"
remove_purge
stage "the upgrade"
