// Package dotqmail decides where a local delivery goes when the mailbox's
// owner controls it with qmail's .qmail files: qmail-local's lookup order
// (dot-qmail(5), qmail-local(8)), qmail's delivery-instruction syntax, and the
// safety rules qmail-local applies before trusting a user's file. It also
// holds the Sender Rewriting Scheme used for forwards that leave the site,
// and an optional runner for program lines (qmail-command(8)).
//
// The package plans; it does not write mailboxes or queue mail. A Maildir or
// mbox transport calls Lookup at delivery time (nothing is cached), then
// performs the Plan with Run, which keeps qmail-local's order: mailbox and
// program deliveries in file order, forwards last, in one message.
package dotqmail
