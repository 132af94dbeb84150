//go:build unix

package spool

import "golang.org/x/sys/unix"

// freeDisk returns the bytes available to this process on dir's file system.
func freeDisk(dir string) (int64, bool) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, false
	}
	return int64(st.Bavail) * int64(st.Bsize), true
}
