package fhirtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestTokenEndpointRejectsAnArrayAud(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ep := &TokenEndpoint{PublicKey: key.Public(), ClientID: "c1", RejectArrayAud: true}
	hs := httptest.NewServer(ep)
	defer hs.Close()
	ep.Audience = hs.URL + "/token"
	assertion := func(arrayAud bool, aud string) string {
		claims := jwt.MapClaims{"iss": "c1", "sub": "c1", "jti": "j1", "exp": time.Now().Add(time.Minute).Unix(), "aud": aud}
		if arrayAud {
			claims["aud"] = []string{aud}
		}
		s, err := jwt.NewWithClaims(jwt.SigningMethodES384, claims).SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	cases := []struct {
		name       string
		assertion  string
		reject     bool
		wantStatus int
	}{
		{"string aud", assertion(false, ep.Audience), true, http.StatusOK},
		{"array aud refused", assertion(true, ep.Audience), true, http.StatusBadRequest},
		{"array aud where allowed", assertion(true, ep.Audience), false, http.StatusOK},
		{"another aud", assertion(false, "https://elsewhere/token"), true, http.StatusUnauthorized},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ep.RejectArrayAud = tc.reject
			form := url.Values{
				"grant_type":            {"client_credentials"},
				"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
				"client_assertion":      {tc.assertion},
				"scope":                 {"system/*.read"},
			}
			resp, err := http.Post(hs.URL+"/token", "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.wantStatus)
			}
		})
	}
}
