package verifier

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"math/bits"
	"slices"
	"strconv"
	"sync"
	"unicode"
	"unicode/utf8"
)

// MaxDepth is the deepest nesting of arrays and objects CheckJSON accepts;
// the top-level container counts as depth 1.
const MaxDepth = 64

// linearKeys is the number of keys per object that are checked for
// duplicates by direct comparison as they arrive; objects with more keys
// are checked once more in full by sorting their keys when they close.
const linearKeys = 16

// reason says why the strict scan failed.
type reason uint8

const (
	rOK reason = iota
	rEOF
	rChar
	rUTF8
	rControl
	rEscape
	rSurrogate
	rNumber
	rLiteral
	rDepth
	rDuplicate
	rTrailing
	rNotObject
	rTooLarge
)

var reasonText = [...]string{
	rOK:        "ok",
	rEOF:       "unexpected end of input",
	rChar:      "unexpected character",
	rUTF8:      "invalid UTF-8 in string",
	rControl:   "unescaped control character in string",
	rEscape:    "invalid escape in string",
	rSurrogate: "unpaired UTF-16 surrogate escape in string",
	rNumber:    "invalid number",
	rLiteral:   "invalid literal",
	rDepth:     "nesting deeper than 64",
	rDuplicate: "duplicate key",
	rTrailing:  "data after the JSON value",
	rNotObject: "top-level value is not an object",
	rTooLarge:  "input larger than 2 GiB",
}

// CheckJSON reports whether b is exactly one strict JSON value (RFC 8259):
//   - optional JSON whitespace around a single value, nothing else after it;
//   - valid UTF-8 everywhere; escapes must be well formed, and \u escapes for
//     UTF-16 surrogates must come as a high+low pair (a lone surrogate such as
//     "\ud800" is rejected: it encodes no Unicode character, and decoders
//     disagree on what to replace it with);
//   - no duplicate names in any object at any depth, comparing names after
//     unescaping and as encoding/json matches them to struct fields: under
//     Unicode simple case folding ("a", "\u0061" and "A" are duplicates, so
//     are "k" and the Kelvin sign "\u212a"), with no Unicode normalization;
//   - at most MaxDepth levels of nesting.
//
// It never allocates for typical inputs and runs in a single pass.
// Errors are *Error of kind EnvelopeInvalid carrying the offset of the fault.
func CheckJSON(b []byte) error {
	s := getScanner()
	s.envelope = true // a duplicate envelope member is named
	ok := s.scan(b, false)
	var err error
	if !ok {
		err = s.err()
	}
	putScanner(s)
	return err
}

// keySpan locates an object key in its comparison form: b[off:off+n] in the
// input when the key is ASCII without escapes (off >= 0), otherwise
// scratch[^off:^off+n], unescaped and, if not ASCII, case-folded (see
// foldKey). Two keys are duplicates when their comparison forms are equal
// but for the case of ASCII letters (see equalKeys). It is kept small:
// every key is appended.
type keySpan struct {
	sig uint64 // the first 8 bytes, zero-padded, without the ASCII case bit (see keySig)
	off int32
	n   int32
}

// maxInput is the largest input CheckJSON accepts (offsets are int32).
const maxInput = 1<<31 - 1

// keySig packs the first 8 bytes of k, zero-padded.
func keySig(k []byte) uint64 {
	if len(k) >= 8 {
		return binary.LittleEndian.Uint64(k)
	}
	var sig uint64
	for j := len(k) - 1; j >= 0; j-- {
		sig = sig<<8 | uint64(k[j])
	}
	return sig
}

// specialMask flags (in bit 7 of each byte) the bytes of w that end the
// plain run of a string: '"', '\\', control characters and non-ASCII bytes.
// Each term flags its lowest matching byte exactly (borrows only create
// false positives above a true one), so the lowest flag is the first
// special byte.
func specialMask(w uint64) uint64 {
	q := w ^ (lsb * '"')
	bs := w ^ (lsb * '\\')
	return (((q - lsb) &^ q) | ((bs - lsb) &^ bs) | (w - lsb*0x20) | w) & msb
}

// plainRun16 returns how many bytes of w0, w1 (16 input bytes, little
// endian) precede the first special byte, or 16. Written so that the
// compiler can use conditional moves: string lengths then cause no branch
// mispredictions.
func plainRun16(w0, w1 uint64) int {
	m0, m1 := specialMask(w0), specialMask(w1)
	t := 64 + bits.TrailingZeros64(m1)
	if m0 != 0 {
		t = bits.TrailingZeros64(m0)
	}
	return t >> 3
}

// digitRun returns how many ASCII digits start b[i:], up to 8; it needs
// i+8 <= len(b).
func digitRun(b []byte, i int) int {
	w := binary.LittleEndian.Uint64(b[i:])
	w7 := w &^ msb // no carries between bytes below
	nd := (^(w7 + lsb*(0x80-'0')) | (w7 + lsb*(0x80-'9'-1)) | w) & msb
	return bits.TrailingZeros64(nd) >> 3
}

type frame struct {
	keys    int    // len(scanner.keys) when the object opened
	scratch int    // len(scanner.scratch) when the object opened
	bloom   uint64 // one bit per key hash: most new keys need no comparison
}

type span struct{ start, end int } // end == 0: absent

type scanner struct {
	b       []byte
	keys    []keySpan // keys of all open objects, innermost last
	scratch []byte    // unescaped keys that contained escapes
	frames  [MaxDepth]frame

	// Top-level members of interest: the spans of their values go to
	// fields (when scan's env is set), and a duplicate among them is named
	// in the error. With envelope set they are ocriva's envelope members
	// (fieldNames, found with lookupField); otherwise names, a profile's.
	fields   [numFields]span
	envelope bool
	names    []string

	// Failure details.
	reason   reason
	off      int
	dupField int // envelope field index of a duplicate top-level key, or -1
}

var scanners = sync.Pool{New: func() any { return new(scanner) }}

func getScanner() *scanner { return scanners.Get().(*scanner) }

func putScanner(s *scanner) {
	s.b, s.envelope, s.names = nil, false, nil
	if cap(s.keys) > 4096 || cap(s.scratch) > 64<<10 {
		return // don't keep huge buffers alive
	}
	scanners.Put(s)
}

func (s *scanner) fail(r reason, off int) bool {
	s.reason, s.off = r, off
	return false
}

func (s *scanner) err() *Error {
	if s.reason == rDuplicate && s.dupField >= 0 {
		name := s.memberName(s.dupField)
		return &Error{Kind: EnvelopeInvalid, Field: name, Offset: s.off,
			msg: "envelope: duplicate key \"" + name + "\""}
	}
	if s.reason == rNotObject {
		return &Error{Kind: EnvelopeInvalid, Offset: s.off, msg: "envelope: " + reasonText[s.reason]}
	}
	return &Error{Kind: EnvelopeInvalid, Offset: s.off,
		msg: "envelope: invalid JSON: " + reasonText[s.reason] + " at offset " + strconv.Itoa(s.off)}
}

func (s *scanner) key(k keySpan) []byte {
	if k.off < 0 {
		off := int(^k.off)
		return s.scratch[off : off+int(k.n)]
	}
	return s.b[k.off : k.off+k.n]
}

// keyPos returns the input offset of k's opening quote, or fallback for
// keys that had escapes.
func keyPos(k keySpan, fallback int) int {
	if k.off < 0 {
		return fallback
	}
	return int(k.off) - 1
}

// scan validates b. With env set, the top-level value must be an object and
// the spans of the envelope's members are recorded in s.fields.
func (s *scanner) scan(b []byte, env bool) bool {
	s.b = b
	s.keys = s.keys[:0]
	s.scratch = s.scratch[:0]
	s.fields = [numFields]span{}
	s.reason, s.off, s.dupField = rOK, 0, -1

	var (
		n        = len(b)
		i        = skipWS(b, 0)
		depth    = 0
		objBits  uint64 // bit d set: the container at depth d+1 is an object
		field    = -1   // envelope field whose value is being scanned
		valStart = 0
		c        byte
		r        reason
		esc      bool
		ok       bool
		start    int
		f        *frame
	)
	if env && (i >= n || b[i] != '{') {
		return s.fail(rNotObject, i)
	}
	if n > maxInput {
		return s.fail(rTooLarge, 0)
	}

value:
	if i >= n {
		return s.fail(rEOF, i)
	}
	c = b[i]
	switch c {
	case '"':
		// Fast path: a plain string of at most 15 bytes.
		if i+17 <= n {
			p := plainRun16(binary.LittleEndian.Uint64(b[i+1:]), binary.LittleEndian.Uint64(b[i+9:]))
			if p < 16 && b[i+1+p] == '"' {
				i += p + 2
				goto after
			}
		}
		i, _, r = scanString(b, i+1)
		if r != rOK {
			return s.fail(r, i)
		}
	case '{', '[':
		if depth == MaxDepth {
			return s.fail(rDepth, i)
		}
		end := byte(']')
		if c == '{' {
			s.frames[depth] = frame{keys: len(s.keys), scratch: len(s.scratch)}
			objBits |= 1 << depth
			end = '}'
		} else {
			objBits &^= 1 << depth
		}
		i = skipPast(b, i)
		if i < n && b[i] == end {
			i++ // an empty container: the depth is unchanged
			goto after
		}
		depth++
		if c == '{' {
			goto key
		}
		goto value
	case 't':
		if n-i < 4 || string(b[i:i+4]) != "true" {
			return s.fail(rLiteral, i)
		}
		i += 4
	case 'f':
		if n-i < 5 || string(b[i:i+5]) != "false" {
			return s.fail(rLiteral, i)
		}
		i += 5
	case 'n':
		if n-i < 4 || string(b[i:i+4]) != "null" {
			return s.fail(rLiteral, i)
		}
		i += 4
	default:
		if c != '-' && c-'0' > 9 {
			return s.fail(rChar, i)
		}
		if i, ok = scanNumber(b, i); !ok {
			return s.fail(rNumber, i)
		}
	}

after:
	if field >= 0 && depth == 1 {
		s.fields[field] = span{valStart, i}
		field = -1
	}
	if i < n && b[i] <= ' ' {
		i = skipWS(b, i)
	}
	if depth == 0 {
		if i != n {
			return s.fail(rTrailing, i)
		}
		return true
	}
	if i >= n {
		return s.fail(rEOF, i)
	}
	c = b[i]
	if objBits&(1<<(depth-1)) == 0 { // in an array
		switch c {
		case ',':
			i = skipPast(b, i)
			goto value
		case ']':
			i++
			depth--
			goto after
		}
		return s.fail(rChar, i)
	}
	switch c {
	case ',':
		i = skipPast(b, i)
		goto key
	case '}':
		i++
		depth--
		f = &s.frames[depth]
		if len(s.keys)-f.keys > linearKeys && !s.checkSorted(f.keys, depth+1, i-1) {
			return false
		}
		s.keys = s.keys[:f.keys]
		s.scratch = s.scratch[:f.scratch]
		goto after
	}
	return s.fail(rChar, i)

key:
	if i >= n {
		return s.fail(rEOF, i)
	}
	if b[i] != '"' {
		return s.fail(rChar, i)
	}
	start = i + 1
	// Fast path: a plain key of at most 15 bytes.
	if start+16 <= n {
		w0 := binary.LittleEndian.Uint64(b[start:])
		p := plainRun16(w0, binary.LittleEndian.Uint64(b[start+8:]))
		if p < 16 && b[start+p] == '"' {
			i = start + p + 1
			// The signature is the first min(p, 8) bytes (a shift by 64
			// or more yields 0 in Go, so p >= 8 keeps all 8).
			sig := w0 & (uint64(1)<<(8*uint(p)) - 1)
			if !s.addKey(start, i-1, sig, depth) {
				return false
			}
			goto keyDone
		}
	}
	i, esc, r = scanString(b, start)
	if r != rOK {
		return s.fail(r, i)
	}
	if !s.addSlowKey(start, i-1, esc, depth) {
		return false
	}
keyDone:
	if env && depth == 1 {
		field = s.lookup(s.key(s.keys[len(s.keys)-1]))
	}
	if i < n && b[i] <= ' ' {
		i = skipWS(b, i)
	}
	if i >= n {
		return s.fail(rEOF, i)
	}
	if b[i] != ':' {
		return s.fail(rChar, i)
	}
	i = skipPast(b, i)
	if depth == 1 {
		valStart = i // only used when field >= 0
	}
	goto value
}

// addKey records the plain key b[start:end] (between its quotes, without
// escapes) of the object at depth.
func (s *scanner) addKey(start, end int, sig uint64, depth int) bool {
	return s.add(keySpan{sig: sig, off: int32(start), n: int32(end - start)}, depth, start-1)
}

// addSlowKey records the key b[start:end] that the fast path did not take.
// Unless it is ASCII without escapes, its comparison form is made in
// s.scratch: unescaped, then case-folded if it is not ASCII.
func (s *scanner) addSlowKey(start, end int, esc bool, depth int) bool {
	raw := s.b[start:end]
	if !esc && isASCII(raw) {
		return s.addKey(start, end, keySig(raw), depth)
	}
	off := len(s.scratch)
	if esc {
		s.scratch = appendUnescaped(s.scratch, raw)
	} else {
		s.scratch = append(s.scratch, raw...)
	}
	k := s.scratch[off:]
	if !isASCII(k) {
		k = foldKey(k)
		s.scratch = s.scratch[:off+len(k)]
	}
	return s.add(keySpan{sig: keySig(k), off: ^int32(off), n: int32(len(k))}, depth, start-1)
}

// add checks k against the first linearKeys keys of its object (larger
// objects are checked in full when they close) and records it. Keys equal
// but for case share a signature (the ASCII case bit is cleared), so the
// bloom filter lets through only keys that may be duplicates.
func (s *scanner) add(k keySpan, depth, pos int) bool {
	k.sig &^= lsb * 0x20
	f := &s.frames[depth-1]
	first := f.keys
	bit := uint64(1) << (((k.sig + uint64(k.n)) * 0x9E3779B97F4A7C15) >> 58)
	seen := f.bloom&bit != 0
	f.bloom |= bit
	if seen && len(s.keys)-first < linearKeys {
		for _, p := range s.keys[first:] {
			if p.sig == k.sig && p.n == k.n && equalKeys(s.key(p), s.key(k)) {
				return s.failDup(s.key(p), s.key(k), depth, pos)
			}
		}
	}
	s.keys = append(s.keys, k)
	return true
}

// checkSorted finds duplicates among all keys of a large object (the keys
// from index first on) by sorting them: O(n log n), no allocation. Any
// order in which duplicates are neighbours will do.
func (s *scanner) checkSorted(first, depth, closing int) bool {
	seg := s.keys[first:]
	slices.SortFunc(seg, func(a, b keySpan) int {
		if c := cmp.Compare(a.sig, b.sig); c != 0 {
			return c
		}
		if c := cmp.Compare(a.n, b.n); c != 0 {
			return c
		}
		return compareKeys(s.key(a), s.key(b))
	})
	for j := 1; j < len(seg); j++ {
		if seg[j].sig == seg[j-1].sig && seg[j].n == seg[j-1].n && equalKeys(s.key(seg[j]), s.key(seg[j-1])) {
			return s.failDup(s.key(seg[j-1]), s.key(seg[j]), depth, max(keyPos(seg[j], closing), keyPos(seg[j-1], closing)))
		}
	}
	return true
}

// lookup maps a top-level key to the index of its member of interest (its
// span in s.fields), or -1.
func (s *scanner) lookup(k []byte) int {
	if s.envelope {
		return lookupField(k)
	}
	for i, n := range s.names {
		if string(k) == n {
			return i
		}
	}
	return -1
}

// memberName is the name of the member of interest i (see lookup).
func (s *scanner) memberName(i int) string {
	if s.envelope {
		return fieldNames[i]
	}
	return s.names[i]
}

// failDup fails on the duplicate keys a and b of the object at depth.
func (s *scanner) failDup(a, b []byte, depth, pos int) bool {
	if depth == 1 {
		if s.dupField = s.lookup(a); s.dupField < 0 {
			s.dupField = s.lookup(b)
		}
	}
	return s.fail(rDuplicate, pos)
}

// upperASCII maps the ASCII lower-case letters to upper case.
func upperASCII(c byte) byte {
	if c-'a' < 26 {
		c -= 'a' - 'A'
	}
	return c
}

// equalKeys reports whether two comparison forms are equal but for the case
// of ASCII letters: then the keys are equal under case folding.
func equalKeys(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] && upperASCII(a[i]) != upperASCII(b[i]) {
			return false
		}
	}
	return true
}

// compareKeys orders comparison forms consistently with equalKeys.
func compareKeys(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if c := cmp.Compare(upperASCII(a[i]), upperASCII(b[i])); c != 0 {
			return c
		}
	}
	return cmp.Compare(len(a), len(b))
}

// foldKey rewrites k, valid UTF-8, in its case-folded form, in place, and
// returns it: ASCII letters in upper case and every other character as the
// least character it equals under Unicode simple case folding (the Kelvin
// sign as "K"). Keys are equal under case folding exactly when their folded
// forms are equal, which is how encoding/json matches names to fields. The
// folded form is never longer: a smaller character is never longer in UTF-8.
func foldKey(k []byte) []byte {
	out := k[:0]
	for i := 0; i < len(k); {
		if c := k[i]; c < utf8.RuneSelf {
			out = append(out, upperASCII(c))
			i++
			continue
		}
		r, n := utf8.DecodeRune(k[i:])
		i += n
		out = utf8.AppendRune(out, leastFold(r))
	}
	return out
}

// leastFold returns the least character of r's case-folding orbit.
func leastFold(r rune) rune {
	least := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		least = min(least, f)
	}
	return least
}

// isASCII reports whether b holds only ASCII bytes.
func isASCII(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b)&msb != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// skipPast returns the offset of the first byte after b[i] that is not
// whitespace.
func skipPast(b []byte, i int) int {
	i++
	if i < len(b) && b[i] <= ' ' {
		i = skipWS(b, i)
	}
	return i
}

func skipWS(b []byte, i int) int {
	for ; i < len(b); i++ {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
		default:
			return i
		}
	}
	return i
}

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// special marks the bytes that end the fast path inside a string: the quote,
// the backslash, control characters and every non-ASCII byte.
var special = func() (t [256]bool) {
	for c := range 256 {
		t[c] = c < 0x20 || c >= 0x80 || c == '"' || c == '\\'
	}
	return t
}()

// scanString scans the string whose opening quote is at b[i-1]. It returns
// the offset just past the closing quote (or of the fault), whether the
// string contains escapes, and rOK or the failure reason.
func scanString(b []byte, i int) (int, bool, reason) {
	esc := false
	n := len(b)
	for {
		// Eight bytes at a time: stop at the first special byte.
		for i+8 <= n {
			if m := specialMask(binary.LittleEndian.Uint64(b[i:])); m != 0 {
				i += bits.TrailingZeros64(m) >> 3
				break
			}
			i += 8
		}
		for i < n && !special[b[i]] {
			i++
		}
		if i >= n {
			return i, esc, rEOF
		}
		switch c := b[i]; {
		case c == '"':
			return i + 1, esc, rOK
		case c == '\\':
			esc = true
			var r reason
			if i, r = scanEscape(b, i); r != rOK {
				return i, esc, r
			}
		case c < 0x20:
			return i, esc, rControl
		default:
			// Non-ASCII: validate whole runes until back to ASCII.
			for i < n && b[i] >= 0x80 {
				r, size := utf8.DecodeRune(b[i:])
				if r == utf8.RuneError && size == 1 {
					return i, esc, rUTF8
				}
				i += size
			}
		}
	}
}

// scanEscape checks the escape sequence at b[i] == '\\' and returns the
// offset just past it.
func scanEscape(b []byte, i int) (int, reason) {
	if i+1 >= len(b) {
		return len(b), rEOF
	}
	switch b[i+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		return i + 2, rOK
	case 'u':
		r, ok := hex4(b, i+2)
		if !ok {
			return i, rEscape
		}
		switch {
		case r >= 0xD800 && r < 0xDC00:
			if len(b)-i < 12 || b[i+6] != '\\' || b[i+7] != 'u' {
				return i, rSurrogate
			}
			lo, ok := hex4(b, i+8)
			if !ok {
				return i + 6, rEscape
			}
			if lo < 0xDC00 || lo > 0xDFFF {
				return i, rSurrogate
			}
			return i + 12, rOK
		case r >= 0xDC00 && r <= 0xDFFF:
			return i, rSurrogate
		}
		return i + 6, rOK
	}
	return i, rEscape
}

// hexVal maps a byte to its hex value, or 0xff.
var hexVal = func() (t [256]byte) {
	for c := range 256 {
		switch {
		case '0' <= c && c <= '9':
			t[c] = byte(c - '0')
		case 'a' <= c && c <= 'f':
			t[c] = byte(c - 'a' + 10)
		case 'A' <= c && c <= 'F':
			t[c] = byte(c - 'A' + 10)
		default:
			t[c] = 0xff
		}
	}
	return t
}()

func hex4(b []byte, i int) (rune, bool) {
	if len(b)-i < 4 {
		return 0, false
	}
	a, c, d, e := hexVal[b[i]], hexVal[b[i+1]], hexVal[b[i+2]], hexVal[b[i+3]]
	if (a|c|d|e)&0xf0 != 0 { // a non-hex byte maps to 0xff
		return 0, false
	}
	return rune(a)<<12 | rune(c)<<8 | rune(d)<<4 | rune(e), true
}

// scanNumber scans a JSON number starting at b[i] and returns the offset
// just past it. What follows is checked by the caller.
func scanNumber(b []byte, i int) (int, bool) {
	// Fast path, without data-dependent branches on digit counts: -?int(.frac)?
	// with runs of at most 7 digits and no exponent.
	if i+20 <= len(b) {
		j := i
		if b[j] == '-' {
			j++
		}
		d := digitRun(b, j)
		switch {
		case d == 0:
			return j, false
		case b[j] == '0':
			d = 1 // a leading zero is the whole integer part
		case d == 8:
			return scanNumberSlow(b, i)
		}
		j += d
		if b[j] == '.' {
			f := digitRun(b, j+1)
			if f == 0 {
				return j + 1, false
			}
			if f == 8 {
				return scanNumberSlow(b, i)
			}
			j += 1 + f
		}
		if b[j]|0x20 == 'e' {
			return scanNumberSlow(b, i)
		}
		return j, true
	}
	return scanNumberSlow(b, i)
}

func scanNumberSlow(b []byte, i int) (int, bool) {
	n := len(b)
	if b[i] == '-' {
		i++
		if i >= n {
			return i, false
		}
	}
	switch c := b[i]; {
	case c == '0':
		i++
	case c-'1' < 9:
		i, _ = digits(b, i+1)
	default:
		return i, false
	}
	var ok bool
	if i < n && b[i] == '.' {
		if i, ok = digits(b, i+1); !ok {
			return i, false
		}
	}
	if i < n && b[i]|0x20 == 'e' {
		i++
		if i < n && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i, ok = digits(b, i); !ok {
			return i, false
		}
	}
	return i, true
}

// digits returns the end of the run of ASCII digits that starts b[i:], and
// whether the run has at least one.
func digits(b []byte, i int) (int, bool) {
	start := i
	for i < len(b) && b[i]-'0' < 10 {
		i++
	}
	return i, i > start
}

// appendUnescaped appends the unescaped form of src, the contents of a JSON
// string that scanString accepted, to dst.
func appendUnescaped(dst, src []byte) []byte {
	for len(src) > 0 {
		j := bytes.IndexByte(src, '\\')
		if j < 0 {
			return append(dst, src...)
		}
		dst = append(dst, src[:j]...)
		src = src[j:]
		var size int
		dst, size = appendEscape(dst, src)
		src = src[size:]
	}
	return dst
}

// appendEscape decodes the (valid) escape at the start of src.
func appendEscape(dst, src []byte) ([]byte, int) {
	switch src[1] {
	case 'b':
		return append(dst, '\b'), 2
	case 'f':
		return append(dst, '\f'), 2
	case 'n':
		return append(dst, '\n'), 2
	case 'r':
		return append(dst, '\r'), 2
	case 't':
		return append(dst, '\t'), 2
	case 'u':
		r, _ := hex4(src, 2)
		if r >= 0xD800 && r < 0xDC00 {
			lo, _ := hex4(src, 8)
			return utf8.AppendRune(dst, (r-0xD800)<<10|(lo-0xDC00)+0x10000), 12
		}
		return utf8.AppendRune(dst, r), 6
	}
	return append(dst, src[1]), 2 // '"', '\\', '/'
}

// appendUnescapedLimit is appendUnescaped that gives up (ok == false) once
// more than limit bytes would be appended.
func appendUnescapedLimit(dst, src []byte, limit int) ([]byte, bool) {
	base := len(dst)
	for len(src) > 0 {
		j := bytes.IndexByte(src, '\\')
		if j < 0 {
			j = len(src)
		}
		if len(dst)-base+j > limit {
			return dst, false
		}
		dst = append(dst, src[:j]...)
		src = src[j:]
		if len(src) == 0 {
			break
		}
		if len(dst)-base+4 > limit { // an escape yields at most 4 bytes
			var tmp [4]byte
			t, size := appendEscape(tmp[:0], src)
			if len(dst)-base+len(t) > limit {
				return dst, false
			}
			dst = append(dst, t...)
			src = src[size:]
			continue
		}
		var size int
		dst, size = appendEscape(dst, src)
		src = src[size:]
	}
	return dst, true
}
