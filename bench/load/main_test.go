package main

import (
	"testing"
	"time"
)

func TestLoadTargets(t *testing.T) {
	proxy := &result{cpuPerReq: 120 * time.Microsecond, p99: 20 * time.Millisecond}
	tests := []struct {
		name     string
		size     int
		gw       *result
		cpuRatio float64
		want     []bool // CPU (where the size has a target), p99, peak RssAnon
	}{
		{"1 KiB, all met", 1 << 10, &result{p99: 20 * time.Millisecond, peakAnon: 192 << 20}, 0.85, []bool{true, true, true}},
		{"1 KiB, all missed", 1 << 10, &result{p99: 21 * time.Millisecond, peakAnon: 193 << 20}, 0.84, []bool{false, false, false}},
		{"64 KiB, CPU at its own bound", 64 << 10, &result{p99: time.Millisecond}, 0.5, []bool{true, true, true}},
		{"another size has no CPU target", 4 << 10, &result{p99: time.Millisecond}, 0.1, []bool{true, true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := loadTargets(tt.size, proxy, tt.gw, tt.cpuRatio)
			if len(got) != len(tt.want) {
				t.Fatalf("%d targets, want %d: %+v", len(got), len(tt.want), got)
			}
			for i, g := range got {
				if g.ok != tt.want[i] {
					t.Errorf("target %q: ok %v, want %v", g.what, g.ok, tt.want[i])
				}
			}
		})
	}
}
