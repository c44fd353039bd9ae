package main

import (
	"flag"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/ccaas/presence-bridge/internal/config"
)

// groupTitles names the groups of environment variables.
var groupTitles = map[string]string{
	"org":    "Dynamics 365 organisation",
	"poll":   "Polling",
	"detect": "Change detection",
	"nats":   "NATS and JetStream",
	"ha":     "High availability",
	"ops":    "Operations",
}

// inspectVars are the variables tail, replay and state read: how to reach
// NATS, and the contract's names.
var inspectVars = []string{
	"BRIDGE_NATS_URL", "BRIDGE_EMBEDDED_NATS_LISTEN", "BRIDGE_NATS_CREDS", "BRIDGE_NATS_NKEY", "BRIDGE_NATS_USER",
	"BRIDGE_NATS_PASSWORD", "BRIDGE_NATS_TOKEN", "BRIDGE_NATS_CA", "BRIDGE_NATS_CERT", "BRIDGE_NATS_KEY",
	"BRIDGE_SUBJECT_PREFIX", "BRIDGE_STREAM", "BRIDGE_STATE_BUCKET",
}

// demoVars are the variables the demo reads; it sets the others itself
// (its own organisation, embedded JetStream, a one-second poll, no lease).
var demoVars = []string{
	"BRIDGE_DATA_DIR", "BRIDGE_EMBEDDED_NATS_LISTEN", "BRIDGE_HTTP_ADDR", "BRIDGE_SUBJECT_PREFIX", "BRIDGE_STREAM",
	"BRIDGE_STATE_BUCKET", "BRIDGE_STALE_AFTER", "BRIDGE_SNAPSHOT_INTERVAL",
}

// commandDescriptions replaces a variable's description where a command
// reads it differently from `bridge run`.
var commandDescriptions = map[string]map[string]string{
	"tail":   consumerDescriptions,
	"replay": consumerDescriptions,
	"state":  consumerDescriptions,
	"demo": {
		"BRIDGE_HTTP_ADDR": "address of /metrics, /healthz and /readyz (empty: off); the default :8080 listens on 127.0.0.1 only",
	},
}

var consumerDescriptions = map[string]string{
	"BRIDGE_NATS_URL":             "NATS servers, comma-separated; empty: the embedded server of a bridge or demo on this machine, at BRIDGE_EMBEDDED_NATS_LISTEN",
	"BRIDGE_EMBEDDED_NATS_LISTEN": "where a local bridge's embedded server listens, used when BRIDGE_NATS_URL is empty",
	"BRIDGE_STATE_BUCKET":         "key-value bucket of every agent's current state (state reads it; tail and replay look --agent names up in it)",
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "bridge %s: Dynamics 365 Contact Center agent presence as CloudEvents on NATS JetStream\n\n", version)
	fmt.Fprintln(w, "Usage: bridge [command] [flags]")
	fmt.Fprintln(w, "\nCommands:")
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, c := range commands() {
		fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.summary)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nRun 'bridge <command> -h' for its flags and the environment variables that apply.")
	fmt.Fprintln(w, "\nEnvironment variables (all commands read them; each command's help lists those it uses):")
	printEnv(w, []string{"org", "poll", "detect", "nats", "ha", "ops"})
}

func commandUsage(w io.Writer, c command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: bridge %s [flags]\n\n%s\n", c.name, c.summary)
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		fmt.Fprintln(w, "\nFlags:")
		fs.PrintDefaults()
	}
	if len(c.env) > 0 {
		fmt.Fprintln(w, "\nEnvironment variables:")
		printEnvFor(w, c.name, c.env)
	}
	if c.name == "run" || c.name == "check" {
		fmt.Fprintln(w, "\nWithout BRIDGE_TOKEN or BRIDGE_TOKEN_FILE, tokens come from Entra ID through the Azure SDK's default")
		fmt.Fprintln(w, "credential chain: AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH,")
		fmt.Fprintln(w, "AZURE_FEDERATED_TOKEN_FILE (workload identity), or a managed identity.")
	}
}

// printEnvFor lists the variables of env (group keys and single names) as
// command reads them.
func printEnvFor(w io.Writer, command string, env []string) {
	var groups, names []string
	for _, e := range env {
		if _, ok := groupTitles[e]; ok {
			groups = append(groups, e)
		} else {
			names = append(names, e)
		}
	}
	printEnv(w, groups)
	if len(names) == 0 {
		return
	}
	vars := map[string]config.Var{}
	for _, v := range config.Vars() {
		vars[v.Name] = v
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, n := range names {
		v := vars[n]
		desc := v.Description
		if d, ok := commandDescriptions[command][n]; ok {
			desc = d
		}
		def := ""
		if v.Default != "" {
			def = " (default " + v.Default + ")"
		}
		fmt.Fprintf(tw, "  %s\t%s%s\n", n, desc, def)
	}
	tw.Flush()
}

func printEnv(w io.Writer, groups []string) {
	vars := config.Vars()
	for _, g := range groups {
		fmt.Fprintf(w, "  %s:\n", groupTitles[g])
		tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
		for _, v := range vars {
			if v.Group != g {
				continue
			}
			def := ""
			if v.Default != "" {
				def = " (default " + v.Default + ")"
			}
			fmt.Fprintf(tw, "    %s\t%s%s\n", v.Name, v.Description, def)
		}
		tw.Flush()
	}
}
