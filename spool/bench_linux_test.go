//go:build linux

package spool

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// BenchmarkEnqueueDeliver runs the spool's whole path for one event, as the
// gateway does: 64 producers enqueue (fsynced), each item is delivered to a
// deliverer that does nothing and its outcome committed. It reports the
// rate and the process's CPU time (user and system) per event, at 1 KiB and
// 64 KiB bodies.
//
//	go test -run '^$' -bench BenchmarkEnqueueDeliver -benchtime 20000x ./spool
func BenchmarkEnqueueDeliver(b *testing.B) {
	for _, size := range []int{1 << 10, 64 << 10} {
		body := []byte(strings.Repeat("x", size))
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			s := openTest(b, Options{Logger: zap.NewNop(), MemTableSize: 32 << 20, Limits: Limits{MaxItems: 1 << 40, MaxBytes: 1 << 40}})
			var delivered atomic.Int64
			s.RegisterRoute("bench", Route{Concurrency: 64, Deliverer: DelivererFunc(func(context.Context, *Delivery) Outcome {
				delivered.Add(1)
				return Outcome{StatusCode: 204}
			})})
			cpu := processCPU(b)
			start := time.Now()
			runProducers(b, 64, func(id string) error {
				_, err := s.Enqueue(context.Background(), Entry{Route: "bench", EventID: id, Body: body})
				return err
			})
			for delivered.Load() < int64(b.N) {
				time.Sleep(time.Millisecond)
			}
			for items, _ := s.Usage(); items != 0; items, _ = s.Usage() {
				time.Sleep(time.Millisecond)
			}
			elapsed := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "delivered/s")
			b.ReportMetric(float64((processCPU(b)-cpu).Microseconds())/float64(b.N), "cpu-µs/event")
		})
	}
}

// processCPU is the user and system time this process has used.
func processCPU(b testing.TB) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSyncCost measures what it costs to make one batch durable, the
// committer's largest fixed cost per batch: a write of batchBytes and a
// sync, four ways. "msync" writes into a shared mapping of a sparse file and
// msyncs it, as Badger's write-ahead and value logs are synced (DB.Sync does
// it for both); "mapped-fdatasync" writes the same way and fdatasyncs the
// file instead; "append" writes at the end of a growing file and fdatasyncs
// it, as the message segments are; "overwrite" writes into a file whose
// blocks were written (zeros) and synced beforehand, so that the fdatasync
// has no block allocation to journal. It reports the process's CPU per
// batch.
//
//	go test -run '^$' -bench BenchmarkSyncCost -benchtime 2000x ./spool
func BenchmarkSyncCost(b *testing.B) {
	const batchBytes = 25 << 10 // about one durable batch of 1 KiB events in bench/run.sh
	const fileSize = 64 << 20
	data := []byte(strings.Repeat("x", batchBytes))
	for _, kind := range []string{"msync", "mapped-fdatasync", "append", "overwrite"} {
		b.Run(kind, func(b *testing.B) {
			if int64(b.N)*batchBytes > fileSize {
				b.Fatalf("at most %d batches per file", fileSize/batchBytes)
			}
			f, err := os.Create(filepath.Join(b.TempDir(), "log"))
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			var mapped []byte
			switch kind {
			case "msync", "mapped-fdatasync":
				if err := f.Truncate(fileSize); err != nil {
					b.Fatal(err)
				}
				if mapped, err = unix.Mmap(int(f.Fd()), 0, fileSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
					b.Fatal(err)
				}
				defer unix.Munmap(mapped)
			case "overwrite":
				zeros := make([]byte, 1<<20)
				for off := int64(0); off < fileSize; off += int64(len(zeros)) {
					if _, err := f.WriteAt(zeros, off); err != nil {
						b.Fatal(err)
					}
				}
				if err := f.Sync(); err != nil {
					b.Fatal(err)
				}
			}
			cpu := processCPU(b)
			b.ResetTimer()
			for i := range b.N {
				off := int64(i) * batchBytes
				switch kind {
				case "msync":
					copy(mapped[off:], data)
					err = unix.Msync(mapped, unix.MS_SYNC)
				case "mapped-fdatasync":
					copy(mapped[off:], data)
					err = unix.Fdatasync(int(f.Fd()))
				default:
					if _, err = f.WriteAt(data, off); err == nil {
						err = unix.Fdatasync(int(f.Fd()))
					}
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64((processCPU(b)-cpu).Microseconds())/float64(b.N), "cpu-µs/batch")
		})
	}
}
