package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/bulkfhir/bulkfhir/shared/bulkclient"
	"github.com/bulkfhir/bulkfhir/shared/smartclient"
)

// loginFlags are the export client's SMART Backend Services credentials.
type loginFlags struct {
	clientID, keyFile, keyID, scope string
}

func (l *loginFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.clientID, "client-id", "", "log in with SMART Backend Services as this client")
	fs.StringVar(&l.keyFile, "key", "", "the client's PEM private key, RS384 or ES384 (default: PEM in $BULKFHIR_CLIENT_KEY)")
	fs.StringVar(&l.keyID, "key-id", "", "kid of the key (default: its RFC 7638 thumbprint)")
	fs.StringVar(&l.scope, "scope", "", "scope to request (default system/*.read)")
}

// tokens returns the client's token source, or nil without --client-id.
// The private key comes from --key FILE or, as PEM, $BULKFHIR_CLIENT_KEY,
// so it need not be on the command line. The token endpoint is discovered
// from the server.
func (l loginFlags) tokens(server string) (bulkclient.TokenSource, error) {
	if l.clientID == "" {
		if l.keyFile != "" || l.keyID != "" {
			return nil, usagef("--key and --key-id need --client-id")
		}
		return nil, nil
	}
	if server == "" {
		return nil, usagef("--client-id needs --server, where the token endpoint is found")
	}
	var pem []byte
	switch {
	case l.keyFile != "":
		b, err := os.ReadFile(l.keyFile)
		if err != nil {
			return nil, fmt.Errorf("export: --key: %w", err)
		}
		pem = b
	case os.Getenv("BULKFHIR_CLIENT_KEY") != "":
		pem = []byte(os.Getenv("BULKFHIR_CLIENT_KEY"))
	default:
		return nil, usagef("--client-id needs --key FILE (or the PEM key in $BULKFHIR_CLIENT_KEY)")
	}
	key, err := smartclient.ParsePrivateKey(pem)
	if err != nil {
		return nil, fmt.Errorf("export: key: %w", err)
	}
	if _, err := smartclient.SigningMethod(key); err != nil {
		return nil, fmt.Errorf("export: key: %w", err)
	}
	return &smartclient.TokenSource{ClientID: l.clientID, FHIRBase: server, Key: key, KeyID: l.keyID, Scope: l.scope}, nil
}
