#!/usr/bin/env bash
# The package test's install and run, inside the throwaway system .ci/package
# makes (an overlay of the machine, private mounts and network). $1: the
# package. Each check says what it found when it fails.
set -euo pipefail
deb=$1
export DEBIAN_FRONTEND=noninteractive
fail() { echo "package test: $*" >&2; exit 1; }
ok() { echo "  ok: $*"; }

# Make room as apt would: the package conflicts with every other MTA.
mtas=$(dpkg-query -W -f '${Package} ${Provides} ${db:Status-Abbrev}\n' 2>/dev/null |
  awk '$0 ~ /mail-transport-agent/ && $NF ~ /^.i/ {print $1}')
if [ -n "$mtas" ]; then
  dpkg --remove --force-depends $mtas >/dev/null 2>&1
  ok "removed the installed MTA ($mtas) in the throwaway system"
fi

dpkg -i "$deb" >/tmp/dpkg.log 2>&1 || { cat /tmp/dpkg.log >&2; fail "dpkg -i failed"; }
ok "dpkg -i $(basename "$deb")"

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
dpkg-query -W -f '${Conffiles}\n' qmgate | grep -q '^ /etc/qmgate/qmgate.toml ' || fail "qmgate.toml is not a conffile"
ok "/etc/qmgate/qmgate.toml is a conffile"

# sendmail, mailq, newaliases.
[ "$(readlink -f /usr/sbin/sendmail)" = /usr/bin/qmgate ] || fail "/usr/sbin/sendmail is $(readlink -f /usr/sbin/sendmail)"
[ "$(readlink -f /usr/lib/sendmail)" = /usr/bin/qmgate ] || fail "/usr/lib/sendmail is $(readlink -f /usr/lib/sendmail)"
[ "$(readlink -f /usr/bin/mailq)" = /usr/bin/qmgate ] || fail "/usr/bin/mailq is $(readlink -f /usr/bin/mailq)"
newaliases || fail "newaliases failed"
dpkg-query -W -f '${Provides}\n' qmgate | grep -q mail-transport-agent || fail "no Provides: mail-transport-agent"
ok "sendmail, /usr/lib/sendmail and mailq are qmgate; newaliases exits 0"

# Man pages and completion.
for page in qmgate.8 qmgate.toml.5 qmgate-sendmail.8 qmgate-queue.8 qmgate-qmail.8; do
  [ -f "/usr/share/man/man${page##*.}/$page.gz" ] || fail "no man page $page"
done
if command -v man >/dev/null; then
  man -w qmgate.toml >/dev/null || fail "man qmgate.toml finds nothing"
  MANPAGER=cat MANWIDTH=80 man 5 qmgate.toml 2>/dev/null | grep -q 'max_message_bytes' || fail "man qmgate.toml does not render"
fi
bash -c 'source /usr/share/bash-completion/completions/qmgate && complete -p qmgate' >/dev/null || fail "bash completion does not load"
ok "man pages (man qmgate.toml renders) and bash completion"

# The unit.
out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify /lib/systemd/system/qmgate.service 2>&1) || { echo "$out" >&2; fail "systemd-analyze verify failed"; }
if [ -n "$out" ]; then echo "$out" | sed 's/^/  systemd-analyze: /'; fi
ok "systemd-analyze verify qmgate.service"

# Start the daemon as the unit does: its user and group, its umask, only
# CAP_NET_BIND_SERVICE (ambient and bounding), no new privileges, its
# ExecStartPre and ExecStart command lines.
unit=/lib/systemd/system/qmgate.service
pre=$(sed -n 's/^ExecStartPre=//p' $unit); cmd=$(sed -n 's/^ExecStart=//p' $unit)
umask_=$(sed -n 's/^UMask=//p' $unit)
grep -q '^User=qmgate$' $unit && grep -q '^AmbientCapabilities=CAP_NET_BIND_SERVICE$' $unit || fail "the unit's user or capabilities changed; update this test"
asunit() {
  umask "$umask_"
  exec setpriv --reuid=qmgate --regid=qmgate --init-groups \
    --inh-caps=-all,+net_bind_service --ambient-caps=-all,+net_bind_service \
    --bounding-set=-all,+net_bind_service --no-new-privs "$@"
}
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
ok "qmgate serve runs as qmgate, listening (SMTP 127.0.0.1:25, QMQP socket)"

# A message through it: an ordinary user's sendmail, over QMQP, into the
# Maildir the route names.
printf 'Subject: package test\n\nhello from the package test\n' |
  setpriv --reuid=nobody --regid=nogroup --clear-groups /usr/sbin/sendmail -i postmaster@localhost ||
  fail "sendmail as nobody failed"
box=/var/lib/qmgate/maildir/localhost/postmaster/new
for _ in $(seq 300); do
  if compgen -G "$box/*" >/dev/null; then break; fi
  sleep 0.1
done
compgen -G "$box/*" >/dev/null || { cat /tmp/serve.log >&2; fail "nothing delivered to $box"; }
grep -q 'hello from the package test' "$box"/* || fail "the delivered message is not the one sent"
ok "sendmail (as nobody) -> QMQP -> queue -> $box"
mailq >/dev/null || fail "mailq failed"
ok "mailq"

kill -TERM $daemon
wait $daemon || { cat /tmp/serve.log >&2; fail "the daemon did not stop cleanly on SIGTERM"; }
trap - EXIT
ok "SIGTERM: stopped cleanly"

# Remove, then purge.
dpkg -r qmgate >/tmp/dpkg.log 2>&1 || { cat /tmp/dpkg.log >&2; fail "dpkg -r failed"; }
[ ! -e /usr/bin/qmgate ] && [ ! -e /usr/sbin/sendmail ] || fail "dpkg -r left the binary or sendmail"
[ -f /etc/qmgate/qmgate.toml ] || fail "dpkg -r removed the conffile"
ok "dpkg -r: programs gone, configuration kept"
dpkg -P qmgate >/tmp/dpkg.log 2>&1 || { cat /tmp/dpkg.log >&2; fail "dpkg -P failed"; }
for p in /etc/qmgate /var/spool/qmgate /run/qmgate /lib/systemd/system/qmgate.service \
         /etc/systemd/system/multi-user.target.wants/qmgate.service; do
  [ ! -e "$p" ] || fail "dpkg -P left $p"
done
grep -q 'delivered mail is left in /var/lib/qmgate' /tmp/dpkg.log || fail "purge did not say that delivered mail stays"
dpkg-query -W qmgate >/dev/null 2>&1 && [ "$(dpkg-query -W -f '${db:Status-Abbrev}' qmgate)" != "un " ] &&
  fail "dpkg still knows qmgate: $(dpkg-query -W -f '${db:Status-Abbrev}' qmgate)"
ok "dpkg -P: configuration, queue, socket directory and unit gone; delivered mail kept, as it says"
