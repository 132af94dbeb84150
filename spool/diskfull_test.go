//go:build linux

package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// diskChildEnv tells a test binary that it runs a disk test's child half on
// a tmpfs it mounts itself; its value is the tmpfs size.
const diskChildEnv = "HOOKGATE_SPOOL_TMPFS"

// inTmpfsChild runs test t again in a child process: the test binary built
// without the race detector (so that it has a production build's timing),
// in a mount namespace of its own, where the child mounts a tmpfs of the
// given size on dir. The mount goes away with the child however it ends,
// and a child that crashes (SIGBUS when Badger writes to a full file
// system) fails the test. It reports whether the caller is the child,
// which then runs the test's body on dir.
func inTmpfsChild(t *testing.T, size string) (dir string, child bool) {
	t.Helper()
	if size := os.Getenv(diskChildEnv); size != "" {
		dir := t.TempDir()
		if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
			t.Fatalf("mounting a tmpfs (the child needs root): %v", err)
		}
		// Before TempDir's cleanup, which cannot remove a mount point.
		t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
		return dir, true
	}
	bin := os.Args[0]
	if raceEnabled {
		bin = filepath.Join(t.TempDir(), "spool.test")
		if out, err := exec.Command("go", "test", "-c", "-o", bin, ".").CombinedOutput(); err != nil {
			t.Fatalf("building the test binary without -race: %v\n%s", err, out)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-test.run=^"+t.Name()+"$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), diskChildEnv+"="+size)
	// A private mount namespace: the child's tmpfs is never seen here and
	// disappears when the child exits, even if it dies of a signal.
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	// Go's runtime turns a fault in an mmapped file (SIGBUS) into "fatal
	// error: fault" and exit status 2; another signal kills the child.
	if i := bytes.Index(out, []byte("fatal error:")); i >= 0 {
		t.Fatalf("the child crashed:\n%s", firstLines(out[i:], 30))
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		t.Fatalf("the child died of %v:\n%s", ws.Signal(), lastLines(out, 40))
	}
	if err != nil {
		t.Fatalf("the child failed: %v\n%s", err, lastLines(out, 40))
	}
	t.Logf("child:\n%s", lastLines(out, 10))
	return "", false
}

func firstLines(out []byte, n int) string {
	lines := strings.SplitN(string(out), "\n", n+1)
	return strings.Join(lines[:min(len(lines), n)], "\n")
}

func lastLines(out []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// fillUntilRefused enqueues events g<sender>-<n> with body on route from 8
// senders until each is refused, calling each (if set, under a lock) after
// every enqueue. It returns the event ids accepted and the refusals, in the
// order they came.
func fillUntilRefused(s *Spool, route, body string, each func()) (accepted []string, refusals []error) {
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for g := range 8 {
		wg.Go(func() {
			for n := 0; ; n++ {
				id := fmt.Sprintf("g%d-%d", g, n)
				_, err := s.Enqueue(context.Background(), entry(route, id, body))
				mu.Lock()
				if each != nil {
					each()
				}
				if err != nil {
					refusals = append(refusals, err)
					mu.Unlock()
					return
				}
				accepted = append(accepted, id)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return accepted, refusals
}

// TestDiskFullRefusesBeforeBadgerDies fills a tmpfs. Badger dies of SIGBUS
// when a file system fills under its mmapped files, so the spool must refuse
// with a full error while its floor and its reserve are still free, stay up
// while its flushes and compactions use the reserve, leave the floor free,
// and keep everything it accepted.
func TestDiskFullRefusesBeforeBadgerDies(t *testing.T) {
	dir, child := inTmpfsChild(t, "384m")
	if !child {
		return
	}
	const floor = 48 << 20
	opts := Options{Dir: dir, MemTableSize: 8 << 20, MinFreeDisk: floor, Logger: zap.NewNop()}
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	accepted, refusals := fillUntilRefused(s, "fill", strings.Repeat("b", 16<<10), nil)
	fullErr := refusals[0]
	var full *FullError
	if !errors.As(fullErr, &full) || full.Limit != "min_free_disk" {
		t.Fatalf("filling stopped with %v, want a min_free_disk full error", fullErr)
	}
	free, _ := freeDisk(dir)
	t.Logf("accepted %d items of 16 KiB; refused with %v at %d MiB free (reserve %d MiB)",
		len(accepted), fullErr, free>>20, s.reserve>>20)
	if len(accepted) < 1000 {
		t.Fatalf("only %d items accepted before full", len(accepted))
	}
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	// Close flushed the last memtable; what Badger wrote came out of the
	// reserve, not the floor.
	if free, _ := freeDisk(dir); free < floor {
		t.Fatalf("%d MiB free after close, below the floor of %d MiB", free>>20, floor>>20)
	}

	// Everything acknowledged is intact, and the spool opens again below
	// its floor so that it can drain.
	s, err = Open(opts)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	for _, id := range accepted {
		if st, err := s.Lookup(context.Background(), "fill", id); err != nil || st.State != StatePending {
			t.Fatalf("accepted %s is %v (%v) after reopen", id, st.State, err)
		}
	}
	if items, _ := s.Usage(); items != int64(len(accepted)) {
		t.Fatalf("%d items stored, %d accepted", items, len(accepted))
	}
}

// TestReserveStaysFree sets the free space of a tmpfs with another file, as
// another process would, and checks where the spool refuses: it needs its
// floor, its reserve for Badger's background work and twice the entry free
// to accept, and the reserve to open.
func TestReserveStaysFree(t *testing.T) {
	dir, child := inTmpfsChild(t, "320m")
	if !child {
		return
	}
	const floor = 16 << 20
	opts := Options{Dir: filepath.Join(dir, "spool"), MemTableSize: 8 << 20, MinFreeDisk: floor, Logger: zap.NewNop()}
	s, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	other, err := os.Create(filepath.Join(dir, "other"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	// setFree resizes the other file so that want bytes are free.
	setFree := func(want int64) {
		t.Helper()
		free, _ := freeDisk(dir)
		st, err := other.Stat()
		if err != nil {
			t.Fatal(err)
		}
		size := st.Size() + free - want
		if size < st.Size() {
			err = other.Truncate(size)
		} else {
			err = unix.Fallocate(int(other.Fd()), 0, 0, size)
		}
		if err != nil {
			t.Fatalf("resizing the other file to %d: %v", size, err)
		}
	}
	e := entry("r", "evt", strings.Repeat("x", 4<<10))
	need := floor + s.reserve + 2*int64(len((&message{Route: e.Route, EventID: e.EventID, Header: e.Header, Body: e.Body}).encode()))
	for _, tt := range []struct {
		name   string
		free   int64
		accept bool
	}{
		{"room for floor, reserve and entry", need + 1<<20, true},
		{"a MiB short", need - 1<<20, false},
		{"the floor without the reserve", floor + s.reserve/2, false},
	} {
		setFree(tt.free)
		e.EventID = tt.name
		_, err := s.Enqueue(context.Background(), e)
		var full *FullError
		if tt.accept && err != nil || !tt.accept && !(errors.As(err, &full) && full.Limit == "min_free_disk") {
			t.Errorf("%s (%d MiB free, reserve %d MiB): %v", tt.name, tt.free>>20, s.reserve>>20, err)
		}
	}

	setFree(s.reserve - 1<<20)
	if s2, err := Open(Options{Dir: filepath.Join(dir, "other-spool"), MemTableSize: 8 << 20, Logger: zap.NewNop()}); err == nil {
		s2.Close()
		t.Fatalf("opened with %d MiB free, less than the reserve of %d MiB", (s.reserve-1<<20)>>20, s.reserve>>20)
	}
}

// TestDiskFilledByAnotherProcess fills the tmpfs with another file, as
// another process would. Badger faults on its next write, so the spool must
// write nothing until there is room again: no delivery is started (a lease
// is a write), new events get a full error, and Close leaves the database
// to its write-ahead log. It must not crash.
func TestDiskFilledByAnotherProcess(t *testing.T) {
	dir, child := inTmpfsChild(t, "320m")
	if !child {
		return
	}
	s, err := Open(Options{Dir: filepath.Join(dir, "spool"), MemTableSize: 8 << 20, MinFreeDisk: 16 << 20, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 100 {
		mustEnqueue(t, s, entry("r", fmt.Sprint("evt_", i), strings.Repeat("x", 1024)))
	}
	otherPath := filepath.Join(dir, "other")
	fill := func() {
		t.Helper()
		f, err := os.Create(otherPath)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		buf := make([]byte, 1<<20)
		for err == nil {
			_, err = f.Write(buf)
		}
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("filling the disk: %v", err)
		}
	}
	fill()

	_, err = s.Enqueue(ctx, entry("r", "evt_late", "x"))
	var full *FullError
	if !errors.As(err, &full) || full.Limit != "min_free_disk" {
		t.Fatalf("enqueue on a full disk: %v, want a min_free_disk full error", err)
	}
	rec := newRecorder(nil)
	s.RegisterRoute("r", Route{Deliverer: rec})
	passes := s.passes.Load()
	eventually(t, 10*time.Second, "two dispatch passes", func() bool { return s.passes.Load() >= passes+2 })
	if n := len(rec.snapshot()); n != 0 {
		t.Fatalf("%d deliveries started on a full disk", n)
	}

	// Room again: the spool picks up where it stopped.
	if err := os.Remove(otherPath); err != nil {
		t.Fatal(err)
	}
	for range 100 {
		rec.next(t, 10*time.Second)
	}
	mustEnqueue(t, s, entry("r", "evt_later", "x"))
	rec.next(t, 10*time.Second)
	eventually(t, 10*time.Second, "everything delivered", func() bool { items, _ := s.Usage(); return items == 0 })

	mustEnqueue(t, s, entry("kept", "evt_kept", "x")) // no route: it waits
	fill()
	if err := s.Close(); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("Close on a full disk: %v, want a disk full error", err)
	}

	// The database Close left open is closed by the next Open, once there
	// is room for its last memtable, and nothing is lost.
	opts := Options{Dir: filepath.Join(dir, "spool"), MemTableSize: 8 << 20, MinFreeDisk: 16 << 20, Logger: zap.NewNop()}
	if _, err := Open(opts); err == nil || !strings.Contains(err.Error(), "free space") {
		t.Fatalf("reopen on a full disk: %v, want an error saying to free space", err)
	}
	if err := os.Remove(otherPath); err != nil {
		t.Fatal(err)
	}
	s, err = Open(opts)
	if err != nil {
		t.Fatalf("reopen once there is room: %v", err)
	}
	defer s.Close()
	if st, err := s.Lookup(context.Background(), "kept", "evt_kept"); err != nil || st.State != StatePending {
		t.Fatalf("after the reopen: %v, %v", st.State, err)
	}
}

// TestRecordBudgetOnTmpfs runs a loop of events, delivered at once, into a
// small record budget on a tmpfs: the records never go over the budget by
// more than one batch's, attempt records are trimmed, no dedupe record is
// lost (every event accepted is still answered as a duplicate), new events
// are refused with max_record_bytes once the dedupe records fill the
// budget, and the process does not crash.
func TestRecordBudgetOnTmpfs(t *testing.T) {
	dir, child := inTmpfsChild(t, "320m")
	if !child {
		return
	}
	const budget = 1 << 20
	s, err := Open(Options{Dir: dir, MemTableSize: 8 << 20, MinFreeDisk: 16 << 20, Limits: Limits{MaxRecordBytes: budget}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder(nil)
	s.RegisterRoute("r", Route{Deliverer: rec, Concurrency: 16})
	// A batch's records: a dedupe record and an attempt record (with a
	// status and no error) per op.
	slack := int64(maxBatchOps) * (dedupeBytes + recordSize(2+8+4, 16))
	var peak int64
	accepted, refusals := fillUntilRefused(s, "r", "x", func() {
		r := s.Records()
		peak = max(peak, r.Dedupe.Bytes+r.Attempts.Bytes)
	})
	for _, err := range refusals {
		if !isRecordFull(err) {
			t.Fatalf("a sender stopped with %v, want a max_record_bytes full error", err)
		}
	}
	eventually(t, time.Minute, "everything delivered", func() bool { items, _ := s.Usage(); return items == 0 })
	r := s.Records()
	t.Logf("accepted %d events; records %+v; peak %d bytes", len(accepted), r, peak)
	if peak > budget+slack || r.Dedupe.Bytes+r.Attempts.Bytes > budget+slack {
		t.Fatalf("records reached %d bytes (now %+v), over the budget of %d by more than a batch (%d)", peak, r, budget, slack)
	}
	if min := budget/dedupeBytes - maxBatchOps; int64(len(accepted)) < min || r.Dedupe.Count != int64(len(accepted)) {
		t.Fatalf("%d events accepted, %d dedupe records; want at least %d", len(accepted), r.Dedupe.Count, min)
	}
	// The first events' attempt records had room when they were written:
	// gone, they were trimmed.
	if st, err := s.Lookup(context.Background(), "r", "g0-0"); err != nil || st.State != StateDelivered || len(st.Attempts) != 0 {
		t.Fatalf("the first event: %+v, %v; want delivered, its attempt record trimmed", st, err)
	}
	for chunk := range slices.Chunk(accepted, 500) {
		var es []Entry
		for _, id := range chunk {
			es = append(es, entry("r", id, "x"))
		}
		res, err := s.EnqueueAll(context.Background(), es)
		if err != nil {
			t.Fatalf("the accepted events again: %v", err)
		}
		for i, r := range res {
			if r.Status != Duplicate {
				t.Fatalf("%s again: %v, want a duplicate", chunk[i], r.Status)
			}
		}
	}
	if _, err := s.Enqueue(context.Background(), entry("r", "evt_late", "x")); !isRecordFull(err) {
		t.Fatalf("a new event at the end: %v, want a max_record_bytes full error", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
}

// TestSegmentWriteOnFullDiskIsAnError: a message that does not fit on the
// file system fails its write with a full error (min_free_disk) instead of
// faulting the process, and the segment takes the next message where the
// failed one began.
func TestSegmentWriteOnFullDiskIsAnError(t *testing.T) {
	dir, child := inTmpfsChild(t, "1m")
	if !child {
		return
	}
	bs := openStore(t, dir, segmentSize)
	first := appendAll(t, bs, []byte("fits"))
	if _, err := bs.append(make([]byte, 2<<20)); err != nil {
		t.Fatal(err)
	}
	err := bs.sync()
	var full *FullError
	if !errors.As(err, &full) || full.Limit != "min_free_disk" || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("writing 2 MiB to a 1 MiB file system: %v, want a min_free_disk full error", err)
	}
	msgs := [][]byte{[]byte("fits"), []byte("fits too")}
	ps := append(first, appendAll(t, bs, msgs[1])...)
	if ps[1].off != uint32(first[0].recordLen()) {
		t.Fatalf("the next message went to %d, not where the failed one began", ps[1].off)
	}
	readAll(t, bs, ps, msgs)
}
