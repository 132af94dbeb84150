package natsspool

import (
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"strings"
)

// Names of the JetStream objects and subjects of one store, all under a
// prefix P: stream P holds payloads on P.q.<rt> and each event's marker and
// records on P.id.<rt>.<h>; stream P_DEAD holds dead letters on
// P.dead.<rt>.<reason>; KV bucket P_ROUTES holds the routes' pause and
// disable state (r.<rt>) and the instances' presence (i.<id>, presence.go).
type names struct{ prefix string }

// token encodes any string as a subject token and consumer name part:
// unpadded lowercase base32hex, which has no '.', '*', '>', '/' or space.
var token = base32.HexEncoding.WithPadding(base32.NoPadding)

func enc(s string) string { return strings.ToLower(token.EncodeToString([]byte(s))) }

func dec(t string) (string, bool) {
	b, err := token.DecodeString(strings.ToUpper(t))
	return string(b), err == nil
}

// eventKey is the event's key within its route, as Badger's dedupe key:
// the first 128 bits of SHA-256(route, 0, eventId).
func eventKey(route, eventID string) string {
	h := sha256.New()
	h.Write([]byte(route))
	h.Write([]byte{0})
	h.Write([]byte(eventID))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

func (n names) stream() string     { return n.prefix }
func (n names) deadStream() string { return n.prefix + "_DEAD" }
func (n names) bucket() string     { return n.prefix + "_ROUTES" }

func (n names) queue(route string) string { return n.prefix + ".q." + enc(route) }
func (n names) ids(route, eventID string) string {
	return n.prefix + ".id." + enc(route) + "." + eventKey(route, eventID)
}
func (n names) dead(route, reason string) string {
	return n.prefix + ".dead." + enc(route) + "." + enc(reason)
}
func (n names) consumer(route string) string { return "r_" + enc(route) }
func (n names) routeKey(route string) string { return "r." + enc(route) }

// deadFilter is the subject filter of the dead letters f selects.
func (n names) deadFilter(route, reason string) string {
	r, why := "*", "*"
	if route != "" {
		r = enc(route)
	}
	if reason != "" {
		why = enc(reason)
	}
	return n.prefix + ".dead." + r + "." + why
}

// routeOfConsumer is the route a consumer name belongs to.
func routeOfConsumer(name string) (string, bool) {
	t, ok := strings.CutPrefix(name, "r_")
	if !ok {
		return "", false
	}
	return dec(t)
}

// routeOfDead is the route of a dead letter's subject.
func (n names) routeOfDead(subject string) (string, bool) {
	rest, ok := strings.CutPrefix(subject, n.prefix+".dead.")
	if !ok {
		return "", false
	}
	t, _, ok := strings.Cut(rest, ".")
	if !ok {
		return "", false
	}
	return dec(t)
}
