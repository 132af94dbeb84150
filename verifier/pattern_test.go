package verifier

import "testing"

func TestPatterns(t *testing.T) {
	tests := []struct {
		name     string
		patterns []string
		bad      bool
		match    []string
		noMatch  []string
	}{
		{name: "empty list matches all", patterns: nil, match: []string{"document.processed", "x"}},
		{name: "star", patterns: []string{"*"}, match: []string{"document.processed", "batch.completed", "x"}},
		{name: "exact", patterns: []string{"document.processed"},
			match:   []string{"document.processed"},
			noMatch: []string{"document.processed.v2", "document", "Document.processed", "document.processe", "batch.completed", ""}},
		{name: "prefix", patterns: []string{"document.*"},
			match:   []string{"document.processed", "document.a.b"},
			noMatch: []string{"document", "document.", "documents.processed", "batch.completed", "xdocument.processed"}},
		{name: "nested prefix", patterns: []string{"a.b.*"}, match: []string{"a.b.c"}, noMatch: []string{"a.b", "a.bc.d", "a.c.b"}},
		{name: "several", patterns: []string{"document.processed", "batch.*", "template.updated"},
			match:   []string{"document.processed", "batch.completed", "template.updated"},
			noMatch: []string{"document.failed", "template.deleted"}},
		{name: "star with others", patterns: []string{"document.processed", "*"}, match: []string{"anything.else"}},
		{name: "duplicates ok", patterns: []string{"a", "a", "b.*", "b.*"}, match: []string{"a", "b.c"}, noMatch: []string{"b"}},
		{name: "empty pattern", patterns: []string{""}, bad: true},
		{name: "inner star", patterns: []string{"doc*ment"}, bad: true},
		{name: "double dot", patterns: []string{"a..b"}, bad: true},
		{name: "leading star", patterns: []string{"*.processed"}, bad: true},
		{name: "middle star", patterns: []string{"document.*.x"}, bad: true},
		{name: "double star", patterns: []string{"**"}, bad: true},
		{name: "bare prefix star", patterns: []string{"document*"}, bad: true},
		{name: "dot star only", patterns: []string{".*"}, bad: true},
		{name: "trailing dot", patterns: []string{"document."}, bad: true},
		{name: "space", patterns: []string{"document processed"}, bad: true},
		{name: "one bad among good", patterns: []string{"document.processed", "a..b"}, bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := CompilePatterns(tt.patterns)
			if tt.bad {
				if err == nil {
					t.Fatal("want error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tt.match {
				if !m.Match(s) {
					t.Errorf("%q should match", s)
				}
			}
			for _, s := range tt.noMatch {
				if m.Match(s) {
					t.Errorf("%q should not match", s)
				}
			}
		})
	}
	var zero Matcher
	if !zero.Match("document.processed") {
		t.Error("zero Matcher should match all")
	}
}

func TestValidEventIDType(t *testing.T) {
	ids := map[string]bool{"evt_1743418800000_inv9x2": true, "a": true, "A.b:c-d_e": true, "": false,
		"a b": false, "a/b": false, "é": false, string(make([]byte, 129)): false}
	long := make([]byte, 128)
	for i := range long {
		long[i] = 'x'
	}
	ids[string(long)] = true
	ids[string(long)+"x"] = false
	for s, want := range ids {
		if ValidEventID(s) != want {
			t.Errorf("ValidEventID(%q) != %v", s, want)
		}
	}
	types := map[string]bool{"document.processed": true, "a": true, "a.b.c": true, "A-1_b.c": true,
		"": false, ".": false, "a.": false, ".a": false, "a..b": false, "a b": false, "a:b": false,
		string(long): true, string(long) + "x": false}
	for s, want := range types {
		if ValidEventType(s) != want {
			t.Errorf("ValidEventType(%q) != %v", s, want)
		}
	}
}
