package boltauth

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/smartauth"
)

func TestClients(t *testing.T) {
	ctx := context.Background()
	s := New(filepath.Join(t.TempDir(), "auth.db"))
	if _, err := s.Client(ctx, "a"); !errors.Is(err, smartauth.ErrUnknownClient) {
		t.Fatalf("empty store: %v, want ErrUnknownClient", err)
	}
	c := &smartauth.Client{ClientID: "a", JWKSURL: "https://keys.example/a", Scope: "system/*.read"}
	if err := s.Put(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := s.Put(ctx, &smartauth.Client{ClientID: "bad", Scope: "system/*.read"}); err == nil {
		t.Error("a client without keys was registered")
	}
	got, err := s.Client(ctx, "a")
	if err != nil || got.JWKSURL != c.JWKSURL || got.Scope != c.Scope {
		t.Fatalf("Client = %+v, %v", got, err)
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("List = %v, %v", list, err)
	}
	if err := s.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "a"); !errors.Is(err, smartauth.ErrUnknownClient) {
		t.Errorf("second Delete: %v, want ErrUnknownClient", err)
	}
}

func TestClaim(t *testing.T) {
	ctx := context.Background()
	s := New(filepath.Join(t.TempDir(), "auth.db"))
	until := time.Now().Add(time.Minute)
	var wins atomic.Int32
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := s.Claim(ctx, "c\x00jti-1", until)
			switch {
			case err == nil:
				wins.Add(1)
			case !errors.Is(err, smartauth.ErrReplay):
				t.Errorf("Claim: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d concurrent claims of one jti succeeded, want 1", wins.Load())
	}
	// An expired entry no longer blocks its key.
	if err := s.Claim(ctx, "c\x00old", time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := s.Claim(ctx, "c\x00old", until); err != nil {
		t.Errorf("claim after expiry: %v", err)
	}
}
