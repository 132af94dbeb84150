package verifier

import "net/http"

// GitHub headers.
const (
	githubSignatureHeader = "X-Hub-Signature-256"
	githubDeliveryHeader  = "X-Github-Delivery"
	githubEventHeader     = "X-Github-Event"
)

// githubScheme is GitHub's: X-Hub-Signature-256 is "sha256=<hex>", the
// HMAC-SHA256 of the body (ParseSignature's format; the SHA-1 header is not
// accepted); the id is X-GitHub-Delivery, the type X-GitHub-Event, neither
// signed. Nothing signed says when: replay protection is the dedupe window
// on the unsigned id alone.
type githubScheme struct{}

func (githubScheme) key(secret []byte) ([]byte, error) { return rawKey(secret) }

func (githubScheme) sign(keys [][]byte, d Delivery) http.Header {
	return http.Header{githubSignatureHeader: {Sign(keys[0], d.Body)}, githubDeliveryHeader: {d.ID}, githubEventHeader: {d.Type}}
}

func (githubScheme) verify(v *Verifier, h http.Header, body []byte) (*Event, error) {
	idx, err := v.verifySHA256Header(h, githubSignatureHeader, body)
	if err != nil {
		return nil, err
	}
	if err := jsonObject(body, nil, nil); err != nil {
		return nil, err
	}
	id, err := headerID(h, githubDeliveryHeader)
	if err != nil {
		return nil, err
	}
	typ, err := headerType(h, githubEventHeader)
	if err != nil {
		return nil, err
	}
	return &Event{ID: id, Type: typ, SecretIndex: idx, Body: body}, nil
}
