package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
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
}

// authorization builds the embedded server's authorization. SMART Backend
// Services is on when clients are known: a --clients file, or clients
// registered in STATE/auth.db with `bulkfhir clients add`. A static tokens
// file is the older alternative. With neither, the server runs anonymous,
// which it allows only on a loopback address or with --allow-anonymous.
func (c *serveConfig) authorization(ctx context.Context, log *slog.Logger) (*authSetup, error) {
	reg := boltauth.New(filepath.Join(c.state, "auth.db"))
	registered, err := reg.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
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
		if !c.allowAnonymous && !loopback(c.addr) {
			return nil, fmt.Errorf("serve: %s is not a loopback address and no clients are registered: pass --clients FILE (or run bulkfhir clients add), or --allow-anonymous for an open server", c.addr)
		}
		log.Warn("authorization is off: every caller is one anonymous client (pass --clients FILE to require SMART Backend Services tokens)")
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
	return &authSetup{auth: api.Tokens{Keys: keys}, server: srv, requireToken: true}, nil
}

// loopback reports whether a listen address is on the loopback interface.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
