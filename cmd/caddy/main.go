// Command caddy is Caddy with its standard modules plus Hookgate's.
package main

import (
	_ "time/tzdata"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/hookgate/hookgate/caddymodule"
)

func main() {
	caddycmd.Main()
}
