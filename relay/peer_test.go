package relay

import (
	"context"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/qmgate/qmgate/internal/testpeer"
	"github.com/qmgate/qmgate/mail"
	"github.com/qmgate/qmgate/qmqp"
)

func me(t *testing.T) *user.User {
	t.Helper()
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func sendUnixQMQP(t *testing.T, sock string, env mail.Envelope) mail.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	body := "Subject: local\n\nx\n"
	res, err := qmqp.Send(ctx, []string{"unix:" + sock}, env, strings.NewReader(body), int64(len(body)))
	if err != nil && res.Status.Class == 0 {
		t.Fatalf("qmqp send: %v", err)
	}
	return res.Status
}

// The QMQP unix socket names the local user who submitted (SO_PEERCRED) in
// the Received line and the acceptance log line.
func TestHubUnixSocketNamesPeer(t *testing.T) {
	u := me(t)
	h := startHub(t, `
hostname = "hub.test"
[qmqp]
listen = ["unix:DIR/qmqp.sock"]
[[route]]
domains = ["example.com"]
via = "maildir:DIR/maildir"
`)
	sock := filepath.Join(h.dir, "qmqp.sock")
	if st := sendUnixQMQP(t, sock, mail.Envelope{Sender: "s@example.com", Recipients: []string{"user@example.com"}}); !st.IsAccept() {
		t.Fatal(st)
	}
	root := filepath.Join(h.dir, "maildir")
	testpeer.WaitFor(t, "the message in the maildir", 30*time.Second, func() bool {
		files, _ := filepath.Glob(filepath.Join(root, "example.com", "user", "new", "*"))
		return len(files) == 1
	})
	trace := "Received: from unknown (uid=" + u.Uid + "/" + u.Username + "@unknown)\n  by hub.test with QMQP; "
	if m := maildirFiles(t, root, "example.com", "user")[0]; !strings.Contains(m, trace) {
		t.Fatalf("no %q in\n%s", trace, m)
	}
	if log := h.logText(); !strings.Contains(log, `client="uid `+u.Uid+` (`+u.Username+`)"`) {
		t.Fatalf("the acceptance log line does not name the user:\n%s", log)
	}
}

// [qmqp] unix_allow names who may submit over the socket; unix_senders
// which senders each may use.
func TestHubUnixSocketPolicy(t *testing.T) {
	u := me(t)
	g, err := user.LookupGroupId(strconv.Itoa(os.Getgid()))
	if err != nil {
		t.Fatal(err)
	}
	route := "[[route]]\ndomains = [\"*\"]\nvia = \"discard:\"\n"
	env := mail.Envelope{Sender: "me@example.com", Recipients: []string{"a@elsewhere.org"}}
	for _, tc := range []struct {
		name, qmqp string
		want       string
	}{
		{"nobody named", "", "K"},
		{"another user", `unix_allow = ["nosuchuser-qmgate"]`, "Dsorry, this user may not submit mail here (#5.7.1)"},
		{"this user", `unix_allow = ["nosuchuser-qmgate", "` + u.Username + `"]`, "K"},
		{"this user's group", `unix_allow = ["@` + g.Name + `"]`, "K"},
		{"sender allowed", `unix_senders = { "` + u.Username + `" = ["@example.com"] }`, "K"},
		{"sender not allowed", `unix_senders = { "` + u.Username + `" = ["me@example.net"] }`, "Dsorry, that sender is not yours to use (#5.7.1)"},
		{"everyone else", `unix_senders = { "*" = ["<>"] }`, "Dsorry, that sender is not yours to use (#5.7.1)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startHub(t, "[qmqp]\nlisten = [\"unix:DIR/qmqp.sock\"]\n"+tc.qmqp+"\n"+route)
			st := sendUnixQMQP(t, filepath.Join(h.dir, "qmqp.sock"), env)
			if got := string(st.Reply()); !strings.HasPrefix(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}
