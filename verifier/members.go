package verifier

import "bytes"

// jsonObject checks body with the rules of CheckJSON, requires an object,
// and sets vals[i] to the raw value of its top-level member names[i] (nil
// if absent), in the same pass; names may be empty (github, shopify). Member
// names are compared exactly, after unescaping; duplicates, case-folded ones
// included, are refused, and named in the error if they are among names. At
// most numFields names. Ocriva's envelope has its own, parseEnvelope.
func jsonObject(body []byte, names []string, vals [][]byte) *Error {
	s := getScanner()
	s.names = names
	ok := s.scan(body, true)
	var err *Error
	if !ok {
		err = s.err()
	}
	for i := range names {
		vals[i] = nil
		if sp := s.fields[i]; ok && sp.end != 0 {
			vals[i] = body[sp.start:sp.end:sp.end]
		}
	}
	putScanner(s)
	return err
}

// members finds the top-level members of obj, an object CheckJSON accepted,
// in a second pass (for Slack's event object).
func members(obj []byte, names []string, vals [][]byte) {
	clear(vals)
	var scratch [64]byte
	i := skipWS(obj, skipWS(obj, 0)+1)
	for obj[i] == '"' {
		keyEnd, esc, _ := scanString(obj, i+1)
		key := obj[i+1 : keyEnd-1]
		if esc {
			key = appendUnescaped(scratch[:0], key)
		}
		i = skipWS(obj, skipWS(obj, keyEnd)+1) // past the colon
		end := valueEnd(obj, i)
		for j, n := range names {
			if string(key) == n {
				vals[j] = obj[i:end:end]
			}
		}
		i = skipWS(obj, end)
		if obj[i] != ',' {
			return // '}'
		}
		i = skipWS(obj, i+1)
	}
}

// valueEnd returns the offset just past the valid JSON value at b[i].
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		end, _, _ := scanString(b, i+1)
		return end
	case '{', '[':
		depth := 0
		for {
			j := bytes.IndexAny(b[i:], "\"{}[]")
			i += j
			switch b[i] {
			case '"':
				i, _, _ = scanString(b, i+1)
				continue
			case '{', '[':
				depth++
			default:
				depth--
			}
			i++
			if depth == 0 {
				return i
			}
		}
	}
	for i < len(b) {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
		i++
	}
	return i
}

// stringMember reads raw, the value of the member field, as a string of at
// most limit bytes after unescaping.
func stringMember(raw []byte, field string, limit int) (string, *Error) {
	if raw == nil {
		return "", fieldError(field, "missing")
	}
	if raw[0] != '"' {
		return "", fieldError(field, "not a string")
	}
	var buf [256]byte
	out, ok := appendUnescapedLimit(buf[:0], raw[1:len(raw)-1], limit)
	if !ok {
		return "", fieldError(field, "too long")
	}
	return string(out), nil
}

// idMember reads raw as an event id (ValidEventID).
func idMember(raw []byte, field string) (string, *Error) {
	s, err := stringMember(raw, field, MaxEventIDLen)
	if err == nil && !ValidEventID(s) {
		err = fieldError(field, "not 1-128 characters of A-Z a-z 0-9 . _ : -")
	}
	return s, err
}

// typeMember reads raw as an event type (ValidEventType).
func typeMember(raw []byte, field string) (string, *Error) {
	s, err := stringMember(raw, field, MaxEventTypeLen)
	if err == nil && !ValidEventType(s) {
		err = fieldError(field, "not a dotted token")
	}
	return s, err
}
