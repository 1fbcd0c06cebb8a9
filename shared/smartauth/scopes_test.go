package smartauth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
)

func TestParseScopes(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want "" means ErrInvalidScope
	}{
		{"system/*.read", "system/*.read"},
		{"system/*.rs", "system/*.rs"},
		{"system/Observation.rs system/Patient.read", "system/Observation.rs system/Patient.read"},
		{"  system/Patient.read   system/Patient.read ", "system/Patient.read"},
		{"", ""},
		{"   ", ""},
		{"system/Foo.read", ""},
		{"system/patient.read", ""},
		{"system/*.write", ""},
		{"system/*.*", ""},
		{"system/*.cruds", ""},
		{"system/*.r", ""},
		{"system/Observation.rs?category=laboratory", ""},
		{"user/*.read", ""},
		{"patient/*.read", ""},
		{"openid", ""},
		{"system/.read", ""},
	} {
		got, err := ParseScopes(tc.in)
		if tc.want == "" {
			if !errors.Is(err, ErrInvalidScope) {
				t.Errorf("ParseScopes(%q) = %v, %v; want ErrInvalidScope", tc.in, got, err)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("ParseScopes(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestGrant(t *testing.T) {
	for _, tc := range []struct {
		requested, allowed, want string // want "" means refused
	}{
		{"system/*.read", "system/*.read", "system/*.read"},
		{"system/*.rs", "system/*.read", "system/*.rs"},
		{"system/Patient.read", "system/*.rs", "system/Patient.read"},
		{"system/*.read", "system/Patient.read system/Observation.rs", "system/Patient.read system/Observation.read"},
		{"system/*.rs", "system/Patient.read", "system/Patient.rs"},
		{"system/Patient.read system/Observation.read", "system/Patient.read", "system/Patient.read"},
		{"system/Observation.read", "system/Patient.read", ""},
	} {
		req, _ := ParseScopes(tc.requested)
		allowed, _ := ParseScopes(tc.allowed)
		got, err := Grant(req, allowed)
		if tc.want == "" {
			if !errors.Is(err, ErrInvalidScope) {
				t.Errorf("Grant(%q, %q) = %q, want ErrInvalidScope", tc.requested, tc.allowed, got)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("Grant(%q, %q) = %q, %v; want %q", tc.requested, tc.allowed, got, err, tc.want)
		}
	}
}

func TestScopesAllows(t *testing.T) {
	sc, _ := ParseScopes("system/Patient.read system/Observation.rs")
	if !sc.Allows("Patient") || !sc.Allows("Observation") || sc.Allows("Condition") || sc.All() {
		t.Errorf("%s: Allows/All wrong", sc)
	}
	all, _ := ParseScopes("system/*.rs")
	if !all.All() || !all.Allows("Condition") {
		t.Errorf("%s: wildcard does not allow everything", all)
	}
	if got := ReadScopes("openid system/Patient.read launch system/*.write"); got.String() != "system/Patient.read" {
		t.Errorf("ReadScopes kept %q", got)
	}
}

func TestClientValidate(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pubJWK, _ := json.Marshal(jose.JSONWebKey{Key: &k.PublicKey, KeyID: "k1"})
	privJWK, _ := json.Marshal(jose.JSONWebKey{Key: k, KeyID: "k1"})
	pub := `{"keys":[` + string(pubJWK) + `]}`
	priv := `{"keys":[` + string(privJWK) + `]}`
	for _, tc := range []struct {
		name string
		c    Client
		ok   bool
	}{
		{"jwks value", Client{ClientID: "a", JWKS: json.RawMessage(pub), Scope: "system/*.read"}, true},
		{"https jwks url", Client{ClientID: "a", JWKSURL: "https://keys.example/jwks.json", Scope: "system/*.read"}, true},
		{"loopback http jwks url", Client{ClientID: "a", JWKSURL: "http://127.0.0.1:9/jwks", Scope: "system/*.read"}, true},
		{"remote http jwks url", Client{ClientID: "a", JWKSURL: "http://keys.example/jwks.json", Scope: "system/*.read"}, false},
		{"both", Client{ClientID: "a", JWKS: json.RawMessage(pub), JWKSURL: "https://keys.example/j", Scope: "system/*.read"}, false},
		{"neither", Client{ClientID: "a", Scope: "system/*.read"}, false},
		{"private key", Client{ClientID: "a", JWKS: json.RawMessage(priv), Scope: "system/*.read"}, false},
		{"no kid", Client{ClientID: "a", JWKS: json.RawMessage(strings.Replace(pub, `"kid":"k1",`, "", 1)), Scope: "system/*.read"}, false},
		{"bad scope", Client{ClientID: "a", JWKS: json.RawMessage(pub), Scope: "system/*.write"}, false},
		{"no id", Client{JWKS: json.RawMessage(pub), Scope: "system/*.read"}, false},
	} {
		if err := tc.c.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: Validate() = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

func TestLoadClientsFile(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.json", `{"clients":[{"clientId":"a","jwksUrl":"https://k.example/j","scope":"system/*.read"},{"clientId":"b","jwksUrl":"https://k.example/b","scope":"system/Patient.rs"}]}`)
	cs, err := LoadClientsFile(good)
	if err != nil || len(cs) != 2 || cs["b"].Scope != "system/Patient.rs" {
		t.Fatalf("LoadClientsFile = %v, %v", cs, err)
	}
	for name, body := range map[string]string{
		"dup.json":     `{"clients":[{"clientId":"a","jwksUrl":"https://k.example/j","scope":"system/*.read"},{"clientId":"a","jwksUrl":"https://k.example/j","scope":"system/*.read"}]}`,
		"unknown.json": `{"clients":[{"clientId":"a","jwksUrl":"https://k.example/j","scope":"system/*.read","secret":"x"}]}`,
		"bad.json":     `{"clients":[{"clientId":"a","scope":"system/*.read"}]}`,
		"notjson.json": `clients: []`,
	} {
		if _, err := LoadClientsFile(write(name, body)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
