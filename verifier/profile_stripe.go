package verifier

import (
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
)

const stripeSignatureHeader = "Stripe-Signature"

// stripeScheme is Stripe's: Stripe-Signature is "t=<unix>,v1=<hex>[,v1=…]",
// each v1 the HMAC-SHA256 of "<t>.<body>"; other schemes (v0) are ignored.
// The id and type are the body's "id" and "type", the timestamp t. The
// secret is the whole "whsec_…" string, used as it is.
type stripeScheme struct{}

func (stripeScheme) key(secret []byte) ([]byte, error) { return rawKey(secret) }

func (stripeScheme) sign(keys [][]byte, d Delivery) http.Header {
	t := strconv.FormatInt(d.Time.Unix(), 10)
	var b strings.Builder
	b.WriteString("t=" + t)
	for _, k := range keys {
		b.WriteString(",v1=" + hex.EncodeToString(hmacOf(k, []byte(t+"."), d.Body)))
	}
	return http.Header{stripeSignatureHeader: {b.String()}}
}

func (stripeScheme) verify(v *Verifier, h http.Header, body []byte) (*Event, error) {
	sig, err := single(h, stripeSignatureHeader, SignatureMissing, SignatureRepeated)
	if err != nil {
		return nil, err
	}
	rawTS, wants, err := parseStripeSignature(sig)
	if err != nil {
		return nil, err
	}
	idx, err := v.verifyMAC([]byte(rawTS+"."), body, wants)
	if err != nil {
		return nil, err
	}
	var vals [2][]byte
	if err := jsonObject(body, []string{"id", "type"}, vals[:]); err != nil {
		return nil, err
	}
	id, err := idMember(vals[0], "id")
	if err != nil {
		return nil, err
	}
	typ, err := typeMember(vals[1], "type")
	if err != nil {
		return nil, err
	}
	ts, _ := parseUnix(rawTS)
	if err := v.fresh(ts); err != nil {
		return nil, err
	}
	return &Event{ID: id, Type: typ, Timestamp: ts, SecretIndex: idx, Body: body}, nil
}

// parseStripeSignature reads a Stripe-Signature value: elements "k=v"
// separated by ",", exactly one t (Unix seconds, parseUnix), at least one
// and at most maxSignatures v1 of 64 hex digits. As in stripe-go, a v1 that
// is not hex and the elements of other schemes (v0) are skipped, while an
// element that is not one "<key>=<value>" fails the header. At most maxSignatures+2 elements, counted as they are
// read so that a long header costs no allocation. It returns t as written.
// Errors are *Error of kind SignatureMalformed.
func parseStripeSignature(header string) (string, [][32]byte, *Error) {
	var t string
	var wants [][32]byte
	for n, rest, more := 0, header, true; more; n++ {
		if n == maxSignatures+2 {
			return "", nil, newError(SignatureMalformed, "signature: too many elements")
		}
		var e string
		e, rest, more = strings.Cut(rest, ",")
		k, val, ok := strings.Cut(e, "=")
		if !ok || k == "" || strings.IndexByte(val, '=') >= 0 {
			return "", nil, newError(SignatureMalformed, "signature: an element is not <key>=<value>")
		}
		switch k {
		case "t":
			if _, ok := parseUnix(val); !ok || t != "" {
				return "", nil, newError(SignatureMalformed, "signature: t is not one Unix time")
			}
			t = val
		case "v1":
			if mac, ok := hexMAC(val); ok {
				wants = append(wants, mac)
			}
		}
	}
	switch {
	case t == "":
		return "", nil, newError(SignatureMalformed, "signature: no t")
	case len(wants) == 0:
		return "", nil, newError(SignatureMalformed, "signature: no well-formed v1 signature")
	case len(wants) > maxSignatures:
		return "", nil, newError(SignatureMalformed, "signature: more than 16 signatures")
	}
	return t, wants, nil
}
