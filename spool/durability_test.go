//go:build linux

package spool

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/sys/unix"
)

// dirtyKiB sums the dirty pages (kB, as /proc/self/smaps counts them) of
// this process's mappings of the files in dir whose names end in one of
// suffixes. A page written through a mapping stays dirty, which is what a
// power cut loses, until it is synced (msync) or the kernel writes it back
// some 30 seconds later.
func dirtyKiB(t *testing.T, dir string, suffixes ...string) int {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	total, in := 0, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) >= 5 && strings.Contains(fs[0], "-") { // a mapping's first line
			in = len(fs) == 6 && filepath.Dir(fs[5]) == dir &&
				slices.ContainsFunc(suffixes, func(s string) bool { return strings.HasSuffix(fs[5], s) })
			continue
		}
		if in && (fs[0] == "Shared_Dirty:" || fs[0] == "Private_Dirty:") {
			n, err := strconv.Atoi(fs[1])
			if err != nil {
				t.Fatalf("smaps line %q: %v", sc.Text(), err)
			}
			total += n
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return total
}

// diskTempDir is t.TempDir on a file system that writes pages back, so
// that dirty pages can be seen to become clean: not a tmpfs.
func diskTempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type == unix.TMPFS_MAGIC {
		t.Fatalf("%s is a tmpfs, which never writes pages back: this test needs a disk file system", dir)
	}
	return dir
}

// sink keeps the reads that fault pages into a mapping.
var sink byte

// writtenDirtyKiB maps the files in dir whose names end in suffix
// read-only, reads a byte of every page so that each is in the mapping, and
// returns the dirty kB of those mappings. The spool writes segments and the
// flight log with pwrite and write, not through a mapping, but smaps counts
// a page as dirty when the page cache holds it dirty, through whichever
// mapping: a page written and not yet synced.
func writtenDirtyKiB(t *testing.T, dir, suffix string) int {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*"+suffix))
	if err != nil {
		t.Fatal(err)
	}
	var maps [][]byte
	defer func() {
		for _, m := range maps {
			unix.Munmap(m)
		}
	}()
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := f.Stat()
		if err != nil || fi.Size() == 0 {
			f.Close()
			continue
		}
		m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		maps = append(maps, m)
		for i := 0; i < len(m); i += os.Getpagesize() {
			sink += m[i]
		}
	}
	return dirtyKiB(t, dir, suffix)
}

// TestEnqueueAnswersAfterSync: when Enqueue returns, its item is committed
// and its message and redo record are on disk in a segment: nothing a power
// cut could take is needed to bring it back (redo.go). The spool writes its
// segments (*.seg) with pwrite, so every page of theirs must be clean by
// then: synced before the answer, not merely written. Badger's write-ahead
// and value logs (*.mem, *.vlog), written through mappings, are left to the
// checkpoint, which syncs them within checkpointInterval.
func TestEnqueueAnswersAfterSync(t *testing.T) {
	dir := diskTempDir(t)

	// The control: the dirty page of a mapping shows until it is synced.
	m := mapShared(t, filepath.Join(dir, "control.mem"))
	m[0] = 1
	if n := dirtyKiB(t, dir, ".mem"); n == 0 {
		t.Fatal("a page written through a mapping does not show as dirty")
	}
	if err := unix.Msync(m, unix.MS_SYNC); err != nil {
		t.Fatal(err)
	}
	if n := dirtyKiB(t, dir, ".mem"); n != 0 {
		t.Fatalf("%d kB still dirty after msync", n)
	}
	// And a page written with pwrite shows through a read-only mapping
	// until it is synced.
	seg, err := os.Create(filepath.Join(dir, "control.seg"))
	if err != nil {
		t.Fatal(err)
	}
	defer seg.Close()
	if _, err := seg.WriteAt([]byte("written, not synced"), 0); err != nil {
		t.Fatal(err)
	}
	if n := writtenDirtyKiB(t, dir, ".seg"); n == 0 {
		t.Fatal("a page written with pwrite does not show as dirty through a read-only mapping")
	}
	if err := unix.Fdatasync(int(seg.Fd())); err != nil {
		t.Fatal(err)
	}
	if n := writtenDirtyKiB(t, dir, ".seg"); n != 0 {
		t.Fatalf("%d kB still dirty after fdatasync", n)
	}

	s := openTest(t, Options{Dir: filepath.Join(dir, "spool")})
	var lastID uint64
	for i := range 150 {
		body := [...]string{strings.Repeat("x", 100), strings.Repeat("w", 1<<10), strings.Repeat("v", 48<<10)}[i%3]
		id := fmt.Sprint("evt_", i)
		lastID = mustEnqueue(t, s, entry("r", id, body)).ID
		if n := writtenDirtyKiB(t, filepath.Join(s.opts.Dir, "bodies"), ".seg"); n != 0 {
			t.Fatalf("enqueue %d answered with %d kB of its message segment not synced", i, n)
		}
		if st, err := s.Lookup(context.Background(), "r", id); err != nil || st.State != StatePending {
			t.Fatalf("enqueue %d answered before its commit: %v, %v", i, st.State, err)
		}
	}
	eventually(t, 5*time.Second, "the checkpoint syncs Badger's logs", func() bool {
		return dirtyKiB(t, s.opts.Dir, ".mem", ".vlog") == 0
	})
	// And moves c/redo past the last message: a replay would scan nothing.
	var last bodyPtr
	if err := s.db.View(func(txn *badger.Txn) (err error) {
		last, _, err = getPointer(txn, msgKey(lastID))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "c/redo past the last message", func() bool {
		from, _, err := s.redoStart()
		return err == nil && (from.seg > last.seg || from.seg == last.seg && from.off >= int64(last.off)+last.recordLen())
	})
}

// TestTheCheckpointSyncsOutcomesAndTheFlightLog: a batch of delivery
// outcomes is committed without a sync, and the flight log is written
// without one; the checkpoint syncs both within checkpointInterval, with no
// enqueue after them, so that a power cut takes only the outcomes and
// attempts of the last moments (docs/spool.md).
func TestTheCheckpointSyncsOutcomesAndTheFlightLog(t *testing.T) {
	dir := diskTempDir(t)
	s := openTest(t, Options{Dir: dir})
	ctx := context.Background()
	if err := s.Pause(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	const n = 20
	for i := range n {
		mustEnqueue(t, s, entry("r", fmt.Sprint("evt_", i), strings.Repeat("x", 1<<10)))
	}
	eventually(t, 5*time.Second, "the checkpoint after the enqueues", func() bool {
		return dirtyKiB(t, dir, ".mem", ".vlog") == 0 && writtenDirtyKiB(t, dir, ".log") == 0
	})

	rec := newRecorder(nil)
	s.RegisterRoute("r", Route{Deliverer: rec})
	if err := s.Resume(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	for range n {
		rec.next(t, 10*time.Second)
	}
	eventually(t, 5*time.Second, "every outcome committed", func() bool {
		for i := range n {
			if st, err := s.Lookup(ctx, "r", fmt.Sprint("evt_", i)); err != nil || st.State != StateDelivered {
				return false
			}
		}
		return true
	})
	if dirtyKiB(t, dir, ".mem", ".vlog") == 0 || writtenDirtyKiB(t, dir, ".log") == 0 {
		t.Fatal("the outcomes or the flight log were synced before the checkpoint: the test sees nothing")
	}
	eventually(t, 3*checkpointInterval, "the checkpoint syncs the outcomes and the flight log", func() bool {
		return dirtyKiB(t, dir, ".mem", ".vlog") == 0 && writtenDirtyKiB(t, dir, ".log") == 0
	})
}

// TestAPowerCutLosesNoAcknowledgedEnqueue: a power cut can take Badger's
// commits since its last sync, enqueues included; the next open stores them
// again from the segments. The test copies the database as it stands after
// a checkpoint (all of it synced), enqueues more, then puts that copy
// beside the segments as they are now: what a power cut right after the
// last answer would leave. Every event answered must be there once, the
// entries of one EnqueueAll together, and a second open replays nothing.
func TestAPowerCutLosesNoAcknowledgedEnqueue(t *testing.T) {
	defer func(d time.Duration) { checkpointInterval = d }(checkpointInterval)
	checkpointInterval = time.Hour // no checkpoint but the test's
	dir := t.TempDir()
	s := openTest(t, Options{Dir: filepath.Join(dir, "running")})
	ctx := context.Background()
	if err := s.Pause(ctx, "r"); err != nil { // keeps every item queued
		t.Fatal(err)
	}
	bodies := map[string]string{}
	enqueue := func(from, to int) {
		for i := from; i < to; i++ {
			id := fmt.Sprint("evt_", i)
			bodies[id] = fmt.Sprint(id, strings.Repeat("x", [...]int{1 << 10, 16 << 10}[i%2]))
			mustEnqueue(t, s, entry("r", id, bodies[id]))
		}
	}
	enqueue(0, 10)
	o := &syncOp{done: make(chan struct{})}
	if err := s.submit(ctx, o, o.done); err != nil || o.err != nil {
		t.Fatalf("checkpoint: %v, %v", err, o.err)
	}
	cut := filepath.Join(dir, "cut")
	copyFiles(t, s.opts.Dir, cut) // Badger as synced
	enqueue(10, 30)
	bodies["evt_all_a"], bodies["evt_all_b"] = "a", "b"
	if _, err := s.EnqueueAll(ctx, []Entry{entry("r", "evt_all_a", "a"), entry("r", "evt_all_b", "b")}); err != nil {
		t.Fatal(err)
	}
	copyFiles(t, filepath.Join(s.opts.Dir, "bodies"), filepath.Join(cut, "bodies")) // the segments as answered
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	for open := range 2 {
		s := openTest(t, Options{Dir: cut})
		for id := range bodies {
			if st, err := s.Lookup(ctx, "r", id); err != nil || st.State != StatePending {
				t.Fatalf("open %d: %s: %v, %v", open, id, st.State, err)
			}
		}
		if items, _ := s.Usage(); items != int64(len(bodies)) {
			t.Fatalf("open %d: %d items, want %d", open, items, len(bodies))
		}
		if open == 1 {
			rec := newRecorder(nil)
			s.RegisterRoute("r", Route{Deliverer: rec})
			if err := s.Resume(ctx, "r"); err != nil {
				t.Fatal(err)
			}
			for id, a := range rec.byEvent(t, len(bodies), 5*time.Second) {
				if a.Body != bodies[id] {
					t.Errorf("%s: delivered body differs", id)
				}
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// copyFiles copies the regular files of dir (not its subdirectories) to
// to, creating it.
func copyFiles(t *testing.T, dir, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o700); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(to, e.Name()), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// TestDurableCommitSyncsWhatCameBefore: enqueues and delivery outcomes are
// committed without a sync of Badger, and the next commit that syncs it (a
// checkpoint here) syncs them with its own, even
// when a commit, its own or another's, found the memtable full and
// started a new write-ahead log: the old log must not be left with unsynced
// commits under a synced newer one. Small memtables make that happen every few hundred
// events here. The old log is flushed to a synced table soon after, so a
// missing sync shows only until then: twelve new logs make sure one shows
// it (each did in five runs with the sync before the commit removed).
func TestDurableCommitSyncsWhatCameBefore(t *testing.T) {
	s := openTest(t, Options{MemTableSize: 256 << 10})
	g := newGate()
	s.RegisterRoute("r", Route{Deliverer: g})
	newest := func() string { // the active write-ahead log
		m, _ := filepath.Glob(filepath.Join(s.opts.Dir, "*.mem"))
		slices.Sort(m)
		return m[len(m)-1]
	}
	rotations, active := 0, newest()
	body := strings.Repeat("x", 400) // inline in the write-ahead log
	for i := 0; rotations < 12; i += 2 {
		if i == 20000 {
			t.Fatalf("%d write-ahead logs in %d events", rotations, i)
		}
		for j := range 2 {
			mustEnqueue(t, s, entry("r", fmt.Sprint("evt_", i+j), body))
			o := &syncOp{done: make(chan struct{})}
			if err := s.submit(context.Background(), o, o.done); err != nil || o.err != nil {
				t.Fatalf("sync: %v, %v", err, o.err)
			}
			if log := newest(); log != active { // a commit since the last check started a new log
				rotations, active = rotations+1, log
				if n := dirtyKiB(t, s.opts.Dir, ".mem", ".vlog"); n != 0 {
					t.Fatalf("a synced commit after enqueue %d left %d kB of the logs not synced", i+j, n)
				}
			}
		}
		// Their deliveries' outcomes, committed one after the other
		// without a sync, before the next enqueue: when the second starts
		// a new log, the first is left in the old one.
		for left := 2; left > 0; left-- {
			<-g.started
		}
		for left := 1; left >= 0; left-- {
			g.release <- struct{}{}
			for deadline := time.Now().Add(10 * time.Second); routeStats(s, "r").InFlight != int64(left); time.Sleep(100 * time.Microsecond) {
				if time.Now().After(deadline) {
					t.Fatalf("events %d and %d: no outcome committed", i, i+1)
				}
			}
		}
	}
}

// TestWALFilesSyncWhatARotationLeftBehind: once a new write-ahead log
// exists, syncRotated syncs the older ones, pages written through a
// mapping included (as Badger writes them), and leaves the new one alone.
func TestWALFilesSyncWhatARotationLeftBehind(t *testing.T) {
	dir := t.TempDir()
	mapLog := func(fid int) []byte { return mapShared(t, filepath.Join(dir, fmt.Sprintf("%05d.mem", fid))) }
	old := mapLog(1)
	w, err := newWALFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	old[0] = 1 // a commit not synced
	if err := w.syncRotated(); err != nil {
		t.Fatal(err)
	}
	if n := dirtyKiB(t, dir, ".mem"); n == 0 {
		t.Fatal("the active log was synced, or its write does not show")
	}
	cur := mapLog(2) // a commit started a new log
	cur[0] = 1
	if err := w.syncRotated(); err != nil {
		t.Fatal(err)
	}
	if n := dirtyKiB(t, dir, "00001.mem"); n != 0 {
		t.Fatalf("%d kB of the log left behind not synced", n)
	}
	if n := dirtyKiB(t, dir, "00002.mem"); n == 0 {
		t.Fatal("the new active log was synced too: that is DB.Sync's work, for durable commits only")
	}
}

// mapShared creates a 64 KiB file at path and maps it shared and writable,
// as Badger maps its logs, until the test ends.
func mapShared(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(1 << 16); err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, 1<<16, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(m) })
	return m
}
