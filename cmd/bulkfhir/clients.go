package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/go-jose/go-jose/v4"

	"github.com/bulkfhir/bulkfhir/shared/boltauth"
	"github.com/bulkfhir/bulkfhir/shared/dynamoauth"
	"github.com/bulkfhir/bulkfhir/shared/smartauth"
	"github.com/bulkfhir/bulkfhir/shared/smartclient"
)

// clientRegistry is what `bulkfhir clients` manages: the embedded server's
// bolt file or the stack's DynamoDB auth table.
type clientRegistry interface {
	Put(ctx context.Context, c *smartauth.Client) error
	Delete(ctx context.Context, id string) error
	List(ctx context.Context) ([]*smartauth.Client, error)
}

// clientsCmd is `bulkfhir clients add|list|remove`.
func clientsCmd(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usagef("want add, list or remove")
	}
	verb, args := args[0], args[1:]
	fs := flag.NewFlagSet("clients "+verb, flag.ContinueOnError)
	state := fs.String("state", "", "the embedded server's state directory (STATE/auth.db)")
	table := fs.String("table", "", "the stack's DynamoDB auth table (output AuthTableName; AWS credentials from the environment)")
	var c smartauth.Client
	var jwksFile, newKey, keyID string
	if verb == "add" || verb == "remove" {
		fs.StringVar(&c.ClientID, "client-id", "", "the client id (required)")
	}
	if verb == "add" {
		fs.StringVar(&jwksFile, "jwks", "", "file holding the client's public JWK Set")
		fs.StringVar(&c.JWKSURL, "jwks-url", "", "URL of the client's JWK Set (https; http only for loopback)")
		fs.StringVar(&newKey, "new-key", "", "write a new ES384 private key to this file and register its public key")
		fs.StringVar(&keyID, "key-id", "", "kid of the --new-key key (default its RFC 7638 thumbprint)")
		fs.StringVar(&c.Scope, "scope", "system/*.read", "the scopes the client may be granted")
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	reg, err := openRegistry(ctx, *state, *table)
	if err != nil {
		return err
	}
	switch verb {
	case "add":
		n := 0
		for _, set := range []bool{jwksFile != "", c.JWKSURL != "", newKey != ""} {
			if set {
				n++
			}
		}
		if n != 1 {
			return errors.New("clients add: give one of --jwks FILE, --jwks-url URL, --new-key FILE")
		}
		switch {
		case jwksFile != "":
			raw, err := os.ReadFile(jwksFile)
			if err != nil {
				return fmt.Errorf("clients add: %w", err)
			}
			c.JWKS = raw
		case newKey != "":
			if c.JWKS, err = writeNewKey(newKey, keyID); err != nil {
				return fmt.Errorf("clients add: %w", err)
			}
		}
		if err := reg.Put(ctx, &c); err != nil {
			return fmt.Errorf("clients add: %w", err)
		}
		fmt.Fprintf(stdout, "registered client %s (scope %s)\n", c.ClientID, c.Scope)
	case "remove":
		if c.ClientID == "" {
			return errors.New("clients remove: --client-id is required")
		}
		if err := reg.Delete(ctx, c.ClientID); err != nil {
			return fmt.Errorf("clients remove: %w", err)
		}
		fmt.Fprintf(stdout, "removed client %s\n", c.ClientID)
	case "list":
		list, err := reg.List(ctx)
		if err != nil {
			return fmt.Errorf("clients list: %w", err)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "CLIENT ID\tKEYS\tSCOPE")
		for _, c := range list {
			keys := "jwks value"
			if c.JWKSURL != "" {
				keys = c.JWKSURL
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", c.ClientID, keys, c.Scope)
		}
		return tw.Flush()
	default:
		return usagef("unknown command %q (want add, list or remove)", verb)
	}
	return nil
}

func openRegistry(ctx context.Context, state, table string) (clientRegistry, error) {
	switch {
	case (state == "") == (table == ""):
		return nil, errors.New("clients: give --state DIR (embedded server) or --table NAME (DynamoDB)")
	case state != "":
		if err := os.MkdirAll(state, 0o700); err != nil {
			return nil, fmt.Errorf("clients: %w", err)
		}
		return boltauth.New(filepath.Join(state, "auth.db")), nil
	}
	awsCfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("clients: AWS configuration: %w", err)
	}
	return dynamoauth.New(dynamodb.NewFromConfig(awsCfg), table), nil
}

// writeNewKey writes a new P-384 private key (PEM, mode 0600; an existing
// file is not overwritten) and returns the JWK Set of its public key.
func writeNewKey(path, kid string) (json.RawMessage, error) {
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		return nil, err
	}
	jwk, err := smartclient.PublicJWK(k, kid)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk}})
}
