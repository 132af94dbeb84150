//go:build linux

package spool

import (
	"context"
	"fmt"
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
