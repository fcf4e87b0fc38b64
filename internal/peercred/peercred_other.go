//go:build !linux && !freebsd && !darwin && !openbsd && !netbsd

package peercred

func get(int) (Cred, error) { return Cred{}, ErrUnsupported }
