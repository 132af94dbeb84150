package spool

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// openStore opens a body store in dir and closes it at the end.
func openStore(t *testing.T, dir string, target int64) *bodyStore {
	t.Helper()
	bs, err := openBodyStore(dir, target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bs.close)
	return bs
}

// appendAll appends msgs and syncs them, returning their pointers.
func appendAll(t *testing.T, bs *bodyStore, msgs ...[]byte) []bodyPtr {
	t.Helper()
	var ps []bodyPtr
	for _, m := range msgs {
		p, err := bs.append(m)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
	}
	if err := bs.sync(); err != nil {
		t.Fatal(err)
	}
	return ps
}

// readAll checks that each pointer reads back its message.
func readAll(t *testing.T, bs *bodyStore, ps []bodyPtr, msgs [][]byte) {
	t.Helper()
	for i, p := range ps {
		got, err := bs.read(p)
		if err != nil || !bytes.Equal(got, msgs[i]) {
			t.Fatalf("message %d at %+v: %d bytes, %v; want %d bytes back", i, p, len(got), err, len(msgs[i]))
		}
	}
}

func segmentFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	slices.Sort(m)
	return m
}

// TestBodyStoreRoundTrip: messages of every size read back byte for byte,
// from the store that wrote them and after it is opened again.
func TestBodyStoreRoundTrip(t *testing.T) {
	dir := t.TempDir()
	var msgs [][]byte
	for i, size := range []int{0, 1, 100, 4 << 10, 64 << 10, 1 << 20} {
		msgs = append(msgs, bytes.Repeat([]byte{byte('a' + i)}, size))
	}
	bs := openStore(t, dir, segmentSize)
	ps := appendAll(t, bs, msgs...)
	readAll(t, bs, ps, msgs)
	bs.close()
	readAll(t, openStore(t, dir, segmentSize), ps, msgs)
	if got := segmentFiles(t, dir); !slices.Equal(got, []string{"00000001.seg"}) {
		t.Fatalf("segment files %v, want one", got)
	}
}

// TestBodyStoreJoinsParts: a message appended in parts (a head and a body,
// some empty) reads back as their concatenation, its checksum over all of
// them, after the records of other messages.
func TestBodyStoreJoinsParts(t *testing.T) {
	body := bytes.Repeat([]byte("b"), 64<<10)
	tests := []struct {
		name  string
		parts [][]byte
	}{
		{"head and body", [][]byte{[]byte("head"), body}},
		{"empty body", [][]byte{[]byte("head"), nil}},
		{"empty head", [][]byte{nil, body}},
		{"three parts", [][]byte{[]byte("a"), []byte("bc"), []byte("def")}},
		{"none", nil},
	}
	bs := openStore(t, t.TempDir(), segmentSize)
	var ps []bodyPtr
	var want [][]byte
	for _, tt := range tests {
		p, err := bs.append(tt.parts...)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		ps, want = append(ps, p), append(want, slices.Concat(tt.parts...))
	}
	if err := bs.sync(); err != nil {
		t.Fatal(err)
	}
	readAll(t, bs, ps, want)
}

// TestBodyStoreRotates: a record that would take the active segment past
// the target size starts a new segment; one larger than the target gets an
// empty segment of its own.
func TestBodyStoreRotates(t *testing.T) {
	dir := t.TempDir()
	const target = 4096
	bs := openStore(t, dir, target)
	msg := bytes.Repeat([]byte("m"), 1000) // 1009-byte records: 4 to a segment
	big := bytes.Repeat([]byte("B"), 2*target)
	msgs := [][]byte{msg, msg, msg, msg, msg, big, msg}
	ps := appendAll(t, bs, msgs...)
	want := []bodyPtr{{1, 0, 1000}, {1, 1009, 1000}, {1, 2018, 1000}, {1, 3027, 1000}, {2, 0, 1000}, {3, 0, 2 * target}, {4, 0, 1000}}
	if !slices.Equal(ps, want) {
		t.Fatalf("pointers %v, want %v", ps, want)
	}
	readAll(t, bs, ps, msgs)
	if got := segmentFiles(t, dir); len(got) != 4 {
		t.Fatalf("segment files %v, want 4", got)
	}
}

// TestBodyStoreDetectsCorruption: a changed byte anywhere in a record, or
// a pointer to where no such record is, reads as errCorrupt.
func TestBodyStoreDetectsCorruption(t *testing.T) {
	for _, tt := range []struct {
		name string
		at   int64 // offset in the file of the byte flipped; -1: none
		ptr  func(bodyPtr) bodyPtr
	}{
		{"message byte", segHeaderLen + 50, nil},
		{"checksum byte", 6, nil},
		{"length byte", 2, nil},
		{"format byte", 0, nil},
		{"pointer past the end", -1, func(p bodyPtr) bodyPtr { p.off += 1 << 20; return p }},
		{"pointer with another length", -1, func(p bodyPtr) bodyPtr { p.n--; return p }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			bs := openStore(t, dir, segmentSize)
			p := appendAll(t, bs, bytes.Repeat([]byte("x"), 100))[0]
			if tt.at >= 0 {
				f, err := os.OpenFile(filepath.Join(dir, segmentName(1)), os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				b := make([]byte, 1)
				if _, err := f.ReadAt(b, tt.at); err != nil {
					t.Fatal(err)
				}
				b[0] ^= 0x20
				if _, err := f.WriteAt(b, tt.at); err != nil {
					t.Fatal(err)
				}
				f.Close()
			}
			if tt.ptr != nil {
				p = tt.ptr(p)
			}
			if got, err := bs.read(p); !errors.Is(err, errCorrupt) {
				t.Fatalf("read: %d bytes, %v; want errCorrupt", len(got), err)
			}
		})
	}
}

// TestBodyStoreTornTail: a record cut short at the end of the active
// segment (a crash during its write; nothing points to it) breaks neither
// the records before it nor the appends after a restart.
func TestBodyStoreTornTail(t *testing.T) {
	dir := t.TempDir()
	bs := openStore(t, dir, segmentSize)
	var msgs [][]byte
	for i := range 3 {
		msgs = append(msgs, []byte(fmt.Sprint("message ", i)))
	}
	ps := appendAll(t, bs, msgs...)
	bs.close()
	f, err := os.OpenFile(filepath.Join(dir, segmentName(1)), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte{segFormat, 0, 0, 1, 0, 0xde, 0xad}); err != nil { // a header, torn
		t.Fatal(err)
	}
	f.Close()

	bs = openStore(t, dir, segmentSize)
	later := [][]byte{[]byte("after the crash"), bytes.Repeat([]byte("y"), 10<<10)}
	ps = append(ps, appendAll(t, bs, later...)...)
	msgs = append(msgs, later...)
	readAll(t, bs, ps, msgs)
	bs.close()
	readAll(t, openStore(t, dir, segmentSize), ps, msgs)
}

// TestPointersAreToldFromMessages: an m/ value is a pointer or a message
// stored whole by an older version, never both.
func TestPointersAreToldFromMessages(t *testing.T) {
	p := bodyPtr{seg: 7, off: 1 << 20, n: 65536}
	if got, ok := decodePointer(p.encode()); !ok || got != p {
		t.Fatalf("pointer %+v decodes as %+v, %v", p, got, ok)
	}
	if len(p.encode()) >= valueThreshold {
		t.Fatalf("a pointer of %d bytes would go to the value log", len(p.encode()))
	}
	for _, m := range []message{{Route: "r", EventID: "e"}, {Route: "route", EventID: "evt_1", Body: []byte("body")}} {
		if _, ok := decodePointer(m.encode()); ok {
			t.Fatalf("message %+v decodes as a pointer", m)
		}
	}
}

// TestBodyStoreReadsRuns: records read as one run, with redo records
// between them, read back as each alone does; a damaged one reads as
// nil without spoiling the others, and a message appended to does not
// overwrite the next. inRun bounds a run to one segment, small gaps and
// maxRunBytes.
func TestBodyStoreReadsRuns(t *testing.T) {
	dir := t.TempDir()
	bs := openStore(t, dir, segmentSize)
	var ps []bodyPtr
	var msgs [][]byte
	for i := range 8 {
		if _, err := bs.appendRecord(segRedo, make([]byte, redoLen)); err != nil {
			t.Fatal(err)
		}
		m := bytes.Repeat([]byte{byte('a' + i)}, 100*(i+1))
		p, err := bs.append(m)
		if err != nil {
			t.Fatal(err)
		}
		ps, msgs = append(ps, p), append(msgs, m)
	}
	if err := bs.sync(); err != nil {
		t.Fatal(err)
	}
	for i := 1; i < len(ps); i++ {
		if !inRun(ps[0], ps[i-1], ps[i]) {
			t.Fatalf("record %d is not in the run of those before it", i)
		}
	}
	got := bs.readRun(ps)
	for i := range ps {
		if !bytes.Equal(got[i], msgs[i]) {
			t.Fatalf("message %d: %q, want %q", i, got[i], msgs[i])
		}
	}
	got[0] = append(got[0], 'z')
	if !bytes.Equal(got[1], msgs[1]) {
		t.Fatal("appending to a message overwrote the next one")
	}

	f, err := os.OpenFile(filepath.Join(dir, segmentName(1)), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{'!'}, int64(ps[3].off)+segHeaderLen+10); err != nil {
		t.Fatal(err)
	}
	f.Close()
	got = bs.readRun(ps)
	for i := range ps {
		if want := msgs[i]; i == 3 && got[i] != nil || i != 3 && !bytes.Equal(got[i], want) {
			t.Fatalf("after damaging message 3, message %d reads %d bytes", i, len(got[i]))
		}
	}

	for _, tt := range []struct {
		name string
		q    bodyPtr
		want bool
	}{
		{"next segment", bodyPtr{seg: 2, off: 0, n: 10}, false},
		{"overlapping", bodyPtr{seg: 1, off: ps[7].off, n: 10}, false},
		{"far after", bodyPtr{seg: 1, off: ps[7].off + uint32(ps[7].recordLen()) + maxRunGap + 1, n: 10}, false},
		{"past the run's bound", bodyPtr{seg: 1, off: ps[7].off + uint32(ps[7].recordLen()), n: maxRunBytes}, false},
		{"right after", bodyPtr{seg: 1, off: ps[7].off + uint32(ps[7].recordLen()), n: 10}, true},
	} {
		if got := inRun(ps[0], ps[7], tt.q); got != tt.want {
			t.Errorf("%s: inRun = %v, want %v", tt.name, got, tt.want)
		}
	}
}
