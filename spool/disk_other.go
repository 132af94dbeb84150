//go:build !unix

package spool

// freeDisk is not measured on this platform; min_free_disk is not enforced.
func freeDisk(string) (int64, bool) { return 0, false }
