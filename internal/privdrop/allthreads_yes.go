//go:build linux || freebsd || openbsd || netbsd || darwin

package privdrop

// allThreads: see the package comment for each platform's reason.
const allThreads = true
