// Command bulkfhir is the bulkfhir CLI:
//
//	bulkfhir serve     the embedded Bulk Data export server (no AWS, no Docker)
//	bulkfhir export    a Bulk Data client: kick off, watch progress, download
//	bulkfhir status    show the status of an export by its status URL
//	bulkfhir cancel    cancel an export by its status URL
//	bulkfhir clients   register SMART Backend Services clients (add, list, remove)
//	bulkfhir verify    check an export folder against its manifest (and a source)
//	bulkfhir generate  deterministic sample FHIR R4 data as NDJSON
//
// Run a subcommand with -h for its flags and examples. Exit codes: 0 ok,
// 1 failure, 2 usage error, 3 export completed with errors reported by the
// server (or counts that disagree with the manifest), 130 interrupted.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/bulkfhir/bulkfhir/shared/bulkclient"
)

// version may be set at build time with -ldflags "-X main.version=…";
// otherwise it comes from the module and VCS build info.
var version = ""

// Exit codes.
const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 2
	exitWithErrors  = 3
	exitInterrupted = 130
)

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		// The first signal asks every command to stop cleanly; a second one
		// means "now": exit without waiting for anything.
		<-sigs
		cancel()
		<-sigs
		fmt.Fprintln(os.Stderr, "bulkfhir: interrupted again, exiting now")
		os.Exit(exitInterrupted)
	}()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	cancel()
	os.Exit(code)
}

// usageError is a command line mistake: exit status 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitCodeError ends a command with a status other than 0 or 1 after the
// command has printed what it had to say.
type exitCodeError struct {
	code int
	msg  string
}

func (e *exitCodeError) Error() string { return e.msg }

// errHelp: -h was given and help was printed; exit 0.
var errHelp = errors.New("help printed")

type command struct {
	name, synopsis, summary, examples string
	run                               func(ctx context.Context, args []string, stdout io.Writer) error
}

var commands map[string]*command

func init() {
	list := []*command{
		{"serve", "[flags]", "run the embedded Bulk Data export server (no AWS, no Docker)",
			"  bulkfhir serve --data data --state state\n  bulkfhir serve --source-url https://fhir.example.org/r4 --state state",
			func(ctx context.Context, args []string, _ io.Writer) error {
				log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel()}))
				return serve(ctx, args, log)
			}},
		{"export", "--server URL [flags]", "export from a Bulk Data server into a folder or an S3 prefix", exportExamples, exportCmd},
		{"status", "[flags] STATUS_URL", "show the status of an export by its status URL (the Content-Location of its kick-off)",
			"  bulkfhir status http://127.0.0.1:8080/fhir/$export-status/0f3c…\n  bulkfhir status --output json \"$STATUS_URL\" | jq .status", statusCmd},
		{"cancel", "[flags] STATUS_URL", "cancel an export by its status URL (DELETE); the server deletes its files",
			"  bulkfhir cancel \"$STATUS_URL\"", cancelCmd},
		{"clients", "add|list|remove (--state DIR | --table NAME) [flags]", "register, list or remove SMART Backend Services clients of the embedded server or the stack",
			"  bulkfhir clients add --state state --client-id demo --new-key demo.pem --scope 'system/*.read'\n  bulkfhir clients add --table $AUTH_TABLE --client-id app --jwks-url https://app.example/jwks.json\n  bulkfhir clients list --state state",
			clientsCmd},
		{"verify", "--out DIR [--data SOURCE]", "check an export folder against its own manifest, and against its NDJSON source with --data",
			"  bulkfhir verify --out out\n  bulkfhir verify --out out --data data", verify},
		{"generate", "[flags]", "write deterministic sample FHIR R4 data as NDJSON",
			"  bulkfhir generate --patients 100 --seed 1 --out data",
			func(_ context.Context, args []string, _ io.Writer) error { return generate(args) }},
		{"version", "", "print the version", "  bulkfhir version",
			func(_ context.Context, args []string, stdout io.Writer) error {
				fs := flag.NewFlagSet("version", flag.ContinueOnError)
				if err := parseFlags(fs, args); err != nil {
					return err
				}
				fmt.Fprintln(stdout, "bulkfhir", versionString())
				return nil
			}},
	}
	commands = map[string]*command{}
	for _, c := range list {
		commands[c.name] = c
	}
	commands["help"] = &command{name: "help", synopsis: "[COMMAND]", summary: "show help for a command",
		examples: "  bulkfhir help export", run: func(_ context.Context, args []string, stdout io.Writer) error {
			if len(args) == 0 {
				usage(stdout)
				return nil
			}
			c, ok := commands[args[0]]
			if !ok || c.name == "help" {
				return usagef("help: unknown command %q", args[0])
			}
			// A command's own -h prints its flags and examples.
			return c.run(context.Background(), []string{"-h"}, stdout)
		}}
}

// run executes one command and returns the exit status. Errors are one
// line on stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	helpOut = stdout
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "-h", "--help", "-help":
		usage(stdout)
		return exitOK
	case "-version", "--version":
		name = "version"
	}
	c, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "bulkfhir: unknown command %q (run 'bulkfhir help' for the list)\n", name)
		return exitUsage
	}
	err := c.run(ctx, args[1:], stdout)
	return exitCode(err, name, stderr)
}

func exitCode(err error, name string, stderr io.Writer) int {
	var ue *usageError
	var ce *exitCodeError
	var ie *bulkclient.Interrupted
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "bulkfhir %s: %s (run 'bulkfhir %s -h' for help)\n", name, oneLine(ue.msg), name)
		return exitUsage
	case errors.As(err, &ce):
		if ce.msg != "" {
			fmt.Fprintf(stderr, "bulkfhir %s: %s\n", name, oneLine(ce.msg))
		}
		return ce.code
	case errors.As(err, &ie), errors.Is(err, context.Canceled):
		fmt.Fprintf(stderr, "bulkfhir %s: %s\n", name, oneLine(err.Error()))
		return exitInterrupted
	}
	fmt.Fprintf(stderr, "bulkfhir %s: %s\n", name, oneLine(err.Error()))
	return exitFailure
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// helpOut is where -h output goes (stdout of run).
var helpOut io.Writer = os.Stdout

// parseFlags parses a command's flags: -h prints the command's help with
// its examples and ends the command with exit 0; a bad flag is one usage
// error line (exit 2), not the flag package's error plus the whole usage.
func parseFlags(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		printHelp(helpOut, fs)
		return errHelp
	}
	if err != nil {
		return &usageError{msg: err.Error()}
	}
	return nil
}

func printHelp(w io.Writer, fs *flag.FlagSet) {
	c := commands[fs.Name()]
	if c == nil {
		c = &command{name: fs.Name()}
	}
	fmt.Fprintf(w, "usage: bulkfhir %s %s\n\n", c.name, c.synopsis)
	if c.summary != "" {
		fmt.Fprintf(w, "%s\n\n", c.summary)
	}
	var n int
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n > 0 {
		fmt.Fprintln(w, "flags:")
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	if c.examples != "" {
		fmt.Fprintf(w, "\nexamples:\n%s\n", c.examples)
	}
	if c.name == "export" || c.name == "status" || c.name == "cancel" {
		fmt.Fprint(w, exitCodesHelp)
	}
}

const exitCodesHelp = `
exit status: 0 ok, 1 failure, 2 usage error, 3 completed with errors in the
manifest's error files (or counts that disagree with the manifest),
130 interrupted (Ctrl-C; a second Ctrl-C exits at once).
`

func usage(w io.Writer) {
	fmt.Fprint(w, "usage: bulkfhir <command> [flags]\n\ncommands:\n")
	names := []string{"serve", "export", "status", "cancel", "verify", "generate", "version", "help"}
	for _, n := range names {
		fmt.Fprintf(w, "  %-9s  %s\n", n, commands[n].summary)
	}
	fmt.Fprint(w, "\nRun 'bulkfhir help COMMAND' or 'bulkfhir COMMAND -h' for a command's flags and examples.\n")
}

// versionString is the -ldflags version or the module version and VCS
// revision recorded by the Go toolchain.
func versionString() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	var rev, at, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = " (modified)"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	out := v
	if rev != "" {
		out += " " + rev
		if at != "" {
			out += " " + at
		}
		out += dirty
	}
	return out + " " + bi.GoVersion
}

func logLevel() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(os.Getenv("BULKFHIR_LOG_LEVEL"))); err != nil {
		return slog.LevelInfo
	}
	return l
}
