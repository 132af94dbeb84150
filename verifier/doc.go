// Package verifier authenticates and parses inbound webhook deliveries in the
// Ocriva format: an HMAC-SHA256 signature over the exact body bytes
// (X-Webhook-Signature: sha256=<hex>), a strict JSON envelope
// {eventId, eventType, timestamp, organizationId, projectId, payload}, an
// X-Webhook-Event header that must repeat the signed eventType, and a
// freshness window on the timestamp.
//
// The body is never decoded and re-encoded: the MAC is computed over the raw
// bytes, a single-pass strict validator (CheckJSON) rejects anything that JSON
// parsers may read differently (duplicate keys, invalid UTF-8, lone
// surrogates, trailing data, deep nesting), and the payload is handed back as
// a subslice of the body.
//
// Other senders' schemes are profiles (Config.Profile, LookupProfile):
// Standard Webhooks, GitHub, Stripe, Shopify and Slack, each in its
// profile_<name>.go, with the same strict JSON rules for their bodies, every
// configured secret tried, and the same error kinds and statuses.
//
// Every failure is an *Error with a Kind and an HTTP status; its message is
// safe to show to a client.
//
// It also speaks the format's other side, for webhook_publish and the CLI's
// test sender: Sign makes the signature header, and EncodeEnvelope,
// NewEventID and FormatTimestamp build a body as the sender does. The
// package depends only on the standard library.
package verifier
