//go:build linux

package spool

import (
	"errors"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// writeRecords writes iov at off with positioned vectored writes: one, or
// more for over IOV_MAX buffers or if the kernel writes less. A full file
// system is an error (ENOSPC), never a fault: nothing is mapped.
func writeRecords(f *os.File, off int64, iov [][]byte) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	for len(iov) > 0 {
		var n int
		var werr error
		if err := rc.Write(func(fd uintptr) bool {
			n, werr = unix.Pwritev(int(fd), iov[:min(len(iov), iovMax)], off)
			return true
		}); err != nil {
			return err
		}
		switch {
		case errors.Is(werr, unix.EINTR):
			continue
		case werr != nil:
			return werr
		case n == 0:
			return io.ErrShortWrite
		}
		off += int64(n)
		for len(iov) > 0 && n >= len(iov[0]) {
			n -= len(iov[0])
			iov = iov[1:]
		}
		if len(iov) > 0 {
			iov[0] = iov[0][n:]
		}
	}
	return nil
}

// iovMax is Linux's limit on the buffers of one vectored write.
const iovMax = 1024

// syncData makes f's data, and the size it needs to be read, durable.
func syncData(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fdatasync(int(fd)) }); err != nil {
		return err
	}
	return serr
}
