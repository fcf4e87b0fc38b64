// Package queue is qmgate's durable spool: it takes a message (body first,
// then envelope), makes it durable before anyone is told it was accepted,
// hands due work to the relay, records per-recipient results, schedules
// retries with per-destination backoff, and writes bounces (RFC 3464 DSNs).
// It knows nothing of networks; the relay engine drives it.
//
// # Promises
//
//  1. Commit (and Put) return an ID only when body and envelope are on
//     stable storage: the files, and the directories that name them, are
//     fsynced.
//  2. A crash at any instant leaves each message either unacknowledged and
//     absent, or acknowledged and queued. Open replays the journal by itself
//     and resumes every committed message.
//  3. A delivered recipient is never handed out again, unless a crash came
//     between the delivery and the flush of its Record.
//  4. Partial files left by a crash are removed by a janitor after
//     Options.JanitorCutoff.
//  5. A full disk, an I/O error, a failed fsync or a missing directory make
//     Commit return an *Error, which is always temporary
//     (mail.StatusQueueTrouble), and leave nothing half-visible. Before the
//     disk is full, NewMessage already refuses new mail (temporarily) while
//     less than Options.MinFreeBytes is free, keeping room for the records
//     of deliveries under way.
//  6. Bodies stream to disk: a writer holds at most Options.InlineMax bytes
//     of body in memory, readers a small buffer.
//
// # Group commit
//
// Durable ingest is bounded by flushes per second, so commits share them.
// Every change to the queue — a new message, a recipient's result, a hold,
// a removal — is a record appended to a journal. Records appended while a
// flush is running gather in the next batch; a single committer goroutine
// writes each batch with one write(2) and makes it durable with one
// fdatasync(2), then wakes everyone in it.
//
// A record with a large inline body (128 KiB, or half of a smaller
// InlineMax) is not copied into the batch: under the lock its Writer only
// reserves the record's place (the batch's offset order is fixed there, as
// for every record), then writes the record into the segment itself with
// pwrite(2), in parallel with other Writers and with the flush before.
// The committer writes the batch's copied records around the reserved
// places and waits until every Writer of the batch has written its record
// (or failed, which fails the batch) before the fdatasync: the flush
// still covers every byte of the batch, and nothing is acknowledged
// before it. Copying a 256 KiB body into the batch under the queue's lock,
// and then writing megabytes from the one committer, cost more than the
// flush at large sizes (BENCHMARKS.md). Under load a flush carries all
// the commits that arrived during the previous one, so a commit waits at
// most about two flush intervals, and throughput grows with concurrency
// instead of being one fsync per message.
//
// Busy callers in a loop would split into two cohorts that take turns:
// those woken by one flush are still waiting for a processor when the
// next batch is taken. So after a flush the committer may hold the next
// batch open (Options.CommitLinger, at most 1 ms by default) while callers
// of the last two batches are still on their way: woken and not yet run,
// or blocked on the queue's lock to append. It never waits for a caller
// that has gone back to the network, nor for a lone caller. With 64 busy
// writers this puts about 63 of them in every flush instead of 35
// (BENCHMARKS.md).
//
// What the committer does under the queue's lock between one flush and
// waking its callers is kept short and bounded whatever the queue's size,
// since every caller of the batch waits for it: the index keys messages
// by their fixed-size ID (with string keys, each growth of the hash map
// re-read every key from wherever it lay in memory), and the schedule is
// a heap kept in fixed blocks that never copies itself as it grows (a
// doubling slice copied the whole schedule, several milliseconds at a few
// hundred thousand messages).
//
// The journal is the queue, as qmail's author suggested ("a journal,
// separate from the queue, adequate to rebuild it"), with the in-memory
// index rebuilt from it on Open.
//
// # Files
//
// A queue directory holds:
//
//	lock            flock(2)ed by the process that has the queue open
//	control         the daemon's admin socket (mode 0600; see below)
//	journal/        segment files <seq>.seg, seq a 16-digit hex number
//	body/<ID>       bodies larger than Options.InlineMax, one file each
//
// All are created mode 0600 / 0700, owned by the queue user.
//
// # Segment format
//
// A segment starts with 16 bytes: "qmgJ", a little-endian uint32 version
// (1), and the uint64 sequence number of the segment. Records follow, each:
//
//	crc      uint32  CRC-32C (Castagnoli) of type..body, then of the
//	                 segment's sequence number (8 bytes, little-endian)
//	type     byte    'M', 'S', 'R', 'F' or 'X'
//	metalen  uint32  length of meta
//	bodylen  uint32  length of an inline body (M and S; 0 otherwise)
//	meta     metalen bytes of fields
//	body     bodylen bytes: the message body, exactly as given
//
// A new segment file is preallocated to Options.SegmentSize with
// fallocate(2), so appends never change its size or allocate blocks and a
// batch's fdatasync need not commit the file system's own journal; the
// unwritten rest reads as zeros, and a record header of zeros (there is no
// record type 0) marks the end of the records. Where fallocate fails, the
// segment simply grows with its appends.
//
// Once the current segment is half full, the next one is made ahead of
// need (segments of at least 1 MiB): created, preallocated, its header
// written, the file and journal/ synced, all off the commit path, so that
// the rotation is a switch instead of a few milliseconds' stall for a
// whole batch. The spare takes its sequence number when it is started; if
// a rotation comes first it would be older than the new segment, so it is
// removed unused, and Close removes an unused spare. One left by a crash
// is a header and no records, deleted like any empty segment.
//
// Integers are little-endian; in meta, numbers are (zig-zag for signed)
// varints, strings are a varint length and the bytes, times are Unix
// nanoseconds (0 for none). Mixing the sequence number into the CRC means
// stale bytes of another segment can never pass for a record of this one.
//
//	M message   ID, arrival time, sender, recipient count, recipients,
//	            body kind (bits: 1 external, else inline; 2 a prefix
//	            follows), body size, body CRC-32C, and with bit 2 the
//	            prefix (a string of at most MaxPrefixBytes).
//	S snapshot  ID, arrival, sender, flags, body kind/size/CRC/prefix, recipient
//	            count, then per recipient its state (as in R) and attempt
//	            history. It replaces everything older about the message.
//	R update    ID, count, then per recipient: index, state (0 pending,
//	            1 delivered, 2 failed), flags (1: bounce settled), attempt
//	            count, next attempt time, destination, for failed the final
//	            status (class, enhanced code, text, SMTP code), and
//	            optionally one attempt (time, route, remote host, status).
//	            An attempt's route may end in " tls=POLICY", the TLS policy
//	            it was made under (none, opportunistic, required,
//	            smarthost-required, mta-sts-enforce, mta-sts-testing);
//	            route names hold no spaces, and older versions read it as
//	            part of the route.
//	F flags     ID, flags (1 held, 2 delay notice sent).
//	X remove    ID.
//
// The prefix is header bytes the hub added at acceptance after the body
// had streamed (DKIM-Signature fields, its Received line): delivery reads
// prefix then body as one message. Records written before prefixes
// existed have body kind 0 or 1 and replay as they always did; a journal
// with prefixes cannot be read by a version that does not know them.
//
// A message is gone when every recipient is delivered, or failed with its
// bounce settled, or after an X. A record that names an unknown ID is
// ignored: it belongs to a message whose beginning was already deleted.
//
// # Commit order
//
// Commit of a small body: the body is in the writer's buffer; the M record
// (envelope and body) is appended to the current batch (or, for a large
// inline body, placed by the Writer at its reserved offset); the committer
// writes it, waits for the placed records, fdatasyncs the segment (and,
// for a new segment, fsyncs journal/), and only then is the message put
// in the index and the ID returned. A large body streams to body/<ID> as
// it arrives; Commit fsyncs that file and then body/ (one fsync shared by
// the Writers that need it at the same moment), by the Writers themselves
// and in parallel with other commits, before the M record joins
// a batch: a durable record never names a file that could vanish, and the
// batch carries only the small record, so the small messages committed
// with it never wait for the large body's flush, nor fail with it. Replay
// drops a record whose body file is missing or short: only a failed,
// unacknowledged commit can leave one.
//
// # Replay and crashes
//
// Open reads the segments in order and applies every record up to the
// first one that is short or fails its CRC, which can only be a segment's
// torn tail: records are only appended, and a process never appends to a
// segment that an earlier process wrote (every Open starts a new one). It
// never scans past a bad record, since an inline body could be made to
// look like one. Placed records may reach the file out of order, but a
// batch is flushed only once all of its records are written and every
// batch before it is durable, so a torn tail holds only unacknowledged
// records. After a failed write or fsync (the committer's or a placing
// Writer's) the committer cuts the failed records off the segment (or
// removes a new segment file), fails every batch queued behind it, and
// moves to a new segment: the records were not acknowledged and must not
// come back. A Writer of a later batch may still place its record after
// the cut; it lands past a hole of zeros, where replay has already
// stopped. Records are placed only into a segment whose file exists, so a
// new segment's first batch is always the committer's.
//
// # Segment deletion and compaction
//
// The index counts, per segment, the live messages with records in it.
// Segments are deleted oldest first, and only while unused, with a
// directory fsync after each unlink, so a record that ends a message is
// never deleted while an older record it cancels survives. When the
// oldest segment is mostly dead (live bytes at most a quarter of it), or
// the journal exceeds twice the live data plus two segments, or there are
// more than 16 sealed segments, its live messages are rewritten into the
// current segment as S records (copying inline bodies), after which it is
// unused and deleted. Bodies in body/ are removed once the record that
// ends their message is durable; the janitor removes any left behind.
//
// # Delivery
//
// The relay calls Wait, which returns when a message is committed, a retry
// or lease comes due, a destination recovers, or an admin flushes or
// releases (no polling); then Claim(n), which leases due recipients,
// grouped per message and destination (Options.DestinationOf, or the
// Destination the relay last reported) and sorted by destination so the
// relay can carry several messages over one connection. Delivery.Open
// streams the body and verifies its CRC; Delivery.SenderFor expands VERP.
// Record(ctx, d, results) stores each recipient's outcome durably and
// releases the lease: accepted recipients are delivered, permanent
// failures bounce, temporary ones are rescheduled with exponential backoff
// (Options.Retry) and their destination is backed off
// (Options.DestinationBackoff) so that its other recipients wait too,
// until it answers again. Leases live in memory: after a crash, or after
// Options.LeaseTime, claimed work comes back (unless its holder renews the
// lease with Delivery.Renew, as a paced route does for its backlog); Record
// with no results gives a Delivery back untouched. Past Options.Lifetime a
// temporary failure becomes permanent (5.4.7, with an explanation and the
// last reply).
//
// # Bounces
//
// When recipients fail for good and no delivery of the message is still
// out, the queue writes one DSN for all of them: multipart/report with a
// human-readable part quoting the remote reply, a message/delivery-status
// part (Reporting-MTA, Arrival-Date, and per recipient Final-Recipient,
// Action, Status, Remote-MTA, Diagnostic-Code, Last-Attempt-Date) and the
// original header as text/rfc822-headers (at most Options.MaxBounceHeader
// bytes). It is committed from <> to mail.BounceAddress(sender) (pre@host
// for a VERP sender) before the failures are marked as reported, so a
// crash can repeat a bounce but never lose one. Mail from <> that fails
// goes to Options.Postmaster from #@[] (a double bounce); mail from #@[]
// is never bounced: its failure is logged and dropped. After
// Options.DelayNotice of deferral one delay notice (Action: delayed,
// Will-Retry-Until) is sent per message, never for bounces.
//
// # Administration while running
//
// Open takes an exclusive flock on dir/lock. A daemon runs ServeControl,
// which serves dir/control, a unix socket any local user may reach: List,
// Stat and Show are open to all (as Postfix's showq is by default), the
// changes only to the queue's owner and root, judged by the peer's
// credentials as the kernel reports them. OpenAdmin(dir) opens the
// queue itself (passively: no deliveries, no background work) when no
// process holds the lock, or returns a client of the control socket when
// one does; both implement Admin (List, Stat, Show, Hold, Release,
// Remove, Flush). Hold, Release and Remove are journal records, durable
// before they return; Flush only changes timing and is not recorded.
// `qmgate queue` renders the results as stable text or JSON.
//
// # Platforms
//
// The promises rest on three calls whose strength differs by platform
// (fs_GOOS.go gives each choice with its reason): a data flush for the
// journal, fsync for body files, and fsync of a directory for names. Linux,
// FreeBSD and NetBSD flush data with fdatasync(2); OpenBSD uses fsync(2),
// which is stronger. On macOS plain fsync stops at the drive's volatile
// cache, so every flush is F_FULLFSYNC: the promises hold, at a lower
// commit rate. They are weakened only where a file system or drive ignores
// the flush (a drive that acknowledges cache flushes it does not make,
// network file systems); and on macOS where a file system refuses
// F_FULLFSYNC (SMB, for one), Go falls back to fsync, whose data may then
// still sit in the drive's cache when the commit returns. Segments are
// preallocated only on Linux and FreeBSD UFS; elsewhere they grow with
// their appends, which changes speed, not promises.
//
// # How it is tested
//
// Beside unit tests of every transition: a crash test that SIGKILLs a
// writer process under concurrent load at random instants (50 rounds) and
// checks every acknowledged ID, delivery and removal after each reopen; a
// power-loss simulation, an in-memory file system that keeps only what was
// fsynced (data) and what directory fsyncs made durable (names), with
// random torn remains of the rest, which fails if any fsync in the commit
// path is left out; fault injection (ENOSPC, EIO, failed fsync, missing
// directory) at every file operation, plus a real full tmpfs when run as
// root; golden DSNs; and a 1 GiB body queued and read back by a process
// whose peak RSS must stay under 64 MiB. BenchmarkPut compares durable Put
// throughput with one file per message (create, write, fsync, rename,
// directory fsync) at 1, 16 and 64 writers; BenchmarkPutSize measures
// 64 KiB to 1 MiB bodies, and BenchmarkPutMixed 2 KB messages committed
// beside a writer of large ones (whether the large hold the small back):
//
//	go test -run '^$' -bench Put -benchtime 2s -count 3 ./queue
//
// # IDs
//
// An ID is 13 characters of Crockford base32 in lower case: 10 for the
// millisecond of its creation, 3 for a sequence within it. IDs sort by
// time, need no quoting, and stay unique across restarts (Open seeds the
// generator past the newest ID in the journal).
package queue
