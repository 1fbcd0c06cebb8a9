package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"

	"github.com/bulkfhir/bulkfhir/shared/api"
	"github.com/bulkfhir/bulkfhir/shared/boltauth"
	"github.com/bulkfhir/bulkfhir/shared/smartauth"
)

// authSetup is the embedded server's authorization: who is let in, and the
// SMART token endpoint when bulkfhir issues the tokens.
type authSetup struct {
	auth   api.Authenticator
	server http.Handler
	// requireToken makes downloads need the owner's token too.
	requireToken bool
	// tokenURL is what the CapabilityStatement advertises (api.Config).
	tokenURL string
}

// authorization builds the embedded server's authorization. SMART Backend
// Services is on by default: its clients come from a --clients file and
// from STATE/auth.db (`bulkfhir clients add`). A static tokens file is the
// older alternative. With neither, the server refuses to start unless
// --allow-anonymous asks for an open server (development only).
func (c *serveConfig) authorization(ctx context.Context, log *slog.Logger) (*authSetup, error) {
	reg := boltauth.New(filepath.Join(c.state, "auth.db"))
	registered, err := reg.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	if c.allowAnonymous && (c.tokens != "" || c.clients != "" || len(registered) > 0) {
		return nil, errors.New("serve: --allow-anonymous and clients or tokens exclude each other")
	}
	if c.tokens != "" {
		if c.clients != "" || len(registered) > 0 {
			return nil, errors.New("serve: --tokens and SMART clients (--clients, bulkfhir clients add) exclude each other")
		}
		t, err := api.LoadTokens(c.tokens)
		if err != nil {
			return nil, err
		}
		return &authSetup{auth: t, requireToken: true}, nil
	}
	stores := smartauth.Clients{}
	if c.clients != "" {
		file, err := smartauth.LoadClientsFile(c.clients)
		if err != nil {
			return nil, fmt.Errorf("serve: %w", err)
		}
		stores = append(stores, file)
	}
	if c.clients == "" && len(registered) == 0 {
		if !c.allowAnonymous {
			return nil, errors.New("serve: no clients are registered, so nobody could log in: pass --clients FILE or run 'bulkfhir clients add --state DIR …' first; --allow-anonymous serves without authorization (development only)")
		}
		log.Warn("authorization is off (--allow-anonymous): every caller is one anonymous client")
		return &authSetup{auth: api.Anonymous{}}, nil
	}
	stores = append(stores, reg)
	keys, err := smartauth.LoadOrCreateKey(filepath.Join(c.state, "token-key.pem"))
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	srv := &smartauth.Server{
		Clients: stores, Replay: reg, Keys: keys, JWKS: &smartauth.JWKSFetcher{},
		BaseURL: c.baseURL, BasePath: "/fhir", Log: log,
	}
	log.Info("SMART Backend Services authorization is on", "registered", len(registered), "clientsFile", c.clients != "")
	return &authSetup{auth: api.Tokens{Keys: keys}, server: srv, requireToken: true, tokenURL: smartauth.TokenPath}, nil
}
