package caddymodule

import "runtime/debug"

// modulePath is Hookgate's Go module.
const modulePath = "github.com/hookgate/hookgate"

// userAgent is the User-Agent of every delivery.
var userAgent = "Hookgate/" + moduleVersion()

// moduleVersion is Hookgate's version as the binary's build information
// records it (the main module's, or the dependency's in an xcaddy build),
// or "dev" when it records none, as for a local replacement.
func moduleVersion() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	m := &bi.Main
	for _, dep := range bi.Deps {
		if dep.Path == modulePath {
			m = dep
		}
	}
	if m.Path != modulePath || m.Replace != nil || m.Version == "" || m.Version == "(devel)" {
		return "dev"
	}
	return m.Version
}
