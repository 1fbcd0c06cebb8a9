// Command bulkfhir is the bulkfhir CLI:
//
//	bulkfhir serve     the embedded Bulk Data export server (no AWS, no Docker)
//	bulkfhir export    a Bulk Data client: kick off, watch progress, download
//	bulkfhir clients   register SMART Backend Services clients (add, list, remove)
//	bulkfhir verify    compare an export with its NDJSON source, type by type
//	bulkfhir generate  deterministic sample FHIR R4 data as NDJSON
//	bulkfhir bench     measure the export path (make bench)
//
// Run a subcommand with -h for its flags.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 {
		usage()
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel()}))
	var err error
	switch args[0] {
	case "serve":
		err = serve(ctx, args[1:], log)
	case "generate":
		err = generate(args[1:])
	case "export":
		err = exportCmd(ctx, args[1:])
	case "verify":
		err = verify(ctx, args[1:])
	case "clients":
		err = clientsCmd(ctx, args[1:])
	case "bench":
		err = benchCmd(ctx, args[1:])
	case "version", "-version", "--version":
		fmt.Println("bulkfhir", version)
	case "help", "-h", "--help":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "bulkfhir: unknown command %q\n", args[0])
		usage()
		return 2
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bulkfhir:", err)
		return 1
	}
	return 0
}

func logLevel() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(os.Getenv("BULKFHIR_LOG_LEVEL"))); err != nil {
		return slog.LevelInfo
	}
	return l
}

func usage() {
	fmt.Fprint(os.Stderr, `usage: bulkfhir <command> [flags]

commands:
  serve      run the embedded Bulk Data export server
  export     export from a Bulk Data server into a directory
  clients    add, list or remove SMART Backend Services clients
  verify     compare an export directory with the NDJSON source it came from
  generate   write deterministic sample FHIR R4 data as NDJSON
  bench      measure throughput, memory, latency and cost of the export path
  version    print the version
`)
}
