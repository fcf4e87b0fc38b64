package dotqmail

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/qmgate/qmgate/mail"
)

// SplitLocal splits a local part at the first sep into the user and the
// extension. hasExt tells "joe-" (user "joe", empty extension) from "joe".
// The user is never split further: qmgate's mailboxes are named by the part
// before the first separator.
func SplitLocal(local string, sep byte) (user, ext string, hasExt bool) {
	if i := strings.IndexByte(local, sep); i >= 0 {
		return local[:i], local[i+1:], true
	}
	return local, "", false
}

// Lookup makes the plan for delivering a message from sender to rcpt
// (local@domain, as given), whose mailbox belongs to the user directory
// userDir (DIR/domain/user for a maildir: route). It reads the user's
// control files now, bounded, and keeps nothing.
//
// The files are tried in qmail-local's order, with the extension's ASCII
// letters lower-cased and its dots turned into colons: for "joe-a-b",
// .qmail-a-b, .qmail-a-default, .qmail-default; for "joe", .qmail (and
// .qmaildefault, as qmail-local does). The first regular file found
// decides. An empty one means the own mailbox. When none exists and the
// user's Maildir has a folder named after the extension (".a-b", any case),
// the plan delivers there. Otherwise the plan is the own mailbox: unlike
// qmail-local, which bounces user-ext when nothing matches, qmgate keeps
// delivering every user-ext to user.
//
// The returned error is an *Error carrying a mail.Status: temporary for an
// unsafe or broken control file or directory (writable by others, owned by
// another user, too big, a symbolic link or path leading outside userDir,
// a program line when programs are off), permanent only for an address
// that can never be looked up.
func Lookup(userDir, rcpt, sender string, opt Options) (*Plan, error) {
	local, domain := mail.Split(rcpt)
	user, ext, hasExt := SplitLocal(local, opt.separator())
	p := &Plan{
		Recipient: rcpt, Local: local, Domain: domain,
		User: user, Ext: ext, HasExt: hasExt,
		Sender: sender, ForwardSender: sender,
		Dir: userDir,
	}
	if strings.Count(ext, "-") >= opt.maxExtParts() {
		return nil, &Error{Status: mail.Perm("5.1.3", "the address extension has too many parts")}
	}
	// No directory yet (a mailbox never delivered to), or a file there (an
	// mbox route's mailbox): no control files, the own mailbox.
	if st, err := os.Stat(userDir); (err != nil && absent(err)) || (err == nil && !st.IsDir()) {
		p.Deliveries = []Delivery{{Kind: Own}}
		return p, nil
	}
	root, err := os.OpenRoot(userDir)
	if err != nil {
		return nil, tempErr("4.3.0", "", 0, "cannot open the mailbox's directory: "+errnoText(err))
	}
	defer root.Close()

	dirProblem, err := checkDir(root, &opt)
	if err != nil {
		return nil, err
	}

	safeext := []byte(ext)
	for i, c := range safeext {
		switch {
		case c >= 'A' && c <= 'Z':
			safeext[i] = c + 'a' - 'A'
		case c == '.':
			safeext[i] = ':'
		}
	}
	dash := ""
	if hasExt {
		dash = "-"
	}

	var (
		name  string
		data  []byte
		mode  fs.FileMode
		found bool
	)
	name = ".qmail" + dash + string(safeext)
	data, mode, found, err = readControl(root, name, &opt)
	if err != nil {
		return nil, err
	}
	if found {
		if n := len(safeext); n >= 7 && string(safeext[n-7:]) == "default" {
			p.Default, p.HasDefault = ext[n-7:], true
		}
	} else {
		for i := len(safeext); i >= 0; i-- {
			if i > 0 && safeext[i-1] != '-' {
				continue
			}
			name = ".qmail" + dash + string(safeext[:i]) + "default"
			data, mode, found, err = readControl(root, name, &opt)
			if err != nil {
				return nil, err
			}
			if found {
				p.Default, p.HasDefault = ext[i:], true
				break
			}
		}
	}

	if !found {
		folder, err := findFolder(root, ext, hasExt, &opt)
		if err != nil {
			return nil, err
		}
		if folder != "" {
			if dirProblem != "" {
				return nil, tempErr("4.7.0", "", 0, dirProblem)
			}
			p.Folder = folder
			p.Deliveries = []Delivery{{Kind: Maildir, Rel: folder, Path: filepath.Join(userDir, folder)}}
			return p, nil
		}
		p.Deliveries = []Delivery{{Kind: Own}}
		return p, nil
	}

	p.File = name
	if dirProblem != "" {
		return nil, tempErr("4.7.0", name, 0, dirProblem)
	}
	if len(data) == 0 {
		p.Deliveries = []Delivery{{Kind: Own}}
		return p, nil
	}
	ds, err := Parse(data, mode&0o100 != 0)
	if err != nil {
		return nil, inFile(err, name)
	}
	for i := range ds {
		d := &ds[i]
		switch d.Kind {
		case Maildir, Mbox:
			rel, why := localPath(userDir, d.Path, d.Kind)
			if why == "" {
				why = checkTarget(root, rel)
			}
			if why != "" {
				return nil, tempErr("4.7.0", name, d.Line, why)
			}
			d.Rel, d.Path = rel, filepath.Join(userDir, filepath.FromSlash(rel))
		case Program:
			if !opt.AllowPrograms {
				return nil, tempErr("4.7.0", name, d.Line, "program deliveries are not enabled for this mailbox")
			}
		case Forward:
			if strings.IndexByte(d.Address, '@') < 0 && domain != "" {
				d.Address += "@" + domain
			}
		}
	}
	p.Deliveries = ds

	if sender != "" && sender != mail.DoubleBounceSender {
		owner, err := exists(root, ".qmail"+dash+string(safeext)+"-owner")
		if err != nil {
			return nil, err
		}
		if owner {
			verp, err := exists(root, ".qmail"+dash+string(safeext)+"-owner-default")
			if err != nil {
				return nil, err
			}
			if verp {
				p.ForwardSender = local + "-owner-@" + domain + "-@[]"
			} else {
				p.ForwardSender = local + "-owner@" + domain
			}
		}
	}
	return p, nil
}

// absent reports whether err means "no such file" in any of its forms.
func absent(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) || errors.Is(err, syscall.ENAMETOOLONG)
}

// escapes reports whether err is os.Root's refusal of a path or symbolic
// link that leads outside the root (it has no exported sentinel), or a
// loop of links.
func escapes(err error) bool {
	if errors.Is(err, syscall.ELOOP) {
		return true
	}
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return strings.Contains(pe.Err.Error(), "escapes")
	}
	return false
}

// errnoText is an operating-system error in plain words without the path.
func errnoText(err error) string {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	if escapes(err) {
		return "it leads outside the mailbox's directory"
	}
	return "unexpected error"
}

// checkDir refuses a sticky user directory at once (its owner is editing
// the control files, dot-qmail(5)) and returns, without failing yet, what
// makes the directory untrustworthy: it only matters when a control file or
// folder is used, so a mailbox that uses neither keeps working as before.
func checkDir(root *os.Root, opt *Options) (problem string, err error) {
	st, err := root.Stat(".")
	if err != nil {
		return "", tempErr("4.3.0", "", 0, "cannot examine the mailbox's directory: "+errnoText(err))
	}
	if st.Mode()&fs.ModeSticky != 0 {
		return "", tempErr("4.2.1", "", 0, "the mailbox's directory is sticky: its owner is editing the delivery instructions")
	}
	if st.Mode().Perm()&0o022 != 0 {
		return "the mailbox's directory can be written by others than its owner", nil
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && !opt.owner(int(sys.Uid)) {
		return "the mailbox's directory is owned by a user not allowed for it", nil
	}
	return "", nil
}

// readControl reads the control file name if it exists as a regular file.
// Like qmail-local, anything that is not a regular file counts as missing;
// unlike it, the file must not be writable by group or others (qmail-local
// refuses only world-writable), must be owned by an allowed user, must not
// be a link leading outside the directory, and must fit the size limit.
func readControl(root *os.Root, name string, opt *Options) (data []byte, mode fs.FileMode, found bool, err error) {
	if strings.IndexByte(name, '/') >= 0 {
		return nil, 0, false, nil // an extension with a slash names no file here
	}
	// O_NONBLOCK: a FIFO planted under the name must not hang delivery.
	f, err := root.OpenFile(name, os.O_RDONLY|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		if absent(err) {
			return nil, 0, false, nil
		}
		if escapes(err) {
			return nil, 0, false, tempErr("4.7.0", name, 0, "the file is a symbolic link leading outside the mailbox's directory")
		}
		return nil, 0, false, tempErr("4.3.0", name, 0, "cannot open the file: "+errnoText(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, false, tempErr("4.3.0", name, 0, "cannot examine the file: "+errnoText(err))
	}
	if !st.Mode().IsRegular() {
		return nil, 0, false, nil
	}
	if st.Mode().Perm()&0o022 != 0 {
		return nil, 0, false, tempErr("4.7.0", name, 0, "the file can be written by others than its owner")
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && !opt.owner(int(sys.Uid)) {
		return nil, 0, false, tempErr("4.7.0", name, 0, "the file is owned by a user not allowed for this mailbox")
	}
	max := opt.maxFileBytes()
	tooBig := tempErr("4.2.1", name, 0, "the file is larger than the limit of "+strconv.FormatInt(max, 10)+" bytes")
	if st.Size() > max {
		return nil, 0, false, tooBig
	}
	data, err = io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, 0, false, tempErr("4.3.0", name, 0, "cannot read the file: "+errnoText(err))
	}
	if int64(len(data)) > max {
		return nil, 0, false, tooBig
	}
	return data, st.Mode(), true, nil
}

// exists reports whether name exists, following links inside the root
// (qmail-local's stat for the -owner files).
func exists(root *os.Root, name string) (bool, error) {
	if strings.IndexByte(name, '/') >= 0 {
		return false, nil
	}
	_, err := root.Stat(name)
	switch {
	case err == nil:
		return true, nil
	case absent(err):
		return false, nil
	case escapes(err):
		return false, tempErr("4.7.0", name, 0, "the file is a symbolic link leading outside the mailbox's directory")
	}
	return false, tempErr("4.3.0", name, 0, "cannot examine the file: "+errnoText(err))
}

// localPath turns a mailbox line into a path relative to userDir, or says
// why it cannot be one: it must not contain a ".." element, and an
// absolute one must lie under userDir.
func localPath(userDir, raw string, k Kind) (rel, why string) {
	for _, el := range strings.Split(raw, "/") {
		if el == ".." {
			return "", "the mailbox path contains \"..\""
		}
	}
	if strings.HasPrefix(raw, "/") {
		dir := filepath.ToSlash(filepath.Clean(userDir))
		if raw != dir && !strings.HasPrefix(raw, strings.TrimSuffix(dir, "/")+"/") {
			return "", "the mailbox path lies outside the mailbox's directory"
		}
		raw = "./" + strings.TrimPrefix(raw, dir)
	}
	rel = path.Clean(raw)
	if k == Mbox && rel == "." {
		return "", "the mbox line names the directory itself"
	}
	return rel, ""
}

// checkTarget refuses a mailbox whose existing part leads outside the
// directory through a symbolic link. A missing target is fine: the
// transport creates it.
func checkTarget(root *os.Root, rel string) string {
	_, err := root.Stat(rel)
	switch {
	case err == nil, absent(err):
		return ""
	case escapes(err):
		return "the mailbox path leads outside the mailbox's directory through a symbolic link"
	}
	return "cannot examine the mailbox path: " + errnoText(err)
}

// findFolder returns the Maildir++ folder (".ext") for the extension, or ""
// when there is none or folders are off. The exact name is tried first,
// then a bounded scan for one that differs only in ASCII case, since mail
// clients keep the case the user typed ("Lists") and addresses are
// case-folded.
func findFolder(root *os.Root, ext string, hasExt bool, opt *Options) (string, error) {
	if opt.NoFolders || !hasExt || !folderName(ext) {
		return "", nil
	}
	if isDir(root, "."+ext) {
		return "." + ext, nil
	}
	dir, err := root.Open(".")
	if err != nil {
		return "", nil
	}
	defer dir.Close()
	left := opt.maxFolderEntries()
	for left > 0 {
		n := min(left, 256)
		ents, err := dir.ReadDir(n)
		for _, e := range ents {
			name := e.Name()
			if len(name) == len(ext)+1 && name[0] == '.' && equalFoldASCII(name[1:], ext) && isDir(root, name) {
				return name, nil
			}
		}
		left -= len(ents)
		if err != nil || len(ents) < n {
			break
		}
	}
	return "", nil
}

// folderName accepts an extension that can name a Maildir++ folder: no
// slash, no control character, no leading dot and no "..".
func folderName(ext string) bool {
	if ext == "" || ext[0] == '.' || strings.Contains(ext, "..") || len(ext) > 255 {
		return false
	}
	for i := 0; i < len(ext); i++ {
		if c := ext[i]; c == '/' || c < 0x20 || c == 0x7f {
			return false
		}
	}
	return true
}

func isDir(root *os.Root, name string) bool {
	st, err := root.Stat(name)
	return err == nil && st.IsDir()
}

func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
