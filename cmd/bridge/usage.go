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
		printEnv(w, c.env)
	}
	if c.name == "run" || c.name == "check" {
		fmt.Fprintln(w, "\nWithout BRIDGE_TOKEN or BRIDGE_TOKEN_FILE, tokens come from Entra ID through the Azure SDK's default")
		fmt.Fprintln(w, "credential chain: AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH,")
		fmt.Fprintln(w, "AZURE_FEDERATED_TOKEN_FILE (workload identity), or a managed identity.")
	}
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
