package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/bulkfhir/bulkfhir/shared/smartauth"
	"github.com/bulkfhir/bulkfhir/shared/smartclient"
)

// smartClients registers three clients in a clients file: "es" (ES384, by
// JWKS value, system/*.read), "rs" (RS384, by a JWKS URL served on
// loopback, system/*.rs) and "pat" (ES384, system/Patient.read). It
// returns the file and the private key file of each client.
func smartClients(t *testing.T) (string, map[string]string) {
	t.Helper()
	dir := t.TempDir()
	es, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	pat, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rs, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	keyFiles := map[string]string{}
	jwk := map[string]jose.JSONWebKey{}
	for name, k := range map[string]crypto.Signer{"es": es, "rs": rs, "pat": pat} {
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		p := filepath.Join(dir, name+".pem")
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		keyFiles[name] = p
		if jwk[name], err = smartclient.PublicJWK(k, ""); err != nil {
			t.Fatal(err)
		}
	}
	set := func(name string) json.RawMessage {
		b, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{jwk[name]}})
		return b
	}
	keySrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "max-age=300")
		w.Write(set("rs"))
	}))
	t.Cleanup(keySrv.Close)
	file := smartauth.ClientsFile{Clients: []*smartauth.Client{
		{ClientID: "es", JWKS: set("es"), Scope: "system/*.read"},
		{ClientID: "rs", JWKSURL: keySrv.URL + "/jwks.json", Scope: "system/*.rs"},
		{ClientID: "pat", JWKS: set("pat"), Scope: "system/Patient.read"},
	}}
	b, _ := json.Marshal(file)
	path := filepath.Join(dir, "clients.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, keyFiles
}

// login gets an access token as client from the server's token endpoint,
// discovered the way a client would.
func login(t *testing.T, s *server, keyFile, client, scope string) string {
	t.Helper()
	raw, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	key, err := smartclient.ParsePrivateKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	ts := &smartclient.TokenSource{ClientID: client, FHIRBase: s.base, Key: key, Scope: scope}
	tok, err := ts.Token(context.Background())
	if err != nil {
		t.Fatalf("login as %s: %v", client, err)
	}
	return tok
}

func bearer(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }

// TestSMARTExportCommand: bulkfhir export logs in with an ES384 client
// (JWKS value) and an RS384 client (JWKS URL) and exports everything.
func TestSMARTExportCommand(t *testing.T) {
	clients, keys := smartClients(t)
	s := startServer(t, dataDir, "--clients", clients)
	src := sourceResources(t, dataDir)
	for _, client := range []string{"es", "rs"} {
		t.Run(client, func(t *testing.T) {
			out := t.TempDir()
			cmd := exec.Command(binPath, "export", "--server", s.base, "--client-id", client, "--key", keys[client], "--out", out)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("export: %v\n%s\nserver: %s", err, b, s.log)
			}
			sameSet(t, sourceResources(t, out), src)
		})
	}
	// Without credentials the same command is refused.
	cmd := exec.Command(binPath, "export", "--server", s.base, "--out", t.TempDir())
	if b, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(b), "401") {
		t.Errorf("export without a login: %v\n%s", err, b)
	}
}

// TestSMARTResourceServer covers A-11..A-14 and G-03 against the real
// server: every route checks the token, its expiry, its scopes and the
// job's owner.
func TestSMARTResourceServer(t *testing.T) {
	clients, keys := smartClients(t)
	s := startServer(t, dataDir, "--clients", clients)
	es := login(t, s, keys["es"], "es", "system/*.read")
	rs := login(t, s, keys["rs"], "rs", "system/*.rs")
	pat := login(t, s, keys["pat"], "pat", "system/*.read") // narrowed to Patient

	// An expired token signed with the server's own key.
	serverKeys, err := smartauth.LoadOrCreateKey(filepath.Join(s.state, "token-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	expired, err := serverKeys.Sign("es", smartauth.Scopes{{Type: "*"}}, time.Now().Add(-10*time.Minute), smartauth.TokenLifetime)
	if err != nil {
		t.Fatal(err)
	}
	forged := es[:len(es)-4] + "AAAA"

	t.Run("A-14 401 without a token, with a bad one, or with one in the query", func(t *testing.T) {
		for name, r := range map[string]reply{
			"none":    do(t, http.MethodGet, s.base+"/$export", kickHeaders(), ""),
			"expired": do(t, http.MethodGet, s.base+"/$export", kickHeaders("Authorization", "Bearer "+expired), ""),
			"forged":  do(t, http.MethodGet, s.base+"/$export", kickHeaders("Authorization", "Bearer "+forged), ""),
			"query":   do(t, http.MethodGet, s.base+"/$export?access_token="+url.QueryEscape(es), kickHeaders(), ""),
			"query and header": do(t, http.MethodGet, s.base+"/$export?access_token="+url.QueryEscape(es),
				kickHeaders("Authorization", "Bearer "+es), ""),
		} {
			t.Run(name, func(t *testing.T) {
				requireOutcome(t, r, 401, "")
				if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("WWW-Authenticate = %q", r.header.Get("WWW-Authenticate"))
				}
			})
		}
	})

	t.Run("metadata without a token holds only discovery", func(t *testing.T) {
		type cs struct {
			Rest []struct {
				Operation []any `json:"operation"`
				Resource  []struct {
					Type string `json:"type"`
				} `json:"resource"`
				Security struct {
					Extension []struct {
						URL       string `json:"url"`
						Extension []struct{ URL, ValueURI string }
					} `json:"extension"`
				} `json:"security"`
			} `json:"rest"`
		}
		for _, tc := range []struct {
			header    http.Header
			resources bool
		}{{nil, false}, {bearer(es), true}} {
			r := do(t, http.MethodGet, s.base+"/metadata", tc.header, "")
			var c cs
			if err := json.Unmarshal(r.body, &c); r.status != 200 || err != nil || len(c.Rest) != 1 {
				t.Fatalf("metadata %d %v %s", r.status, err, r.body)
			}
			// The export operations are always declared; the source's
			// types only to an authenticated caller.
			listed := false
			for _, res := range c.Rest[0].Resource {
				listed = listed || res.Type == "Observation"
			}
			if listed != tc.resources || len(c.Rest[0].Operation) == 0 {
				t.Errorf("token %v: types listed = %v, operations %v", tc.header != nil, listed, c.Rest[0].Operation)
			}
			ext := c.Rest[0].Security.Extension
			if len(ext) != 1 || !strings.HasSuffix(ext[0].URL, "/oauth-uris") || len(ext[0].Extension) != 1 ||
				ext[0].Extension[0].ValueURI != s.base+"/auth/token" {
				t.Errorf("security extension = %+v, want the oauth-uris token %s", ext, s.base+"/auth/token")
			}
		}
	})

	t.Run("A-12 _type outside the scopes is 403", func(t *testing.T) {
		r := do(t, http.MethodGet, s.base+"/$export?_type=Patient,Observation", kickHeaders("Authorization", "Bearer "+pat), "")
		requireOutcome(t, r, 403, "Observation")
		r = do(t, http.MethodGet, s.base+"/Patient/$export?_typeFilter="+url.QueryEscape("Observation?category=laboratory"), kickHeaders("Authorization", "Bearer "+pat), "")
		requireOutcome(t, r, 403, "Observation")
	})

	t.Run("G-03 without _type only the granted types", func(t *testing.T) {
		loc := kickoff(t, http.MethodGet, s.base+"/$export", kickHeaders("Authorization", "Bearer "+pat), "")
		m := waitManifest(t, loc, bearer(pat))
		if len(m.Output) == 0 {
			t.Fatal("no output")
		}
		for _, o := range m.Output {
			if o.Type != "Patient" {
				t.Errorf("a system/Patient.read token exported %s", o.Type)
			}
		}
	})

	// A full export by es; then status, cancel and downloads by everyone.
	loc := kickoff(t, http.MethodGet, s.base+"/$export?_type=Patient,Observation", kickHeaders("Authorization", "Bearer "+es), "")
	m := waitManifest(t, loc, bearer(es))
	if !m.RequiresAccessToken {
		t.Error("requiresAccessToken = false, but downloads need the owner's token")
	}
	file := m.Output[0].URL

	t.Run("A-13 status and downloads: owner only, valid tokens only", func(t *testing.T) {
		for _, tc := range []struct {
			name   string
			header http.Header
			status int
		}{
			{"no token", nil, 401},
			{"expired", bearer(expired), 401},
			{"forged", bearer(forged), 401},
			{"other client", bearer(rs), 404},
			{"owner", bearer(es), 200},
			{"owner, fresh token", bearer(login(t, s, keys["es"], "es", "system/*.read")), 200},
			{"owner, narrower scope", bearer(login(t, s, keys["es"], "es", "system/Condition.read")), 403},
		} {
			t.Run(tc.name, func(t *testing.T) {
				for _, target := range []string{loc, file} {
					r := do(t, http.MethodGet, target, tc.header, "")
					if r.status != tc.status {
						t.Errorf("GET %s = %d, want %d: %.200s", target, r.status, tc.status, r.body)
					}
				}
			})
		}
		// Cancel by another client: 404, and the job is still there.
		requireOutcome(t, do(t, http.MethodDelete, loc, bearer(rs), ""), 404, "")
		requireOutcome(t, do(t, http.MethodDelete, loc, bearer(expired), ""), 401, "")
		if r := do(t, http.MethodGet, loc, bearer(es), ""); r.status != 200 {
			t.Errorf("after others' cancel attempts the owner gets %d", r.status)
		}
	})

	t.Run("bulkfhir status logs in", func(t *testing.T) {
		out, err := exec.Command(binPath, "status", "--server", s.base, "--client-id", "es", "--key", keys["es"], loc).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "complete") {
			t.Errorf("status with a login: %v\n%s", err, out)
		}
		cmd := exec.Command(binPath, "status", "--server", s.base, loc)
		cmd.Env = append(os.Environ(), "BULKFHIR_TOKEN=")
		if out, err := cmd.CombinedOutput(); err == nil {
			t.Errorf("status without a login succeeded:\n%s", out)
		}
	})

	t.Run("Group read needs Group scope", func(t *testing.T) {
		requireOutcome(t, do(t, http.MethodGet, s.base+"/Group", bearer(pat), ""), 403, "Group")
		if r := do(t, http.MethodGet, s.base+"/Group", bearer(es), ""); r.status != 200 {
			t.Errorf("Group search with system/*.read = %d", r.status)
		}
	})
}

// TestServeRefusesToRunOpen: without clients the server does not start,
// unless --allow-anonymous asks for an open server.
func TestServeRefusesToRunOpen(t *testing.T) {
	cmd := exec.Command(binPath, "serve", "--addr", "127.0.0.1:0", "--data", dataDir, "--state", t.TempDir())
	b, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(b), "--allow-anonymous") {
		t.Errorf("serve without clients: %v\n%s", err, b)
	}
	// The opt-in works (the other end-to-end tests rely on it).
	s := startServer(t, dataDir)
	if r := do(t, http.MethodGet, s.base+"/$export?_type=Patient", kickHeaders(), ""); r.status != http.StatusAccepted {
		t.Errorf("--allow-anonymous kick-off: %d %s", r.status, r.body)
	}
}

// TestClientsCommand: clients registered with `bulkfhir clients add` get
// tokens from a running server; removed ones no longer do.
func TestClientsCommand(t *testing.T) {
	s := startServer(t, dataDir, "--clients", func() string { f, _ := smartClients(t); return f }())
	key := filepath.Join(t.TempDir(), "new.pem")
	run := func(args ...string) string {
		t.Helper()
		b, err := exec.Command(binPath, append([]string{"clients"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("clients %v: %v\n%s", args, err, b)
		}
		return string(b)
	}
	run("add", "--state", s.state, "--client-id", "added", "--new-key", key, "--scope", "system/Patient.rs")
	if out := run("list", "--state", s.state); !strings.Contains(out, "added") || !strings.Contains(out, "system/Patient.rs") {
		t.Errorf("list: %s", out)
	}
	if tok := login(t, s, key, "added", "system/*.rs"); tok == "" {
		t.Fatal("no token")
	}
	run("remove", "--state", s.state, "--client-id", "added")
	raw, _ := os.ReadFile(key)
	k, _ := smartclient.ParsePrivateKey(raw)
	ts := &smartclient.TokenSource{ClientID: "added", FHIRBase: s.base, Key: k}
	if _, err := ts.Token(context.Background()); err == nil || !strings.Contains(err.Error(), "invalid_client") {
		t.Errorf("a removed client got a token: %v", err)
	}
}
