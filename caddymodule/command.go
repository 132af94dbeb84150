package caddymodule

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/hookgate/hookgate/webhookcli"
)

// init registers `caddy webhook` and its subcommands (package webhookcli).
func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "webhook",
		Usage: "sign|verify|send|stats|dead|events|pause|resume|enable ...",
		Short: "Signs and sends test webhooks; inspects and operates the running gateway",
		Long: `
Tools for trying a webhook_ingest route by hand, and for operating the
running gateway.

  caddy webhook sign --secret-file s.txt --body event.json
      prints the X-Webhook-Signature value for the file's exact bytes.

  caddy webhook verify --secret-file s.txt --body event.json --signature sha256=...
      checks a signature and the envelope as webhook_ingest does (without
      the freshness check); exits 1 and says which rule failed otherwise.

  caddy webhook send --url http://localhost:8080/hooks --secret-file s.txt \
      --event document.processed --payload payload.json
      builds an envelope around the payload with a fresh eventId and
      timestamp, signs it and POSTs it. --envelope takes a whole envelope
      (its eventId and timestamp are replaced); --body sends a file's bytes
      exactly as they are (to repeat a delivery); --out saves what was sent.

The secret comes from --secret-file, or the HOOKGATE_SECRET environment
variable; --secret is accepted but leaves the secret in the shell history.

Operating the running instance, through its admin API:

  caddy webhook stats
      each route's queued, in-flight, scheduled and dead items, bytes, the
      oldest pending item's age and whether it is paused or disabled.

  caddy webhook dead list [--route R] [--reason X] [--limit N] [--cursor C]
  caddy webhook dead replay (--id ID ... | --route R [--reason X] | --all)
  caddy webhook dead delete ID
      lists dead letters (a page at a time), queues them again, deletes one.

  caddy webhook events EVENT_ID [--route R]
      an event's state and delivery attempts on each route.

  caddy webhook pause ROUTE | resume ROUTE | enable SUBSCRIBER
      holds or releases a route's deliveries; enables a subscriber that a
      410 disabled, replaying what waited for it.

These take --json (print the API's JSON answer as it is), --address (the
admin address), or --config [--adapter] to read the admin address from a
configuration file, as 'caddy stop' does; --storage picks the storage when
the instance has several open. An error answer's message is printed and the
command exits 1.`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.AddCommand(webhookcli.Commands()...)
		},
	})
}
