package verifier

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

func TestCheckJSON(t *testing.T) {
	manyKeys := func(n int, extra string) string {
		var b strings.Builder
		b.WriteByte('{')
		for i := range n {
			fmt.Fprintf(&b, `"k%03d":%d,`, i, i)
		}
		b.WriteString(extra)
		b.WriteString(`"end":true}`)
		return b.String()
	}
	tests := []struct {
		in string
		r  reason // rOK = valid
	}{
		{`{}`, rOK},
		{`[]`, rOK},
		{`0`, rOK},
		{`-0.5e+10`, rOK},
		{`1E-2`, rOK},
		{`"x"`, rOK},
		{`true`, rOK},
		{`false`, rOK},
		{`null`, rOK},
		{" \t\r\n{ \"a\" : [ 1 , { } , [ ] ] } \n", rOK},
		{`{"a":1,"b":{"a":2},"c":[{"a":3},{"a":4}]}`, rOK},
		{`{"":1,"\u0000":2," ":3}`, rOK},
		{`{"a":1,"A":2}`, rDuplicate},
		{`{"eventId":1,"EVENTID":2}`, rDuplicate},
		{`{"a":{"b":[{"Key":1,"kEY":2}]}}`, rDuplicate},
		{`{"k":1,"\u212a":2}`, rDuplicate},     // the Kelvin sign folds to K
		{"{\"K\":1,\"\u212a\":2}", rDuplicate}, // raw
		{`{"ſ":1,"S":2}`, rDuplicate},          // long s
		{`{"time\u017ftamp":1,"TIMESTAMP":2}`, rDuplicate},
		{`{"é":1,"É":2}`, rDuplicate},
		{`{"\u00c9":1,"é":2}`, rDuplicate},
		{`{"σ":1,"ς":2}`, rDuplicate},
		{`{"ß":1,"ẞ":2}`, rDuplicate},
		{`{"Å":1,"\u212b":2}`, rDuplicate}, // the Angstrom sign
		{`{"abcdefghijklmnopqrstuvwxyz":1,"ABCDEFGHIJKLMNOPQRSTUVWXYZ":2}`, rDuplicate},
		{`{"a@":1,"a` + "`" + `":2,"[":3,"{":4,"_":5,"\u007f":6}`, rOK}, // same but for bit 0x20, not letters
		{`{"I":1,"ı":2,"İ":3}`, rOK},                                    // dotless and dotted i fold apart
		{`{"é":1,"e":2}`, rOK},
		{`{"é":1,"\u00e9":2}`, rDuplicate},
		{`{"e\u0301":1,"é":2}`, rOK}, // no Unicode normalization
		{`{"\ud83d\ude00":1,"😀":2}`, rDuplicate},
		{`{"\/":1,"/":2}`, rDuplicate},
		{`{"\"":1,"\u0022":2}`, rDuplicate},
		{`{"a":1,"a":1}`, rDuplicate},
		{`{"a":{"b":{"c":1,"c":2}}}`, rDuplicate},
		{`[{"a":1,"b":2,"a":3}]`, rDuplicate},
		{`{"a":1,"b":{"a":1},"a":2}`, rDuplicate},
		{`{"a":{"x":1},"b":{"x":1}}`, rOK},
		{manyKeys(16, ""), rOK},
		{manyKeys(200, ""), rOK},
		{manyKeys(200, `"k007":1,`), rDuplicate},
		{manyKeys(200, `"k\u0030\u00307":1,`), rDuplicate},
		{manyKeys(200, `"K007":1,`), rDuplicate},
		{manyKeys(200, `"\u212a007":1,`), rDuplicate},
		{manyKeys(20, `"K019":1,`), rDuplicate},
		{manyKeys(200, `"K200":1,"k 07":1,`), rOK},
		{manyKeys(15, `"k000":1,`), rDuplicate},
		{manyKeys(16, `"k000":1,`), rDuplicate},
		{manyKeys(17, `"k016":1,`), rDuplicate},
		{`{"big":` + manyKeys(40, "") + `,"big":1}`, rDuplicate},
		{`{"a":` + manyKeys(40, "") + `,"b":` + manyKeys(40, "") + `}`, rOK},
		{``, rEOF},
		{` `, rEOF},
		{`{`, rEOF},
		{`{"a"`, rEOF},
		{`{"a":`, rEOF},
		{`{"a":1`, rEOF},
		{`[1,`, rEOF},
		{`"abc`, rEOF},
		{`"abc\`, rEOF},
		{`{,}`, rChar},
		{`{"a":1,}`, rChar},
		{`[1,]`, rChar},
		{`[,1]`, rChar},
		{`{"a" 1}`, rChar},
		{`{1:1}`, rChar},
		{`{'a':1}`, rChar},
		{`[1 2]`, rChar},
		{`}`, rChar},
		{`]`, rChar},
		{`{} {}`, rTrailing},
		{`1 2`, rTrailing},
		{`{}x`, rTrailing},
		{"{}\x00", rTrailing},
		{"\xef\xbb\xbf{}", rChar},
		{`01`, rTrailing},
		{`-`, rNumber},
		{`-a`, rNumber},
		{`1.`, rNumber},
		{`1.e5`, rNumber},
		{`1e`, rNumber},
		{`1e+`, rNumber},
		{`.5`, rChar},
		{`+1`, rChar},
		{`0x10`, rTrailing},
		{`tru`, rLiteral},
		{`nulL`, rLiteral},
		{`True`, rChar},
		{`"\x"`, rEscape},
		{`"\u12"`, rEscape},
		{`"\u12G4"`, rEscape},
		{`"\ud800"`, rSurrogate},
		{`"\ud800\"`, rSurrogate},
		{`"\ud800\ud800"`, rSurrogate},
		{`"\ud800\u0041"`, rSurrogate},
		{`"\ud800\uZZZZ"`, rEscape},
		{`"\udfff"`, rSurrogate},
		{`"\uDBFF\uDFFF"`, rOK},
		{`"\uD800\uDC00"`, rOK},
		{`"\uFFFF\u0000\uFFFD"`, rOK},
		{"\"\x00\"", rControl},
		{"\"\x1f\"", rControl},
		{"\"\n\"", rControl},
		{"\"\x7f\"", rOK},
		{"\"\xff\"", rUTF8},
		{"\"\xc0\x80\"", rUTF8},
		{"\"\xed\xa0\x80\"", rUTF8},
		{"\"\xf4\x90\x80\x80\"", rUTF8},
		{"\"\xe0\xb8\"", rUTF8},
		{"\"abcdefghijklmnop\xe0\xb8\"", rUTF8},
		{"\"\xf0\x9f\x98\x80\xe0\xb8\x81abcdefgh\"", rOK},
		{`"` + strings.Repeat("abcdefgh", 100) + `\n` + strings.Repeat("é", 100) + `"`, rOK},
		{nest(64), rOK},
		{nest(65), rDepth},
		{strings.Repeat(`{"a":`, 64) + "1" + strings.Repeat("}", 64), rOK},
		{strings.Repeat(`{"a":`, 65) + "1" + strings.Repeat("}", 65), rDepth},
		{strings.Repeat("[", 100000), rDepth},
	}
	for _, tt := range tests {
		name := tt.in
		if len(name) > 40 {
			name = name[:40]
		}
		t.Run(fmt.Sprintf("%q", name), func(t *testing.T) {
			err := CheckJSON([]byte(tt.in))
			if tt.r == rOK {
				if err != nil {
					t.Fatal(err)
				}
				if !json.Valid([]byte(tt.in)) {
					t.Fatal("encoding/json disagrees")
				}
				return
			}
			wantKind(t, err, EnvelopeInvalid, 400)
			if !strings.Contains(err.Error(), reasonText[tt.r]) {
				t.Fatalf("err = %v, want reason %q", err, reasonText[tt.r])
			}
			var e *Error
			if errors.As(err, &e); e.Offset < 0 || e.Offset > len(tt.in) {
				t.Fatalf("offset %d", e.Offset)
			}
			// The differential oracle agrees too.
			if refStrict([]byte(tt.in)) && tt.r != rSurrogate {
				t.Fatal("reference validator accepts")
			}
		})
	}
}

func TestUnescape(t *testing.T) {
	tests := []struct{ in, want string }{
		{``, ``},
		{`abc`, `abc`},
		{`\"\\\/\b\f\n\r\t`, "\"\\/\b\f\n\r\t"},
		{`evt\u005f1`, `evt_1`},
		{`\u00e9\u0e01\ud83d\ude00`, "é\u0e01😀"},
		{`a\u0000b`, "a\x00b"},
	}
	for _, tt := range tests {
		if got := string(appendUnescaped(nil, []byte(tt.in))); got != tt.want {
			t.Errorf("appendUnescaped(%q) = %q, want %q", tt.in, got, tt.want)
		}
		for limit := 0; limit <= len(tt.want)+1; limit++ {
			got, ok := appendUnescapedLimit([]byte("pre"), []byte(tt.in), limit)
			if ok != (len(tt.want) <= limit) || (ok && string(got) != "pre"+tt.want) {
				t.Errorf("appendUnescapedLimit(%q, %d) = %q, %v", tt.in, limit, got, ok)
			}
		}
	}
}

// refStrict is a slow reference for CheckJSON built from encoding/json:
// json.Valid, utf8.Valid, then a token walk for depth and duplicate keys,
// compared pairwise with strings.EqualFold (as encoding/json matches names).
// It cannot see lone surrogate escapes (encoding/json turns them into
// U+FFFD), so it accepts those.
func refStrict(data []byte) bool {
	if !json.Valid(data) || !utf8.Valid(data) {
		return false
	}
	type frame struct {
		obj     bool
		wantKey bool
		keys    []string
	}
	var stack []*frame
	onValue := func() {
		if n := len(stack); n > 0 && stack[n-1].obj {
			stack[n-1].wantKey = true
		}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // 1e999 is valid JSON but not a float64
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return true
		}
		if err != nil {
			return false
		}
		switch t := tok.(type) {
		case json.Delim:
			if t == '{' || t == '[' {
				stack = append(stack, &frame{obj: t == '{', wantKey: true})
				if len(stack) > MaxDepth {
					return false
				}
				continue
			}
			stack = stack[:len(stack)-1]
			onValue()
		case string:
			if n := len(stack); n > 0 && stack[n-1].obj && stack[n-1].wantKey {
				top := stack[n-1]
				for _, k := range top.keys {
					if strings.EqualFold(k, t) {
						return false
					}
				}
				top.keys = append(top.keys, t)
				top.wantKey = false
				continue
			}
			onValue()
		default:
			onValue()
		}
	}
}

func FuzzParseEnvelope(f *testing.F) {
	vec := loadVectors(f)
	f.Add(vec.body)
	for _, s := range []string{
		envelope(), envelope("payload", "-"), envelope("eventId", `"evt\u005f1"`),
		envelope("event\\u0049d", `"x"`), envelope("payload", `{"a":1,"a":2}`),
		envelope("payload", nest(63)), envelope("payload", nest(64)),
		envelope("timestamp", `"2026-03-31T17:30:00+05:30"`), envelope("timestamp", `"2026-03-31t12:00:00Z"`),
		envelope("payload", `"\ud83d\ude00\ud800"`), envelope("payload", "\"\xed\xa0\x80\""),
		envelope("organizationId", `1`), envelope("EVENTID", `"x"`),
		`{}`, `[]`, `""`, `{"a":{"b":[1,2,{"c":null}]}}`, `{"a":1}{}`, "{\"a\":\"\x01\"}",
		`{"k0":0,"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"ka":10,"kb":11,"kc":12,"kd":13,"ke":14,"kf":15,"kg":16,"k\u0030":17}`,
		`-0.0e-0`, `[1e999,-1E+2,0.25]`, ` {"\u00e9":1,"é":2} `,
	} {
		f.Add([]byte(s))
	}
	for _, ts := range []string{
		"2026-03-31T11:00:00Z", "2026-03-31T10:59:59.999999999Z", "2026-03-31T13:00:00.000000001Z",
		"2026-03-31T14:00:00+01:00", "2026-03-31T07:00:00-05:00", "2026-03-31T12:00:00.1234567890Z",
		"2026-03-31T12:00:00+24:00", "2026-03-31T12:00:00z", "2026-03-31 12:00:00Z", "2026-03-31T23:59:60Z",
		"2026-04-31T12:00:00Z", "2026-03-31T12:00:00", "0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999-23:59",
	} {
		f.Add([]byte(envelope("timestamp", `"`+ts+`"`)))
	}
	f.Add(benchBody(2 << 10))
	fresh := mustNew(f, Config{InsecureNoSignature: true, Tolerance: time.Hour, Now: fixedClock(baseTime)})
	f.Fuzz(func(t *testing.T, data []byte) {
		orig := bytes.Clone(data)
		cerr := CheckJSON(data)
		env, perr := ParseEnvelope(data)
		if !bytes.Equal(orig, data) {
			t.Fatal("input modified")
		}
		ref := refStrict(data)
		if cerr == nil {
			if !json.Valid(data) {
				t.Fatal("CheckJSON accepts what json.Valid rejects")
			}
			if !ref {
				t.Fatal("CheckJSON accepts what the reference strict validator rejects")
			}
		} else {
			if KindOf(cerr) != EnvelopeInvalid {
				t.Fatalf("CheckJSON error kind %v", KindOf(cerr))
			}
			if ref && !strings.Contains(cerr.Error(), reasonText[rSurrogate]) {
				t.Fatalf("CheckJSON rejects what the reference accepts: %v", cerr)
			}
		}
		if perr != nil {
			if KindOf(perr) != EnvelopeInvalid || env != nil {
				t.Fatalf("ParseEnvelope: %v, %v", env, perr)
			}
			if cerr == nil && validEnvelope(data) {
				t.Fatalf("ParseEnvelope rejects an envelope that follows its rules: %v", perr)
			}
			return
		}
		if cerr != nil {
			t.Fatal("ParseEnvelope accepts what CheckJSON rejects")
		}
		// Compare with encoding/json reading exact member names.
		var m map[string]json.RawMessage
		if err := json.Unmarshal(data, &m); err != nil {
			t.Fatalf("encoding/json: %v", err)
		}
		str := func(name string) string {
			var s string
			if raw, ok := m[name]; ok {
				if err := json.Unmarshal(raw, &s); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
			}
			return s
		}
		if env.ID != str("eventId") || env.Type != str("eventType") || env.OrganizationID != str("organizationId") ||
			env.ProjectID != str("projectId") || str("timestamp") == "" {
			t.Fatalf("envelope %+v differs from encoding/json %v", env, m)
		}
		if !ValidEventID(env.ID) || !ValidEventType(env.Type) || len(env.OrganizationID) > MaxTenantIDLen {
			t.Fatalf("invalid fields accepted: %+v", env)
		}
		if raw, ok := m["payload"]; ok != (env.Payload != nil) || !bytes.Equal(raw, env.Payload) {
			t.Fatalf("payload %q vs %q", env.Payload, raw)
		}
		ts := str("timestamp")
		want, ok := refTimestamp(ts)
		if !ok {
			t.Fatalf("timestamp %q accepted against the rule", ts)
		}
		_, off := env.Timestamp.Zone()
		if _, wantOff := want.Zone(); !env.Timestamp.Equal(want) || off != wantOff {
			t.Fatalf("timestamp %q parsed as %v, want %v", ts, env.Timestamp, want)
		}
		// Verify's freshness check: within the tolerance of now either way,
		// both ends included.
		_, err := fresh.Verify(http.Header{EventHeader: {env.Type}}, data)
		switch {
		case want.Before(baseTime.Add(-time.Hour)):
			if KindOf(err) != TimestampStale {
				t.Fatalf("timestamp %s, now %s, tolerance 1h: %v, want stale", ts, baseTime, err)
			}
		case want.After(baseTime.Add(time.Hour)):
			if KindOf(err) != TimestampFuture {
				t.Fatalf("timestamp %s, now %s, tolerance 1h: %v, want future", ts, baseTime, err)
			}
		case err != nil:
			t.Fatalf("timestamp %s, now %s, tolerance 1h: %v, want fresh", ts, baseTime, err)
		}
	})
}

// FuzzCaseFoldedKeys: keys of one object are duplicates exactly when
// strings.EqualFold (how encoding/json matches names) says two of them are
// equal, in small objects and in large ones (checked by sorting), written
// plainly or as \u escapes.
func FuzzCaseFoldedKeys(f *testing.F) {
	for _, p := range [][2]string{
		{"eventId", "EVENTID"}, {"k", "\u212a"}, {"ſ", "S"}, {"a@", "a`"}, {"I", "ı"}, {"é", "É"},
		{"σ", "ς"}, {"", ""}, {"abcdefghijklmnopq", "ABCDEFGHIJKLMNOPQ"}, {"f007", "F007"}, {"😀", "😀"},
	} {
		f.Add(p[0], p[1], false, uint8(0))
		f.Add(p[0], p[1], true, uint8(30))
	}
	f.Fuzz(func(t *testing.T, a, b string, escape bool, fillers uint8) {
		if !utf8.ValidString(a) || !utf8.ValidString(b) {
			return // not a JSON string
		}
		keys := []string{a}
		for i := range int(fillers % 40) {
			keys = append(keys, fmt.Sprintf("f%03d", i))
		}
		keys = append(keys, b)
		want := false
		for i := range keys {
			for j := range i {
				want = want || strings.EqualFold(keys[i], keys[j])
			}
		}
		var body strings.Builder
		body.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				body.WriteByte(',')
			}
			body.WriteString(jsonKey(k, escape) + ":0")
		}
		body.WriteByte('}')
		err := CheckJSON([]byte(body.String()))
		if (err != nil) != want || (err != nil && !strings.Contains(err.Error(), reasonText[rDuplicate])) {
			t.Fatalf("%s: %v, want a duplicate: %v", body.String(), err, want)
		}
	})
}

// jsonKey writes k as a JSON string, every character as a \u escape if
// escape is set.
func jsonKey(k string, escape bool) string {
	if !escape {
		js, _ := json.Marshal(k)
		return string(js)
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range k {
		if r > 0xffff {
			hi, lo := utf16.EncodeRune(r)
			fmt.Fprintf(&b, `\u%04x\u%04x`, hi, lo)
			continue
		}
		fmt.Fprintf(&b, `\u%04x`, r)
	}
	b.WriteByte('"')
	return b.String()
}

// timestampShape is the envelope's timestamp rule, written apart from
// rfc3339Shape: RFC 3339 with an upper-case "T", at most 9 fractional digits
// and a zone of "Z" or ±hh:mm.
var timestampShape = regexp.MustCompile(`^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$`)

// refTimestamp parses s if it follows the timestamp rule and names an
// instant that exists (no 24:00, no leap second, no 31 April).
func refTimestamp(s string) (time.Time, bool) {
	if !timestampShape.MatchString(s) {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	return t, err == nil
}

// validEnvelope reports, with encoding/json, whether a strict JSON body
// follows the envelope rules: the three required members and the optional
// tenant ids are strings that pass their checks.
func validEnvelope(data []byte) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(data, &m) != nil {
		return false
	}
	member := func(name string, required bool, valid func(string) bool) bool {
		raw, ok := m[name]
		if !ok {
			return !required
		}
		var s string
		return bytes.HasPrefix(raw, []byte(`"`)) && json.Unmarshal(raw, &s) == nil && valid(s)
	}
	tenant := func(s string) bool { return len(s) <= MaxTenantIDLen }
	timestamp := func(s string) bool { _, ok := refTimestamp(s); return ok }
	return member("eventId", true, ValidEventID) && member("eventType", true, ValidEventType) &&
		member("timestamp", true, timestamp) && member("organizationId", false, tenant) &&
		member("projectId", false, tenant)
}
