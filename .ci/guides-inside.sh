#!/usr/bin/env bash
# The guides' TLS and several-hub steps, run as written, inside the package
# test's throwaway system (.ci/package), with the package installed and its
# daemon stopped. $1: a directory holding docs/deploy.md and
# docs/several-hubs.md.
#
# The blocks docs/deploy.md marks `<!-- ci: NAME -->` are taken from the
# guide itself, so that a guide that stops working fails here:
#   certs, hub-certs          the certificate commands, run as they are;
#   hub-config, hub-restart   hub1 (then hub2) opened to the "network";
#   tls-check                 STARTTLS and QMTPS verified with the guide's own
#                             openssl commands;
#   app-certs, app-qmtps      an app server in spool mode over QMTPS with its
#                             client certificate, which lets it relay;
#   direct-mode               an app server in direct mode, failing over
#                             from hub1 (stopped) to hub2;
#   spool-mode                an app server in spool mode keeping a message
#                             while both hubs are down, then forwarding it;
# then docs/several-hubs.md's `qmgate queue handoff` moves hub1's queue to
# hub2. The only changes made to what the guides say are those a single
# machine needs: host names in /etc/hosts on loopback addresses (hub1
# 127.0.0.11, hub2 127.0.0.12), 0.0.0.0 becoming the hub's own address, the
# networks becoming the loopback addresses connections come from, several
# hosts' paths side by side (-hub2, -app1, -app2, -app3 suffixes), and the daemons
# started as the unit starts them, without systemd. The packaged
# configuration is put back at the end.
set -euo pipefail
g=$1
fail() { echo "guides test: $*" >&2; exit 1; }
ok() { echo "  ok (guides): $*"; }
unit=/lib/systemd/system/qmgate.service

# block NAME: the fenced block after the marker <!-- ci: NAME ... -->.
block() {
  local out
  out=$(awk -v n="$1" '$0 ~ "^<!-- ci: " n " " {f=1; next}
    f==1 && /^```/ {f=2; next} f==2 && /^```/ {exit} f==2 {print}' "$g/deploy.md")
  [ -n "$out" ] || fail "docs/deploy.md has no block marked ci: $1"
  printf '%s\n' "$out"
}

# Daemons as the unit runs them: its user, umask, capability and command
# line, with -config FILE.
declare -A pid
start() { # NAME CONFIG ADDR:PORT|unix:PATH (a listener to wait for)
  local cfg=$2
  (umask "$(sed -n 's/^UMask=//p' $unit)"
   exec setpriv --reuid=qmgate --regid=qmgate --init-groups \
    --inh-caps=-all,+net_bind_service --ambient-caps=-all,+net_bind_service \
    --bounding-set=-all,+net_bind_service --no-new-privs \
    /usr/bin/qmgate serve -config "$cfg") 2>"/tmp/$1.log" &
  pid[$1]=$!
  for _ in $(seq 300); do
    case $3 in
      unix:*) [ -S "${3#unix:}" ] && return 0 ;;
      *) (exec 3<>"/dev/tcp/${3%:*}/${3#*:}") 2>/dev/null && return 0 ;;
    esac
    kill -0 "${pid[$1]}" 2>/dev/null || { cat "/tmp/$1.log" >&2; fail "$1 exited"; }
    sleep 0.1
  done
  cat "/tmp/$1.log" >&2; fail "$1 does not listen on $3"
}
stop() {
  kill -TERM "${pid[$1]}"
  wait "${pid[$1]}" || { cat "/tmp/$1.log" >&2; fail "$1 did not stop cleanly"; }
  unset "pid[$1]"
}
trap 'for p in "${pid[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
# delivered DIR TEXT: waits for a message holding TEXT in the Maildir DIR.
delivered() {
  for _ in $(seq 300); do
    if grep -qs "$2" "$1"/new/*; then return 0; fi
    sleep 0.1
  done
  cat /tmp/hub*.log /tmp/app*.log >&2 2>/dev/null || true
  fail "no message with '$2' delivered to $1"
}
# queued CONFIG TEXT: waits until the queue of CONFIG lists TEXT.
queued() {
  for _ in $(seq 300); do
    if grep -q "$2" <<<"$(qmgate queue list -config "$1" 2>/dev/null)"; then return 0; fi
    sleep 0.1
  done
  qmgate queue list -config "$1" >&2 || true
  fail "the queue of $1 does not hold $2"
}
# dirs SUFFIX: a second host's directories, as tmpfiles.d makes them.
dirs() {
  install -d -o qmgate -g qmgate -m 0750 "/var/spool/qmgate$1" "/var/lib/qmgate$1"
  install -d -o qmgate -g qmgate -m 0755 "/run/qmgate$1"
  install -d -m 0755 "/etc/qmgate$1"
}

cp /etc/qmgate/qmgate.toml /tmp/qmgate.toml.packaged
printf '127.0.0.11 hub1.example.net\n127.0.0.12 hub2.example.net\n' >> /etc/hosts

# Certificates, on the "administration machine" (a directory of root's).
admin=$(mktemp -d /root/mail-ca.XXXXXX)
(cd "$admin" && bash -euo pipefail -c "$(block certs)") >/tmp/certs.log 2>&1 ||
  { cat /tmp/certs.log >&2; fail "the guide's certificate commands failed"; }
(cd "$admin" && bash -euo pipefail -c "$(block hub-certs)") || fail "the guide's hub certificate install failed"
[ "$(stat -c '%U:%G %a' /etc/qmgate/key.pem)" = "root:qmgate 640" ] || fail "key.pem is $(stat -c '%U:%G %a' /etc/qmgate/key.pem)"
ok "certificates made and installed with the guide's commands"

# hub1, opened to the network as the guide says. Its "other hubs" network
# is hub2's own address, which makes no connection: every client here comes
# from 127.0.0.1, the "app servers' network", so that only the client
# certificate can let an app server relay over QMTPS.
hubconf() { # ADDR APPS HUBS SUFFIX NAME
  block hub-config | sed -e "s/0\.0\.0\.0/$1/g" -e "s#10\.20\.0\.0/16#$2#g" -e "s#10\.30\.0\.0/24#$3#g" \
    -e "s#/var/spool/qmgate#/var/spool/qmgate$4#; s#/run/qmgate/#/run/qmgate$4/#g; s#/var/lib/qmgate/#/var/lib/qmgate$4/#" \
    -e "s/hub1\.example\.net/$5/"
}
hubconf 127.0.0.11 127.0.0.1/32 127.0.0.12/32 "" hub1.example.net > /etc/qmgate/qmgate.toml
restart_hub1() { [ -z "${pid[hub1]:-}" ] || stop hub1; start hub1 /etc/qmgate/qmgate.toml 127.0.0.11:25; }
eval "$(block hub-restart | sed 's/systemctl restart qmgate/restart_hub1/')"
[ -n "${pid[hub1]:-}" ] || fail "the guide's restart step did not start the hub"
ok "hub1: the guide's configuration checks and serves (SMTP, QMQP, QMTP, QMTPS)"

out=$(cd "$admin" && bash -euo pipefail -c "$(block tls-check)" 2>/dev/null) || fail "the guide's TLS check failed: $out"
# openssl prints the code twice per connection; every one must be 0.
grep -q 'Verify return code' <<<"$out" && ! grep 'Verify return code' <<<"$out" | grep -qv ': 0 (ok)' ||
  fail "the guide's TLS check: $out"
ok "STARTTLS on 25 and QMTPS on 6209 verify against the guide's authority"

printf 'Subject: hub1 local\n\nfrom the hub itself\n' |
  setpriv --reuid=nobody --regid=nogroup --clear-groups sendmail -i postmaster@example.net || fail "the hub's own sendmail failed"
delivered /var/lib/qmgate/maildir/example.net/postmaster 'from the hub itself'
ok "the hub's own sendmail (unix socket) -> /var/lib/qmgate/maildir"

# app1: spool mode over QMTPS with its client certificate.
dirs -app1
(cd "$admin" && bash -euo pipefail -c "$(block app-certs | sed 's#/etc/qmgate/#/etc/qmgate-app1/#g')") || fail "the guide's app certificate install failed"
block app-qmtps | sed -e 's#/var/spool/qmgate#/var/spool/qmgate-app1#; s#/run/qmgate/#/run/qmgate-app1/#; s#/etc/qmgate/#/etc/qmgate-app1/#g' > /etc/qmgate-app1/qmgate.toml
qmgate config check -config /etc/qmgate-app1/qmgate.toml >/dev/null || fail "the guide's QMTPS app server configuration does not check"
start app1 /etc/qmgate-app1/qmgate.toml unix:/run/qmgate-app1/qmqp.sock
printf 'Subject: over QMTPS\n\nfrom app1 over QMTPS\n' |
  setpriv --reuid=nobody --regid=nogroup --clear-groups env QMGATE_CONFIG=/etc/qmgate-app1/qmgate.toml sendmail -i postmaster@example.net ||
  fail "app1's sendmail failed"
delivered /var/lib/qmgate/maildir/example.net/postmaster 'from app1 over QMTPS'
printf 'Subject: relayed\n\nrelayed for app1\n' |
  setpriv --reuid=nobody --regid=nogroup --clear-groups env QMGATE_CONFIG=/etc/qmgate-app1/qmgate.toml sendmail -i someone@elsewhere.test ||
  fail "app1's sendmail failed"
queued /etc/qmgate/qmgate.toml someone@elsewhere.test
stop app1
ok "app1 (spool mode, QMTPS, client certificate) -> hub1: delivered, and relayed (queued at hub1 for elsewhere.test)"
# Without its certificate the same app server may not relay: the hub
# refuses the recipient, and the bounce comes back to the sender.
sed '/^cert_file\|^key_file/d' /etc/qmgate-app1/qmgate.toml > /etc/qmgate-app1/nocert.toml
start app1 /etc/qmgate-app1/nocert.toml unix:/run/qmgate-app1/qmqp.sock
printf 'Subject: not relayed\n\nno certificate\n' |
  setpriv --reuid=nobody --regid=nogroup --clear-groups env QMGATE_CONFIG=/etc/qmgate-app1/nocert.toml sendmail -i someone@elsewhere2.test ||
  fail "app1's sendmail failed"
delivered /var/lib/qmgate/maildir/example.net/nobody 'someone@elsewhere2.test'
grep -q elsewhere2.test <<<"$(qmgate queue list -config /etc/qmgate/qmgate.toml)" && fail "hub1 relayed for app1 without its certificate"
stop app1
ok "app1 without its certificate: relaying refused, the bounce delivered to its sender"

# hub2, and app2 in direct mode, failing over from hub1 to hub2.
dirs -hub2
hubconf 127.0.0.12 127.0.0.1/32 127.0.0.1/32 -hub2 hub2.example.net > /etc/qmgate-hub2/qmgate.toml
qmgate config check -config /etc/qmgate-hub2/qmgate.toml >/dev/null || fail "hub2's configuration does not check"
start hub2 /etc/qmgate-hub2/qmgate.toml 127.0.0.12:25
install -d -m 0755 /etc/qmgate-app2
direct=$(block direct-mode | grep -v -e '^apt install' -e '^systemctl' | sed 's#/etc/qmgate/#/etc/qmgate-app2/#g')
export QMGATE_CONFIG=/etc/qmgate-app2/qmgate.toml
bash -euo pipefail -c "$direct" 2>/tmp/direct.log || { cat /tmp/direct.log >&2; fail "the guide's direct-mode steps failed"; }
delivered /var/lib/qmgate/maildir/example.net/ops 'Subject: test'
stop hub1
bash -euo pipefail -c "$direct" 2>/tmp/direct.log || { cat /tmp/direct.log >&2; fail "the guide's direct-mode steps failed with hub1 down"; }
delivered /var/lib/qmgate-hub2/maildir/example.net/ops 'Subject: test'
unset QMGATE_CONFIG
ok "app2 (direct mode, the guide's steps): to hub1, then to hub2 while hub1 is down"

# app3 in spool mode, as the guide configures it: with both hubs down the
# message waits in app3's own queue, and goes to hub2 once it is back.
stop hub2
dirs -app3
block spool-mode | sed 's#/var/spool/qmgate#/var/spool/qmgate-app3#; s#/run/qmgate/#/run/qmgate-app3/#' > /etc/qmgate-app3/qmgate.toml
start app3 /etc/qmgate-app3/qmgate.toml unix:/run/qmgate-app3/qmqp.sock
printf 'Subject: spooled\n\nwaited at app3\n' |
  setpriv --reuid=nobody --regid=nogroup --clear-groups env QMGATE_CONFIG=/etc/qmgate-app3/qmgate.toml sendmail -i ops@example.net ||
  fail "app3's sendmail failed with both hubs down"
queued /etc/qmgate-app3/qmgate.toml ops@example.net
start hub2 /etc/qmgate-hub2/qmgate.toml 127.0.0.12:25
qmgate queue flush -config /etc/qmgate-app3/qmgate.toml >/dev/null || fail "qmgate queue flush failed at app3"
delivered /var/lib/qmgate-hub2/maildir/example.net/ops 'waited at app3'
stop app3
ok "app3 (spool mode, the guide's configuration): kept the message while both hubs were down, then to hub2"

# hub1 retired by hand, as docs/several-hubs.md says: its queue (the
# message relayed for app1) handed to hub2.
handoff=$(awk '/^## Handing a queue over by hand/ {f=1} f && /^```/ {getline; print; exit}' "$g/several-hubs.md")
case $handoff in "qmgate queue handoff "*) ;; *) fail "docs/several-hubs.md has no handoff command: $handoff" ;; esac
eval "$handoff" >/tmp/handoff.log 2>&1 || { cat /tmp/handoff.log >&2; fail "$handoff failed"; }
grep -q elsewhere.test <<<"$(qmgate queue list -config /etc/qmgate/qmgate.toml)" && fail "hub1 still holds the message after $handoff"
queued /etc/qmgate-hub2/qmgate.toml someone@elsewhere.test
bad=$(find /var/spool/qmgate ! -user qmgate)
[ -z "$bad" ] || fail "after $handoff (run as root), files in the queue are not qmgate's: $bad"
ok "$handoff: hub1's queue moved to hub2, the queue's files still qmgate's"
stop hub2

# Put the package's configuration back.
rm -rf /etc/qmgate-app1 /etc/qmgate-app2 /etc/qmgate-app3 /etc/qmgate-hub2 /var/spool/qmgate-app1 /var/spool/qmgate-app3 \
  /var/spool/qmgate-hub2 /run/qmgate-app1 /run/qmgate-app3 /run/qmgate-hub2 /var/lib/qmgate-hub2 /var/lib/qmgate/maildir/example.net "$admin" \
  /etc/qmgate/cert.pem /etc/qmgate/key.pem /etc/qmgate/mail-ca.pem
cp /tmp/qmgate.toml.packaged /etc/qmgate/qmgate.toml
