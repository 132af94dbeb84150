package spool

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/dgraph-io/badger/v4"
	"go.uber.org/zap"
)

// The crash tests run this test binary again as a child process (selected by
// crashChildEnv) and kill it with SIGKILL.
const crashChildEnv = "HOOKGATE_SPOOL_CRASH_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(crashChildEnv); mode != "" {
		os.Exit(crashChild(mode, os.Getenv("HOOKGATE_SPOOL_DIR"), os.Getenv("HOOKGATE_SPOOL_TAG")))
	}
	os.Exit(m.Run())
}

// crashChild is the child's main. It prints progress lines on stdout, one
// write per line, so that the parent sees exactly what was acknowledged.
func crashChild(mode, dir, tag string) int {
	s, err := Open(Options{Dir: dir, MemTableSize: 16 << 20, MinFreeDisk: 1 << 20, Logger: zap.NewNop(),
		segmentSize: crashSegmentSize})
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		return 2
	}
	say := func(format string, a ...any) { os.Stdout.WriteString(fmt.Sprintf(format, a...) + "\n") }
	switch mode {
	case "enqueue", "deliver":
		if mode == "deliver" {
			// Most are delivered, so segments empty and are reclaimed;
			// some wait for a retry or become dead letters.
			pol := Policy{MaxAttempts: 3, BackoffMin: 50 * time.Millisecond, BackoffMax: 200 * time.Millisecond}
			s.RegisterRoute("crash", Route{Policy: pol, Concurrency: 16, Deliverer: DelivererFunc(func(_ context.Context, d *Delivery) Outcome {
				switch xxhash.Sum64String(d.EventID) % 8 {
				case 0:
					return Outcome{StatusCode: 503}
				case 1:
					return Outcome{StatusCode: 400}
				}
				return Outcome{StatusCode: 204}
			})})
		}
		senders := 16
		if mode == "deliver" {
			senders = 4 // deliveries keep up
		}
		var wg sync.WaitGroup
		for g := range senders {
			wg.Go(func() {
				for n := 0; ; n++ {
					id := fmt.Sprintf("%s-%d-%d", tag, g, n)
					r, err := s.Enqueue(context.Background(), entry("crash", id, crashBody(id)))
					if err != nil || r.Status != Accepted {
						say("error %s %v %v", id, r.Status, err)
						return
					}
					say("acked %s", id)
				}
			})
		}
		wg.Wait()
	case "poison":
		s.RegisterRoute("poison", Route{Policy: fastPolicy(2), Deliverer: DelivererFunc(func(context.Context, *Delivery) Outcome {
			say("delivering")
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		})})
		if _, err := s.Enqueue(context.Background(), entry("poison", "evt_poison", "crashes the receiver")); err != nil {
			say("error %v", err)
		}
		select {}
	case "hang":
		s.RegisterRoute("hang", Route{Timeout: time.Hour, Deliverer: DelivererFunc(func(ctx context.Context, d *Delivery) Outcome {
			say("delivering %s", d.EventID)
			select {}
		})})
		if _, err := s.Enqueue(context.Background(), entry("hang", "evt_hang", "x")); err != nil {
			say("error %v", err)
		}
		select {}
	}
	return 3
}

// child runs the test binary in a crash mode and returns its command and a
// channel of its output lines (closed at EOF).
func child(t *testing.T, mode, dir, tag string) (*exec.Cmd, <-chan string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+mode, "HOOKGATE_SPOOL_DIR="+dir, "HOOKGATE_SPOOL_TAG="+tag)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1<<16)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return cmd, lines
}

func waitLine(t *testing.T, lines <-chan string, prefix string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("child exited before printing %q", prefix)
			}
			if strings.HasPrefix(l, "error") {
				t.Fatalf("child: %s", l)
			}
			if strings.HasPrefix(l, prefix) {
				return
			}
		case <-timeout:
			t.Fatalf("child did not print %q", prefix)
		}
	}
}

// crashSegmentSize makes the crash tests start a message segment every few
// hundred events.
const crashSegmentSize = 256 << 10

// crashBody is event id's body in the crash tests: its own, so that a
// message read through a wrong pointer shows. One in four is 16 KiB, the
// others 1 KiB.
func crashBody(id string) string {
	n := 1024
	if xxhash.Sum64String(id)%4 == 0 {
		n = 16 << 10
	}
	return id + strings.Repeat("x", n-len(id))
}

// killChild runs the child in mode, kills it with SIGKILL at a random
// moment after its first acknowledged enqueue and returns the event ids it
// acknowledged.
func killChild(t *testing.T, mode, dir, tag string) []string {
	t.Helper()
	cmd, lines := child(t, mode, dir, tag)
	waitLine(t, lines, "acked")
	time.Sleep(time.Duration(100+rand.IntN(900)) * time.Millisecond)
	cmd.Process.Signal(syscall.SIGKILL)
	var acked []string
	for l := range lines {
		if id, ok := strings.CutPrefix(l, "acked "); ok {
			acked = append(acked, id)
		} else {
			t.Fatalf("%s: child said %q", tag, l)
		}
	}
	cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("%s: child ended with %v, not by SIGKILL", tag, cmd.ProcessState)
	}
	return acked
}

// reopenCrashed opens the spool a killed child left in dir.
func reopenCrashed(t *testing.T, dir string, cycle int) *Spool {
	t.Helper()
	s, err := Open(Options{Dir: dir, MinFreeDisk: 1 << 20, Logger: zap.NewNop(), segmentSize: crashSegmentSize})
	if err != nil {
		t.Fatalf("cycle %d: reopen: %v", cycle, err)
	}
	return s
}

// storedItem is an item's key and state.
type storedItem struct {
	key []byte
	st  state
}

// itemStates reads the keys and states of every pending item and dead
// letter, by id.
func itemStates(t *testing.T, s *Spool) map[uint64]storedItem {
	t.Helper()
	out := map[uint64]storedItem{}
	err := s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.DefaultIteratorOptions)
		defer it.Close()
		for _, p := range []byte{prefixQueue, prefixDead} {
			prefix := []byte{p, '/'}
			for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
				id, _ := idOfKey(it.Item().Key())
				err := it.Item().Value(func(v []byte) error {
					st, err := decodeState(v)
					out[id] = storedItem{it.Item().KeyCopy(nil), st}
					return err
				})
				if err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkBody fails unless item id, whose state is in states, holds event
// eventID's crash body.
func checkBody(t *testing.T, s *Spool, states map[uint64]storedItem, id uint64, eventID string) {
	t.Helper()
	it := states[id]
	m, err := s.leasedMessage(id, it.key, &it.st)
	if err != nil || m.EventID != eventID || string(m.Body) != crashBody(eventID) {
		t.Fatalf("acknowledged %s: message %v, read with %v", eventID, m != nil && string(m.Body) == crashBody(eventID), err)
	}
}

// crashCycles kills a child in mode at a random moment, cycles times on one
// directory, and after each reopens the spool and hands check the events
// acknowledged in this cycle and in all so far.
func crashCycles(t *testing.T, mode string, cycles int, check func(cycle int, s *Spool, acked, all []string)) {
	dir := t.TempDir()
	var all []string
	for cycle := range cycles {
		acked := killChild(t, mode, dir, fmt.Sprintf("%s%d", mode, cycle))
		all = append(all, acked...)
		s := reopenCrashed(t, dir, cycle)
		check(cycle, s, acked, all)
		s.Close()
	}
}

// TestCrashKeepsEveryAcknowledgedItem kills an enqueueing process at random
// moments; every id it was told is durable must be there after reopening,
// its message intact, and stay so through the later cycles.
func TestCrashKeepsEveryAcknowledgedItem(t *testing.T) {
	crashCycles(t, "enqueue", 10, func(cycle int, s *Spool, acked, all []string) {
		states := itemStates(t, s)
		missing := 0
		for _, id := range all {
			st, err := s.Lookup(context.Background(), "crash", id)
			if err != nil || st.State != StatePending {
				missing++
				if missing <= 5 {
					t.Errorf("cycle %d: acknowledged %s is %v (%v)", cycle, id, st.State, err)
				}
				continue
			}
			checkBody(t, s, states, st.ID, id)
		}
		items, _ := s.Usage()
		if missing > 0 || items < int64(len(all)) {
			t.Fatalf("cycle %d: %d of %d acknowledged items missing; %d stored", cycle, missing, len(all), items)
		}
		t.Logf("cycle %d: %d acknowledged, all present; %d stored", cycle, len(acked), items)
	})
}

// TestCrashWhileDeliveringKeepsMessages kills a process that enqueues and
// delivers at once, so that segments fill, empty and are reclaimed, and
// messages wait for retries or become dead letters, at random moments:
// after reopening, every event acknowledged in any cycle so far is
// delivered, or still there with its message intact.
func TestCrashWhileDeliveringKeepsMessages(t *testing.T) {
	crashCycles(t, "deliver", 5, func(cycle int, s *Spool, acked, all []string) {
		states := itemStates(t, s)
		kept := 0
		for _, id := range all {
			st, err := s.Lookup(context.Background(), "crash", id)
			switch {
			case err != nil:
				t.Fatalf("cycle %d: acknowledged %s: %v", cycle, id, err)
			case st.State == StatePending || st.State == StateDead:
				checkBody(t, s, states, st.ID, id)
				kept++
			case st.State != StateDelivered:
				t.Fatalf("cycle %d: acknowledged %s is %v", cycle, id, st.State)
			case !slices.ContainsFunc(st.Attempts, func(a Attempt) bool { return a.StatusCode == 204 }):
				// Lookup says delivered of an item it does not find.
				t.Fatalf("cycle %d: acknowledged %s is delivered without a delivery: %+v", cycle, id, st.Attempts)
			}
		}
		segs, _ := filepath.Glob(filepath.Join(s.opts.Dir, "bodies", "*.seg"))
		t.Logf("cycle %d: %d acknowledged, %d in all, %d of those kept, all intact; %d segments", cycle, len(acked), len(all), kept, len(segs))
	})
}

// TestCrashingPayloadRunsOutOfAttempts: a delivery that kills the process
// still counts, so the item ends as a dead letter instead of a crash loop.
func TestCrashingPayloadRunsOutOfAttempts(t *testing.T) {
	dir := t.TempDir()
	for run := range 2 {
		cmd, lines := child(t, "poison", dir, "")
		waitLine(t, lines, "delivering")
		cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("run %d: child ended with %v", run, cmd.ProcessState)
		}
	}
	s := openTest(t, Options{Dir: dir})
	rec := newRecorder(nil)
	s.RegisterRoute("poison", Route{Deliverer: rec, Policy: fastPolicy(2)})
	var dead []DeadLetter
	eventually(t, 5*time.Second, "the poison item to become a dead letter", func() bool {
		dead, _, _ = s.ListDead(context.Background(), DeadFilter{}, 0, 10)
		return len(dead) == 1
	})
	if dead[0].Reason != ReasonMaxAttempts || dead[0].Attempts != 2 {
		t.Fatalf("dead letter %+v, want max_attempts after 2 attempts", dead[0])
	}
	if n := len(rec.snapshot()); n != 0 {
		t.Fatalf("a third attempt was made (%d)", n)
	}
}

// TestRestartRedeliversLeasedItemsAtOnce: the lease of a killed process is an
// hour long, yet its item is delivered right after the restart.
func TestRestartRedeliversLeasedItemsAtOnce(t *testing.T) {
	dir := t.TempDir()
	cmd, lines := child(t, "hang", dir, "")
	waitLine(t, lines, "delivering evt_hang")
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()

	s := openTest(t, Options{Dir: dir})
	rec := newRecorder(nil)
	s.RegisterRoute("hang", Route{Deliverer: rec, Timeout: time.Hour})
	a := rec.next(t, 3*time.Second)
	if a.EventID != "evt_hang" || a.Attempt != 2 {
		t.Fatalf("redelivered %s attempt %d, want evt_hang attempt 2", a.EventID, a.Attempt)
	}
}
