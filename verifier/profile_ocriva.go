package verifier

import "net/http"

// ocrivaScheme is the reference sender's scheme (see Verify).
type ocrivaScheme struct{}

func (ocrivaScheme) key(secret []byte) ([]byte, error) { return rawKey(secret) }

func (ocrivaScheme) sign(keys [][]byte, d Delivery) http.Header {
	return http.Header{SignatureHeader: {Sign(keys[0], d.Body)}, EventHeader: {d.Type}}
}

func (ocrivaScheme) verify(v *Verifier, h http.Header, body []byte) (*Event, error) {
	idx := -1
	if !v.insecure {
		var err *Error
		if idx, err = v.verifySHA256Header(h, SignatureHeader, body); err != nil {
			return nil, err
		}
	}
	var env Envelope
	if err := parseEnvelope(body, &env); err != nil {
		return nil, err
	}
	typ, err := single(h, EventHeader, EventHeaderMissing, EventHeaderRepeated)
	if err != nil {
		return nil, err
	}
	if typ != env.Type {
		return nil, newError(EventHeaderMismatch, "event: "+EventHeader+" header differs from the body's eventType")
	}
	if err := v.fresh(env.Timestamp); err != nil {
		return nil, err
	}
	return &Event{
		ID:             env.ID,
		Type:           env.Type,
		Timestamp:      env.Timestamp,
		OrganizationID: env.OrganizationID,
		ProjectID:      env.ProjectID,
		SecretIndex:    idx,
		Body:           body,
		Payload:        env.Payload,
	}, nil
}
