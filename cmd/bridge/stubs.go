package main

import (
	"context"
	"flag"
	"fmt"
	"io"
)

func notYet(name string) func(context.Context, *flag.FlagSet, []string, io.Writer, io.Writer) int {
	return func(_ context.Context, fs *flag.FlagSet, args []string, _, stderr io.Writer) int {
		if done, code := parseFlags(fs, args); done {
			return code
		}
		fmt.Fprintf(stderr, "bridge %s: not wired yet\n", name)
		return exitFail
	}
}

var (
	cmdBench = notYet("bench")
)
