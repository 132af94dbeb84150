package main

import (
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"fmt"
	"hash"
	"strings"
	"time"

	"github.com/hookgate/hookgate/verifier"
)

// A body is prefix + eventId + suffix: the eventId is the envelope's last
// member, so each request's body differs from the template only in a fixed
// width tail and its HMAC can be finished from a precomputed SHA-256 state
// of the (secret-padded) prefix. That keeps the load generator's CPU per
// request near a microsecond even for 64 KiB bodies, without holding every
// body in memory.

const (
	eventType = "document.processed"
	idLen     = len("evt-k-s00-0000000000")
)

// template is one cell's body shape and the HMAC midstates of its prefix.
type template struct {
	size   int
	prefix []byte // up to and including `"eventId":"`
	suffix []byte // `"}`
	inner  []byte // marshaled SHA-256 state after (key ^ ipad) || prefix
	opad   []byte // key ^ opad, 64 bytes
	cell   byte   // a letter that makes ids unique across cells
}

func newTemplate(secret []byte, size int, cell byte) (*template, error) {
	if len(secret) > 64 {
		return nil, fmt.Errorf("secret longer than one SHA-256 block")
	}
	head := `{"eventType":"` + eventType + `","timestamp":"` + time.Now().UTC().Format("2006-01-02T15:04:05.000Z") +
		`","organizationId":"org_bench","projectId":"proj_bench","payload":{"id":"doc_bench","fileName":"invoice_bench.pdf",` +
		`"status":"completed","extractedData":{"invoiceNumber":"INV-2026-0331","vendor":"Acme Supplies Co.","totalAmount":15420.00,` +
		`"currency":"THB"},"ocrText":"`
	tail := `","confidence":0.97},"eventId":"`
	suffix := `"}`
	pad := size - len(head) - len(tail) - idLen - len(suffix)
	if pad < 0 {
		return nil, fmt.Errorf("body size %d is too small for the envelope", size)
	}
	const text = `ACME SUPPLIES CO. TAX INVOICE Office chair, ergonomic, black 2 1,250.50 2,501.00\n`
	ocr := strings.Repeat(text, pad/len(text)+1)[:pad]
	if strings.HasSuffix(ocr, `\`) { // never cut an escape in half
		ocr = ocr[:len(ocr)-1] + " "
	}
	t := &template{size: size, prefix: []byte(head + ocr + tail), suffix: []byte(suffix), cell: cell}

	var k0 [64]byte
	copy(k0[:], secret)
	ipad := make([]byte, 64)
	t.opad = make([]byte, 64)
	for i := range k0 {
		ipad[i] = k0[i] ^ 0x36
		t.opad[i] = k0[i] ^ 0x5c
	}
	h := sha256.New()
	h.Write(ipad)
	h.Write(t.prefix)
	st, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return nil, err
	}
	t.inner = st

	// Self-check against the verifier package's signer.
	b := t.newBuf()
	t.setID(b, 7, 42)
	if got, want := t.sign(sha256.New(), b), verifier.Sign(secret, b); got != want {
		return nil, fmt.Errorf("midstate HMAC %s != verifier.Sign %s", got, want)
	}
	if len(b) != size {
		return nil, fmt.Errorf("body is %d bytes, want %d", len(b), size)
	}
	if _, err := verifier.ParseEnvelope(b); err != nil {
		return nil, fmt.Errorf("template envelope: %w", err)
	}
	return t, nil
}

// newBuf returns a body buffer with a zero id.
func (t *template) newBuf() []byte {
	b := make([]byte, 0, t.size)
	b = append(b, t.prefix...)
	b = append(b, "evt-"+string(t.cell)+"-s00-0000000000"...)
	return append(b, t.suffix...)
}

// setID writes the id of (sender, seq) into b in place.
func (t *template) setID(b []byte, sender, seq int) {
	id := b[len(t.prefix) : len(t.prefix)+idLen]
	putID(id, t.cell, sender, seq)
}

func putID(id []byte, cell byte, sender, seq int) {
	copy(id, "evt-")
	id[4] = cell
	id[5], id[6] = '-', 's'
	id[7] = byte('0' + sender/10%10)
	id[8] = byte('0' + sender%10)
	id[9] = '-'
	for i := idLen - 1; i >= 10; i-- {
		id[i] = byte('0' + seq%10)
		seq /= 10
	}
}

func idString(cell byte, sender, seq int) string {
	var b [idLen]byte
	putID(b[:], cell, sender, seq)
	return string(b[:])
}

// sign returns the X-Webhook-Signature value of b, reusing h (a SHA-256).
func (t *template) sign(h hash.Hash, b []byte) string {
	h.(encoding.BinaryUnmarshaler).UnmarshalBinary(t.inner)
	h.Write(b[len(t.prefix):])
	var sum [sha256.Size]byte
	inner := h.Sum(sum[:0])
	h.Reset()
	h.Write(t.opad)
	h.Write(inner)
	mac := h.Sum(sum[:0])
	var out [7 + 64]byte
	copy(out[:], "sha256=")
	hex.Encode(out[7:], mac)
	return string(out[:])
}
