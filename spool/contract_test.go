package spool_test

import (
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/hookgate/hookgate/spool"
	"github.com/hookgate/hookgate/spool/spooltest"
)

// TestContract runs the Backend contract suite against Badger spools in
// temporary directories.
func TestContract(t *testing.T) {
	spooltest.Run(t, func(t *testing.T, l spool.Limits) (spool.Backend, func() spool.Backend) {
		dir := t.TempDir()
		open := func() spool.Backend {
			s, err := spool.Open(spool.Options{Dir: dir, Limits: l, MinFreeDisk: 1 << 20, MemTableSize: 16 << 20,
				Logger: zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))})
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
		return open(), open
	})
}
