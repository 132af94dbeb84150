package verifier

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"
	"time"
)

// benchBody builds a realistic document.processed envelope of exactly size
// bytes: extractedData with invoice fields and line items (small objects)
// plus the OCR text of the document (one line per item, with escaped
// newlines), compact as senders emit it.
func benchBody(size int) []byte {
	descs := []string{"Office chair, ergonomic, black", "A4 copy paper 80gsm (box of 5 reams)",
		"Toner cartridge HP 26A", "USB-C docking station", "Whiteboard markers, assorted", "Desk lamp LED 12W",
		"Ethernet cable Cat6 3m", "Filing cabinet 3-drawer"}
	var items, ocr strings.Builder
	ocr.WriteString(`ACME SUPPLIES CO.\nTAX INVOICE\nInvoice No: INV-2026-0331\nDate: 2026-03-31\nDue: 2026-04-30\n\nDescription                          Qty   Unit price      Amount\n`)
	head := `{"eventType":"document.processed","eventId":"evt_1743418800000_inv9x2","timestamp":"2026-03-31T12:00:00.000Z",` +
		`"organizationId":"org_abc123","projectId":"proj_xyz789","payload":{"id":"doc_march_inv","fileName":"invoice_march.pdf",` +
		`"status":"completed","extractedData":{"invoiceNumber":"INV-2026-0331","vendor":"Acme Supplies Co.","vendorTaxId":"0105556123456",` +
		`"totalAmount":15420.00,"currency":"THB","dueDate":"2026-04-30","lineItems":[`
	mid := `]},"ocrText":"`
	tail := `","confidence":0.97,"processingTime":3241,"processedAt":"2026-03-31T12:00:00.000Z"}}`
	for n := 0; ; n++ {
		d := descs[n%len(descs)]
		qty := n%7 + 1
		unit := float64(n%50*37+120) + 0.5
		item := fmt.Sprintf(`{"lineNo":%d,"description":%q,"quantity":%d,"unitPrice":%.2f,"amount":%.2f,"confidence":0.9%d}`,
			n+1, d, qty, unit, unit*float64(qty), n%10)
		line := fmt.Sprintf(`%-36s %3d %12.2f %11.2f\n`, d, qty, unit, unit*float64(qty))
		if len(head)+items.Len()+1+len(item)+len(mid)+ocr.Len()+len(line)+len(tail) > size {
			break
		}
		if n > 0 {
			items.WriteByte(',')
		}
		items.WriteString(item)
		ocr.WriteString(line)
	}
	body := head + items.String() + mid + ocr.String()
	body += strings.Repeat(" ", size-len(body)-len(tail)) + tail // pad the OCR text
	if len(body) != size {
		panic("benchBody: size")
	}
	return []byte(body)
}

func TestBenchBody(t *testing.T) {
	for _, size := range []int{1 << 10, 64 << 10} {
		body := benchBody(size)
		env, err := ParseEnvelope(body)
		if err != nil || len(body) != size {
			t.Fatalf("%d: %v", size, err)
		}
		if size == 64<<10 && strings.Count(string(env.Payload), `"description"`) < 300 {
			t.Fatal("too few line items")
		}
	}
}

var benchSizes = []struct {
	name string
	size int
}{{"1KiB", 1 << 10}, {"64KiB", 64 << 10}}

// benchSized runs, for each of benchSizes, op on that body; setup makes op
// from the body.
func benchSized(b *testing.B, setup func(b *testing.B, body []byte) (op func() error)) {
	for _, bs := range benchSizes {
		b.Run(bs.name, func(b *testing.B) {
			body := benchBody(bs.size)
			op := setup(b, body)
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if err := op(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkVerify(b *testing.B) {
	benchSized(b, func(b *testing.B, body []byte) func() error {
		v := mustNew(b, Config{Secrets: [][]byte{testSecret}, Tolerance: 5 * time.Minute, Now: fixedClock(baseTime)})
		h := headers(Sign(testSecret, body), "document.processed")
		return func() error { _, err := v.Verify(h, body); return err }
	})
}

// BenchmarkHMAC is the baseline for BenchmarkVerify: a plain HMAC-SHA256 of
// the same body.
func BenchmarkHMAC(b *testing.B) {
	benchSized(b, func(_ *testing.B, body []byte) func() error {
		return func() error {
			m := hmac.New(sha256.New, testSecret)
			m.Write(body)
			m.Sum(nil)
			return nil
		}
	})
}

func BenchmarkCheckJSON(b *testing.B) {
	benchSized(b, func(_ *testing.B, body []byte) func() error {
		return func() error { return CheckJSON(body) }
	})
}

// BenchmarkCheckJSONShapes splits the 64 KiB body in its two shapes, each
// wrapped as {"a":...}: the line items (dense small objects, where the scan
// is slowest) and the OCR text (one long string with escapes).
func BenchmarkCheckJSONShapes(b *testing.B) {
	body := benchBody(64 << 10)
	itemsAt := bytes.Index(body, []byte(`"lineItems":`)) + len(`"lineItems":`)
	itemsEnd := bytes.Index(body, []byte(`]},"ocrText":`)) + 1
	ocrAt := itemsEnd + len(`},"ocrText":`)
	ocrEnd := bytes.LastIndex(body, []byte(`","confidence"`)) + 1
	wrap := func(v []byte) []byte { return append(append([]byte(`{"a":`), v...), '}') }
	for _, c := range []struct {
		name string
		body []byte
	}{{"lineItems", wrap(body[itemsAt:itemsEnd])}, {"ocrText", wrap(body[ocrAt:ocrEnd])}} {
		b.Run(c.name, func(b *testing.B) {
			if err := CheckJSON(c.body); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(c.body)))
			for b.Loop() {
				CheckJSON(c.body)
			}
		})
	}
}

// BenchmarkProfiles is each profile's Verify on a body of the size: the
// fixture's event with the realistic envelope of benchBody as one more
// member (ocriva: benchBody itself), next to BenchmarkHMAC.
func BenchmarkProfiles(b *testing.B) {
	for _, f := range fixtures() {
		p, _ := LookupProfile(f.profile)
		for _, bs := range benchSizes {
			b.Run(f.profile+"/"+bs.name, func(b *testing.B) {
				d := f.good
				d.Time = baseTime
				d.Body = benchBody(bs.size)
				if f.profile != Ocriva {
					head := f.good.Body[:len(f.good.Body)-1]
					d.Body = append(append(append(bytes.Clone(head), `,"x":`...), benchBody(bs.size-len(head)-6)...), '}')
				}
				h, err := p.Sign([][]byte{f.secret}, d)
				if err != nil {
					b.Fatal(err)
				}
				v := mustNew(b, Config{Profile: f.profile, Secrets: [][]byte{f.secret}, Tolerance: p.DefaultTolerance, Now: fixedClock(baseTime)})
				b.ReportAllocs()
				b.SetBytes(int64(len(d.Body)))
				for b.Loop() {
					if _, err := v.Verify(h, d.Body); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
