package dotqmail_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/qmgate/qmgate/internal/qmail/dotqmail"
	"github.com/qmgate/qmgate/mail"
)

// printer stands for a Maildir transport: it prints what it would do.
type printer struct{}

func (printer) Deliver(ctx context.Context, p *dotqmail.Plan, d dotqmail.Delivery) error {
	switch d.Kind {
	case dotqmail.Own:
		fmt.Println("  into the own maildir")
	default:
		fmt.Printf("  into %s %s\n", d.Kind, d.Rel)
	}
	return nil
}

func (printer) Forward(ctx context.Context, p *dotqmail.Plan, sender string, addrs []string) error {
	fmt.Printf("  forward from %s to %s, %s", sender, strings.Join(addrs, " "), p.DeliveredTo())
	return nil
}

// A maildir: route delivering local-ext@domain for DIR: the user directory
// is DIR/domain/user, the user's Maildir and home of the control files.
func Example() {
	root, _ := os.MkdirTemp("", "maildir-route")
	defer os.RemoveAll(root)
	dir := filepath.Join(root, "example.com", "joe")
	os.MkdirAll(filepath.Join(dir, ".Lists", "new"), 0o700) // an IMAP folder "Lists"
	os.WriteFile(filepath.Join(dir, ".qmail-shop"), []byte("./Maildir-shop/\n&joe@elsewhere.example\n"), 0o600)
	os.WriteFile(filepath.Join(dir, ".qmail-prog"), []byte("|vacation\n"), 0o600)

	for _, rcpt := range []string{"joe-shop@example.com", "joe-lists@example.com", "joe-other@example.com", "joe-prog@example.com"} {
		fmt.Println(rcpt)
		p, err := dotqmail.Lookup(dir, rcpt, "alice@example.org", dotqmail.Options{})
		if err != nil {
			st := mail.StatusOf(err)
			fmt.Printf("  %s: %s\n", st.Class, st.Text)
			continue
		}
		if err := p.Run(context.Background(), printer{}); err != nil {
			fmt.Println("  failed:", err)
		}
	}
	// Output:
	// joe-shop@example.com
	//   into maildir Maildir-shop
	//   forward from alice@example.org to joe@elsewhere.example, Delivered-To: joe-shop@example.com
	// joe-lists@example.com
	//   into maildir .Lists
	// joe-other@example.com
	//   into the own maildir
	// joe-prog@example.com
	//   temporary: .qmail-prog line 1: program deliveries are not enabled for this mailbox
}
