package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/bulkfhir/bulkfhir/shared/bulkclient"
)

// listFlag collects a repeatable flag; commas split values when split is set.
type listFlag struct {
	values *[]string
	split  bool
}

func (l listFlag) String() string {
	if l.values == nil {
		return ""
	}
	return strings.Join(*l.values, ",")
}

func (l listFlag) Set(v string) error {
	if !l.split {
		*l.values = append(*l.values, v)
		return nil
	}
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l.values = append(*l.values, s)
		}
	}
	return nil
}

func exportCmd(ctx context.Context, args []string) error {
	var o bulkclient.Options
	var login loginFlags
	fs := flag.NewFlagSet("export", flag.ContinueOnError)
	fs.StringVar(&o.Server, "server", "", "FHIR base URL of a Bulk Data server (required)")
	fs.StringVar(&o.Level, "level", "system", "system, patient or group")
	fs.StringVar(&o.Group, "group", "", "Group id (with --level group)")
	fs.Var(listFlag{&o.Types, true}, "type", "resource types, comma-separated or repeated")
	fs.StringVar(&o.Since, "since", "", "only resources updated after this FHIR instant")
	fs.StringVar(&o.Until, "until", "", "only resources updated at or before this FHIR instant (STU3)")
	fs.Var(listFlag{&o.Elements, true}, "elements", "elements to keep, comma-separated or repeated")
	fs.Var(listFlag{&o.TypeFilters, false}, "type-filter", "a _typeFilter query such as Observation?category=laboratory (repeatable)")
	fs.Var(listFlag{&o.Patients, true}, "patient", "restrict to this Patient id (repeatable; implies --post)")
	fs.Var(listFlag{&o.IncludeAssociatedData, true}, "include-associated-data", "includeAssociatedData codes")
	fs.BoolVar(&o.Post, "post", false, "kick off with POST and a Parameters body")
	fs.BoolVar(&o.Lenient, "lenient", false, "send Prefer: handling=lenient")
	fs.StringVar(&o.Token, "token", os.Getenv("BULKFHIR_TOKEN"), "bearer token (default $BULKFHIR_TOKEN)")
	fs.StringVar(&login.clientID, "client-id", "", "log in with SMART Backend Services as this client")
	fs.StringVar(&login.keyFile, "key", "", "the client's PEM private key, RS384 or ES384 (default: PEM in $BULKFHIR_CLIENT_KEY)")
	fs.StringVar(&login.keyID, "key-id", "", "kid of the key (default: its RFC 7638 thumbprint)")
	fs.StringVar(&login.scope, "scope", "", "scope to request (default system/*.read)")
	fs.StringVar(&o.OutDir, "out", "out", "output directory")
	fs.IntVar(&o.Parallel, "parallel", 4, "parallel downloads")
	fs.BoolVar(&o.Resume, "resume", false, "continue the export that last wrote into --out, keeping complete files")
	fs.BoolVar(&o.CancelOnAbort, "cancel-on-abort", false, "on Ctrl-C, cancel the export on the server (DELETE)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("export: unexpected arguments %v", fs.Args())
	}
	var err error
	if o.Tokens, err = login.tokens(o.Server); err != nil {
		return err
	}
	var rep bulkclient.Reporter = &bulkclient.LineReporter{W: os.Stderr}
	if isTerminal(os.Stderr) {
		rep = &bulkclient.BarReporter{W: os.Stderr}
	}
	c, err := bulkclient.New(o, nil, rep)
	if err != nil {
		return err
	}
	sum, err := c.Run(ctx)
	if errors.Is(err, context.Canceled) {
		return errors.New("export: interrupted")
	}
	if err != nil {
		return err
	}
	sum.Print(os.Stdout)
	fmt.Printf("files in %s (manifest.json as received)\n", o.OutDir)
	return nil
}

func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
