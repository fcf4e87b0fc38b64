// Package cluster is the several-hubs battery: three `qmgate serve` hubs
// on their own loopback addresses, a fleet of `qmgate sendmail`
// nullclients (direct mode with the hubs in different orders, spool mode,
// and behind a PROXY-protocol balancer in front of two hubs) and
// recording QMTP and SMTP sinks as the next hops. Under steady load one
// hub is killed with SIGKILL and restarted, one is stopped with SIGTERM and
// hands its queue to the others, and one is cut off from its next hops
// for a while. At the end every message a nullclient heard accepted must
// have been delivered, counted per path, with duplicates only where their
// copies straddle a SIGKILL.
//
// It holds only tests (Linux only). The short form runs with the rest of
// the tree's tests, in about a minute:
//
//	go test -count=1 ./test/cluster/
//
// The long form runs longer under more load and more rounds of each
// fault, and writes its figures into RELIABILITY.md's cluster section:
//
//	go test -count=1 -timeout 30m ./test/cluster/ -run Battery -long
//
// QMGATE_KEEP=1 keeps the hubs' directories and logs.
package cluster
