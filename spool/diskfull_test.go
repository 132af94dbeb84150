//go:build linux

package spool

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"
)

// TestDiskFullRefusesBeforeBadgerDies fills a small tmpfs. Badger dies of
// SIGBUS when a file system fills under its mmapped files, so the spool must
// refuse with a full error while the floor is still free, stay up, and keep
// everything it accepted. It mounts a tmpfs, so it needs root (as CI has).
func TestDiskFullRefusesBeforeBadgerDies(t *testing.T) {
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=160m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mounting a tmpfs (this test needs root): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	const floor = 48 << 20
	s, err := Open(Options{Dir: dir, MemTableSize: 8 << 20, MinFreeDisk: floor, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	body := strings.Repeat("b", 16<<10)
	var (
		mu       sync.Mutex
		accepted []string
		fullErr  error
		wg       sync.WaitGroup
	)
	for g := range 8 {
		wg.Go(func() {
			for n := 0; ; n++ {
				id := fmt.Sprintf("g%d-%d", g, n)
				_, err := s.Enqueue(context.Background(), entry("fill", id, body))
				mu.Lock()
				if err != nil {
					if fullErr == nil {
						fullErr = err
					}
					mu.Unlock()
					return
				}
				accepted = append(accepted, id)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	var full *FullError
	if !errors.As(fullErr, &full) || full.Limit != "min_free_disk" {
		t.Fatalf("filling stopped with %v, want a min_free_disk full error", fullErr)
	}
	free, _ := freeDisk(dir)
	t.Logf("accepted %d items of 16 KiB; refused with %v at %d MiB free", len(accepted), fullErr, free>>20)
	if len(accepted) < 1000 {
		t.Fatalf("only %d items accepted before full", len(accepted))
	}
	if free <= 0 {
		t.Fatal("the file system filled up")
	}
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	// Everything acknowledged is intact, and the spool opens again below
	// its floor so that it can drain.
	s, err = Open(Options{Dir: dir, MemTableSize: 8 << 20, MinFreeDisk: floor, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	for _, id := range accepted {
		if st, err := s.Lookup("fill", id); err != nil || st.State != StatePending {
			t.Fatalf("accepted %s is %v (%v) after reopen", id, st.State, err)
		}
	}
	if items, _ := s.Usage(); items != int64(len(accepted)) {
		t.Fatalf("%d items stored, %d accepted", items, len(accepted))
	}
}
