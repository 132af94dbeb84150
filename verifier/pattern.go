package verifier

import (
	"errors"
	"strconv"
	"strings"
)

// Matcher matches event types against a compiled list of patterns. The zero
// Matcher, like one compiled from an empty list, matches every type.
type Matcher struct {
	all      bool
	exact    []string
	prefixes []string // each ends with "."
}

// CompilePatterns compiles event-type patterns:
//   - "*" matches every type;
//   - "document.*" matches every type that starts with "document." (but not
//     "document" itself); the part before ".*" must be a valid event type;
//   - anything else must be a valid event type and matches exactly.
//
// An empty list matches every type. Any other pattern (such as "",
// "doc*ment", "a..b", "*.processed") is an error.
func CompilePatterns(patterns []string) (Matcher, error) {
	var m Matcher
	if len(patterns) == 0 {
		m.all = true
		return m, nil
	}
	for i, p := range patterns {
		switch {
		case p == "*":
			m.all = true
		case strings.HasSuffix(p, ".*") && ValidEventType(p[:len(p)-2]):
			m.prefixes = append(m.prefixes, p[:len(p)-1])
		case ValidEventType(p):
			m.exact = append(m.exact, p)
		default:
			return Matcher{}, errors.New("verifier: event pattern " + strconv.Itoa(i) + " is invalid: " + strconv.Quote(p))
		}
	}
	return m, nil
}

// Match reports whether eventType matches one of the patterns.
// Matching is case-sensitive.
func (m Matcher) Match(eventType string) bool {
	if m.all || len(m.exact)+len(m.prefixes) == 0 {
		return true
	}
	for _, e := range m.exact {
		if eventType == e {
			return true
		}
	}
	for _, p := range m.prefixes {
		if len(eventType) > len(p) && strings.HasPrefix(eventType, p) {
			return true
		}
	}
	return false
}
