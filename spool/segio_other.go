//go:build !linux

package spool

import "os"

// writeRecords writes iov at off.
func writeRecords(f *os.File, off int64, iov [][]byte) error {
	for _, b := range iov {
		if _, err := f.WriteAt(b, off); err != nil {
			return err
		}
		off += int64(len(b))
	}
	return nil
}

// syncData makes f's data durable.
func syncData(f *os.File) error { return f.Sync() }
