package verifier

import (
	"encoding/base64"
	"net/http"
	"strings"
	"time"
)

// Shopify headers.
const (
	shopifySignatureHeader   = "X-Shopify-Hmac-Sha256"
	shopifyWebhookIDHeader   = "X-Shopify-Webhook-Id"
	shopifyTopicHeader       = "X-Shopify-Topic"
	shopifyTriggeredAtHeader = "X-Shopify-Triggered-At"
)

// shopifyScheme is Shopify's: X-Shopify-Hmac-Sha256 is the standard base64
// of the HMAC-SHA256 of the body. The id is X-Shopify-Webhook-Id, the type
// X-Shopify-Topic with its "/" made "." ("orders/create" is
// "orders.create", so that events patterns such as orders.* apply), the
// timestamp X-Shopify-Triggered-At (RFC 3339). None of the three is
// signed.
type shopifyScheme struct{}

func (shopifyScheme) key(secret []byte) ([]byte, error) { return rawKey(secret) }

func (shopifyScheme) sign(keys [][]byte, d Delivery) http.Header {
	return http.Header{
		shopifySignatureHeader:   {base64.StdEncoding.EncodeToString(hmacOf(keys[0], d.Body))},
		shopifyWebhookIDHeader:   {d.ID},
		shopifyTopicHeader:       {strings.ReplaceAll(d.Type, ".", "/")},
		shopifyTriggeredAtHeader: {d.Time.UTC().Format(time.RFC3339Nano)},
	}
}

func (shopifyScheme) verify(v *Verifier, h http.Header, body []byte) (*Event, error) {
	idx, err := v.verifyHeaderMAC(h, shopifySignatureHeader, parseShopifySignature, nil, body)
	if err != nil {
		return nil, err
	}
	if err := jsonObject(body, nil, nil); err != nil {
		return nil, err
	}
	id, err := headerID(h, shopifyWebhookIDHeader)
	if err != nil {
		return nil, err
	}
	topic, err := single(h, shopifyTopicHeader, HeaderMissing, HeaderRepeated)
	if err != nil {
		return nil, err
	}
	typ := strings.ReplaceAll(topic, "/", ".")
	if strings.IndexByte(topic, '.') >= 0 || !ValidEventType(typ) {
		return nil, headerError(HeaderInvalid, shopifyTopicHeader, "not tokens separated by \"/\"")
	}
	at, err := single(h, shopifyTriggeredAtHeader, HeaderMissing, HeaderRepeated)
	if err != nil {
		return nil, err
	}
	ts, perr := time.Parse(time.RFC3339Nano, at)
	if perr != nil || !rfc3339Shape([]byte(at)) {
		return nil, headerError(HeaderInvalid, shopifyTriggeredAtHeader, "not an RFC 3339 date-time with a time zone")
	}
	if err := v.fresh(ts); err != nil {
		return nil, err
	}
	return &Event{ID: id, Type: typ, Timestamp: ts, SecretIndex: idx, Body: body}, nil
}

// parseShopifySignature reads an X-Shopify-Hmac-Sha256 value: the
// standard base64, padded, of 32 bytes. Errors are *Error of kind
// SignatureMalformed.
func parseShopifySignature(header string) ([32]byte, *Error) {
	mac, ok := base64MAC(header)
	if !ok {
		return mac, newError(SignatureMalformed, "signature: not 32 bytes in base64")
	}
	return mac, nil
}
