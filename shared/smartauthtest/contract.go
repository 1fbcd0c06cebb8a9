// Package smartauthtest holds the contract every store of the
// authorization server's state passes: the client registry and the jti
// replay cache (boltauth, dynamoauth).
package smartauthtest

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bulkfhir/bulkfhir/shared/smartauth"
)

// Store is a registry and replay cache, as `bulkfhir clients` and the
// token endpoint use them.
type Store interface {
	smartauth.ClientStore
	smartauth.ReplayCache
	Put(ctx context.Context, c *smartauth.Client) error
	Delete(ctx context.Context, id string) error
	List(ctx context.Context) ([]*smartauth.Client, error)
}

// StoreContract runs the contract against fresh stores from newStore.
func StoreContract(t *testing.T, newStore func(t *testing.T) Store) {
	t.Run("clients", func(t *testing.T) {
		ctx := context.Background()
		s := newStore(t)
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
		c2 := *c
		c2.Scope = "system/Patient.read"
		if err := s.Put(ctx, &c2); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Client(ctx, "a"); got == nil || got.Scope != "system/Patient.read" {
			t.Errorf("Put did not replace the client: %+v", got)
		}
		if err := s.Put(ctx, &smartauth.Client{ClientID: "b", JWKSURL: "https://keys.example/b", Scope: "system/*.rs"}); err != nil {
			t.Fatal(err)
		}
		list, err := s.List(ctx)
		if err != nil || len(list) != 2 || list[0].ClientID != "a" || list[1].ClientID != "b" {
			t.Fatalf("List = %v, %v", list, err)
		}
		if err := s.Delete(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, "a"); !errors.Is(err, smartauth.ErrUnknownClient) {
			t.Errorf("second Delete: %v, want ErrUnknownClient", err)
		}
		if _, err := s.Client(ctx, "a"); !errors.Is(err, smartauth.ErrUnknownClient) {
			t.Errorf("deleted client: %v", err)
		}
	})
	t.Run("replay", func(t *testing.T) {
		ctx := context.Background()
		s := newStore(t)
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
		if err := s.Claim(ctx, "other\x00jti-1", until); err != nil {
			t.Errorf("the same jti of another client: %v", err)
		}
		// An expired entry no longer blocks its key.
		if err := s.Claim(ctx, "c\x00old", time.Now().Add(-2*time.Second)); err != nil {
			t.Fatal(err)
		}
		if err := s.Claim(ctx, "c\x00old", until); err != nil {
			t.Errorf("claim after expiry: %v", err)
		}
		if err := s.Claim(ctx, "c\x00old", until); !errors.Is(err, smartauth.ErrReplay) {
			t.Errorf("second claim of a live jti: %v, want ErrReplay", err)
		}
	})
}
