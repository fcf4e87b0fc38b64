//go:build !(linux || freebsd || openbsd || netbsd || darwin)

package privdrop

const allThreads = false
