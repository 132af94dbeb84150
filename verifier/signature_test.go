package verifier

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"
	"testing"
)

func TestSignVector(t *testing.T) {
	v := loadVectors(t)
	if got := Sign(v.secret, v.body); got != v.sig {
		t.Fatalf("Sign = %s, want %s", got, v.sig)
	}
	mac, err := ParseSignature(v.sig)
	if err != nil {
		t.Fatal(err)
	}
	m := hmac.New(sha256.New, v.secret)
	m.Write(v.body)
	if !hmac.Equal(mac[:], m.Sum(nil)) {
		t.Fatal("ParseSignature did not decode the MAC")
	}
}

func TestParseSignature(t *testing.T) {
	hex64 := strings.Repeat("0123456789abcdef", 4)
	tests := []struct {
		name, in string
		ok       bool
	}{
		{"valid", "sha256=" + hex64, true},
		{"upper-case hex", "sha256=" + strings.ToUpper(hex64), true},
		{"mixed-case hex", "sha256=" + "ABCdef" + hex64[6:], true},
		{"empty", "", false},
		{"prefix only", "sha256=", false},
		{"no prefix", hex64, false},
		{"upper-case prefix", "SHA256=" + hex64, false},
		{"mixed-case prefix", "Sha256=" + hex64, false},
		{"other scheme", "sha1=" + hex64[:40], false},
		{"v1 scheme", "v1=" + hex64, false},
		{"colon", "sha256:" + hex64, false},
		{"base64", "sha256=" + "ASNFZ4mrze8BI0VniavN7wEjRWeJq83vASNFZ4mrze8=", false},
		{"63 hex", "sha256=" + hex64[:63], false},
		{"65 hex", "sha256=" + hex64 + "0", false},
		{"128 hex", "sha256=" + hex64 + hex64, false},
		{"non-hex g", "sha256=" + "g" + hex64[1:], false},
		{"non-hex at end", "sha256=" + hex64[:63] + "z", false},
		{"internal space after prefix", "sha256= " + hex64[1:], false},
		{"internal space", "sha256=" + hex64[:30] + " " + hex64[31:], false},
		{"leading space", " sha256=" + hex64[1:], false},
		{"trailing space", "sha256=" + hex64[:63] + " ", false},
		{"trailing newline", "sha256=" + hex64 + "\n", false},
		{"comma list", "sha256=" + hex64 + ",sha256=" + hex64, false},
		{"space list", "sha256=" + hex64 + " sha256=" + hex64, false},
		{"NUL", "sha256=" + hex64[:63] + "\x00", false},
		{"non-ASCII", "sha256=" + hex64[:62] + "é", false},
		{"0x prefix", "sha256=0x" + hex64[2:], false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mac, err := ParseSignature(tt.in)
			if tt.ok {
				wantKind(t, err, KindUnknown, 0)
				if got := hex.EncodeToString(mac[:]); got != strings.ToLower(tt.in[7:]) {
					t.Fatalf("decoded %s", got)
				}
				return
			}
			wantKind(t, err, SignatureMalformed, 401)
			if mac != [32]byte{} {
				t.Fatal("non-zero MAC returned with an error")
			}
			if strings.Contains(err.Error(), hex64[:16]) {
				t.Fatalf("error message leaks the signature: %q", err)
			}
		})
	}
}

var sigRE = regexp.MustCompile(`^sha256=[0-9a-fA-F]{64}$`)

func FuzzParseSignature(f *testing.F) {
	hex64 := strings.Repeat("0123456789abcdef", 4)
	for _, s := range []string{
		"", "sha256=", "sha256=" + hex64, "sha256=" + strings.ToUpper(hex64), "SHA256=" + hex64,
		"sha256=" + hex64[:63], "sha256=" + hex64 + "0", "sha256= " + hex64[1:], hex64,
		"sha256=" + hex64 + ",sha256=" + hex64, "sha256=" + hex64[:62] + "é",
		"sha256=ec0d55f35c409c210db1dc3efc6652b5c9d125e5de24d83d4e21599a8d24087a",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		mac, err := ParseSignature(s)
		if want := sigRE.MatchString(s); want != (err == nil) {
			t.Fatalf("ParseSignature(%q): err = %v, reference says valid = %v", s, err, want)
		}
		if err != nil {
			if KindOf(err) != SignatureMalformed {
				t.Fatalf("kind %v", KindOf(err))
			}
			return
		}
		ref, _ := hex.DecodeString(s[7:])
		if string(ref) != string(mac[:]) {
			t.Fatalf("ParseSignature(%q) decoded %x", s, mac)
		}
	})
}
