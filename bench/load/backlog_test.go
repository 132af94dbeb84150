package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
)

func TestParseBacklog(t *testing.T) {
	for _, tc := range []struct {
		list    string
		body    int
		want    []int
		wantErr bool
	}{
		{list: "20000", body: 1024, want: []int{20000}},
		{list: "100000, 1000000", body: 1024, want: []int{100000, 1000000}},
		{list: "0", body: 1024, wantErr: true},
		{list: "1000001", body: 1024, wantErr: true},
		{list: "x", body: 1024, wantErr: true},
		{list: "1,2,3,4,5", body: 1024, wantErr: true},
		{list: "100000", body: 65536, wantErr: true}, // 6.25 GiB > -max-body-mib
		{list: "10", body: 0, wantErr: true},
		{list: "10", body: 2 << 20, wantErr: true},
	} {
		cfg := config{body: tc.body, maxBodyMiB: 4096}
		err := parseBacklog(&cfg, tc.list)
		if (err != nil) != tc.wantErr || (err == nil && !slices.Equal(cfg.backlog, tc.want)) {
			t.Errorf("parseBacklog(%q, body %d) = %v, %v; want %v, error %v", tc.list, tc.body, cfg.backlog, err, tc.want, tc.wantErr)
		}
	}
}

func TestReportTargets(t *testing.T) {
	const mib = 1 << 20
	res := func(n int, anon, anonAfter int64, fill, drain float64) *backlogResult {
		return &backlogResult{n: n, queued: n, fillRate: fill, drainRate: drain,
			mem:      map[string]int64{"RssAnon": anon * mib},
			memAfter: map[string]int64{"RssAnon": anonAfter * mib}}
	}
	for _, tc := range []struct {
		name    string
		results []*backlogResult
		missed  int
	}{
		{"all met", []*backlogResult{res(100_000, 150, 100, 9000, 16000), res(1_000_000, 190, 120, 9000, 16000)}, 0},
		{"1M over 192 MiB and grown 60 MiB", []*backlogResult{res(100_000, 140, 100, 9000, 16000), res(1_000_000, 200, 120, 9000, 16000)}, 2},
		{"slow drain and fill at one size", []*backlogResult{res(20_000, 90, 100, 7000, 14000)}, 2},
		{"anon after the drain", []*backlogResult{res(20_000, 90, 193, 9000, 16000)}, 1},
		{"locked pages", []*backlogResult{{n: 10, queued: 10, fillRate: 9000, drainRate: 16000,
			mem: map[string]int64{"VmLck": 4096}, memAfter: map[string]int64{}}}, 1},
	} {
		if got := reportTargets(tc.results); got != tc.missed {
			t.Errorf("%s: %d targets missed, want %d", tc.name, got, tc.missed)
		}
	}
}

func TestCount(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1000000: "1,000,000", -12345: "-12,345"} {
		if got := count(n); got != want {
			t.Errorf("count(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestDiskUsage(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sub", "a"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	// A sparse file takes no blocks for its hole.
	f, err := os.Create(filepath.Join(dir, "sparse"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(64 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	got, err := diskUsage(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got < 1<<20 || got > 2<<20 {
		t.Fatalf("diskUsage = %d, want about 1 MiB", got)
	}
}

func TestProcStatus(t *testing.T) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	st := (&child{cmd: cmd}).procStatus(statusFields...)
	for _, k := range statusFields {
		if _, ok := st[k]; !ok {
			t.Errorf("no %s in %v", k, st)
		}
	}
	if st["VmRSS"] <= 0 || st["VmRSS"] != st["RssAnon"]+st["RssFile"]+st["RssShmem"] {
		t.Errorf("VmRSS %d is not RssAnon + RssFile + RssShmem: %v", st["VmRSS"], st)
	}
}
